// The one error type of the native layer: a failed system call, with its errno and a message a
// user can act on. Kernel-feature files throw it; binding.cc alone turns it into the JS
// NativeError (errno, code, syscall). Also a tiny owning fd, so that every error path closes
// what it opened.
#pragma once

#include <errno.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include <string>
#include <utility>

namespace precopy {

struct SysError {
  int err;              // errno value (positive)
  std::string syscall;  // "ptrace", "process_vm_readv", "ioctl(PAGEMAP_SCAN)", ...
  std::string message;  // complete sentence for the user
};

[[noreturn]] inline void throwSys(int err, const std::string& syscall, const std::string& message) {
  throw SysError{err, syscall, message};
}

// "<what>: <strerror>" for failures that need no special wording.
[[noreturn]] inline void throwErrno(int err, const std::string& syscall, const std::string& what) {
  throwSys(err, syscall, what + ": " + strerror(err));
}

// Failures of calls aimed at another process (ptrace, pidfd, /proc/PID/..., process_vm_readv):
// the two a user meets most (dead pid, no permission) get their own wording.
[[noreturn]] inline void throwForPid(int err, const std::string& syscall, pid_t pid, const std::string& action) {
  const std::string p = std::to_string(pid);
  if (err == ESRCH || err == ENOENT) throwSys(ESRCH, syscall, "no such process " + p);
  if (err == EPERM || err == EACCES)
    throwSys(err, syscall, "permission denied: need root or CAP_SYS_PTRACE to " + action + " " + p);
  throwSys(err, syscall, "cannot " + action + " " + p + ": " + syscall + ": " + strerror(err));
}

// Owning file descriptor: closes on destruction unless released.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = o.release();
    }
    return *this;
  }
  ~Fd() { reset(); }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() { return std::exchange(fd_, -1); }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

}  // namespace precopy
