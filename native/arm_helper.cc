// Arming runs in a helper process: see takeUserfaultfd below for why. The helper injects
// userfaultfd() into the target, passes the new fd to the addon over a socket (SCM_RIGHTS),
// injects close() of the target's copy, detaches, and reports.
#include "arm_helper.h"
#include "helper_process.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include "inject.h"
#include "proc_files.h"
#include "ptrace_threads.h"

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef PTRACE_O_SUSPEND_SECCOMP
#define PTRACE_O_SUSPEND_SECCOMP (1 << 21)
#endif

namespace precopy {

namespace {

// Messages from the arming helper to us over a SOCK_SEQPACKET pair.
struct HelperReport {
  int done;  // 0: carries the fd (SCM_RIGHTS); 1: finished, err == 0 on success
  int err;
  char syscall[64];
  char message[440];
};

void sendReport(int sock, const HelperReport& r, int fd) {
  struct iovec iov = {const_cast<HelperReport*>(&r), sizeof r};
  struct msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(struct cmsghdr) char ctl[CMSG_SPACE(sizeof(int))] = {};
  if (fd >= 0) {
    msg.msg_control = ctl;
    msg.msg_controllen = sizeof ctl;
    struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  // The sender may be gone (killed): ignore the error and finish the job regardless.
  while (::sendmsg(sock, &msg, MSG_NOSIGNAL) < 0 && errno == EINTR) {
  }
}

HelperReport errorReport(const SysError& e) {
  HelperReport r = {};
  r.done = 1;
  r.err = e.err ? e.err : EIO;
  snprintf(r.syscall, sizeof r.syscall, "%s", e.syscall.c_str());
  snprintf(r.message, sizeof r.message, "%s", e.message.c_str());
  return r;
}

// Everything that borrows the target's registers; runs in the helper process.
void injectAndSend(pid_t pid, int sock) {
  const uint64_t gadget = findSyscallGadget(pid);
  Fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd.valid()) throwForPid(errno, "pidfd_open", pid, "open a pidfd for");
  // A seccomp filter may kill the process for a syscall it does not expect: suspend it for the
  // injection (CAP_SYS_ADMIN, as CRIU does), or refuse.
  const bool seccomp = statusField(pid, "Seccomp") > 0;

  SeizedProcess sp(pid);
  SeizedThread& t = sp.anyLiveThread();
  if (seccomp && ::ptrace(PTRACE_SETOPTIONS, t.tid, nullptr,
                          reinterpret_cast<void*>(PTRACE_O_TRACESYSGOOD | PTRACE_O_SUSPEND_SECCOMP)) < 0)
    throwSys(
        errno, "ptrace(PTRACE_SETOPTIONS)",
        "process " + std::to_string(pid) +
            " runs under seccomp and it cannot be suspended (needs CAP_SYS_ADMIN and CONFIG_CHECKPOINT_RESTORE): " +
            strerror(errno));

  long fd = injectSyscall(sp, t, gadget, SYS_userfaultfd, {O_CLOEXEC | O_NONBLOCK});
  // Without CAP_SYS_PTRACE in the target (vm.unprivileged_userfaultfd = 0) only a user-mode-only
  // uffd is allowed; WP-async tracking does not depend on it (write faults are resolved in place).
  if (fd == -EPERM) fd = injectSyscall(sp, t, gadget, SYS_userfaultfd, {O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY});
  if (fd < 0)
    throwErrno(static_cast<int>(-fd), "userfaultfd", "userfaultfd() inside process " + std::to_string(pid) + " failed");

  Fd ours(static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd.get(), static_cast<int>(fd), 0)));
  const int getfdErr = errno;
  if (ours.valid()) sendReport(sock, HelperReport{}, ours.get());
  const long closed = injectSyscall(sp, t, gadget, SYS_close, {static_cast<uint64_t>(fd)});
  if (seccomp) ::ptrace(PTRACE_SETOPTIONS, t.tid, nullptr, reinterpret_cast<void*>(PTRACE_O_TRACESYSGOOD));
  sp.detachAll();
  if (!ours.valid()) throwForPid(getfdErr, "pidfd_getfd", pid, "take a file descriptor from");
  if (closed < 0)
    throwErrno(static_cast<int>(-closed), "close",
               "close() of the userfaultfd inside process " + std::to_string(pid) + " failed");
}

}  // namespace

void armHelperMain(pid_t pid, int sock) {
  // The sender died before we started (its end of the socket hung up): leave the target alone.
  // Past this point we always finish, even if it dies meanwhile.
  struct pollfd hup = {sock, POLLRDHUP, 0};
  if (::poll(&hup, 1, 0) == 1 && (hup.revents & (POLLHUP | POLLRDHUP))) return;
  HelperReport done = {};
  done.done = 1;
  try {
    injectAndSend(pid, sock);
  } catch (const SysError& e) {
    done = errorReport(e);
  } catch (...) {
    done = errorReport(SysError{EIO, "precopy", "arming helper failed"});
  }
  sendReport(sock, done, -1);
}

// The registers of a target thread are borrowed between the injected userfaultfd() and the
// restore after close(); if the tracer died in that window the kernel would detach and the thread
// would run on with borrowed registers. So the tracer is a helper process (a fresh executable:
// forking a multi-threaded Node could inherit held locks) started with every signal blocked:
// killing the sender, even with SIGKILL, cannot interrupt it; it always finishes, restores and
// detaches. The uffd reaches us over a socket (SCM_RIGHTS) before the helper closes the
// target's copy.
Fd takeUserfaultfd(pid_t pid) {
  checkTargetPid(pid);
  const std::string helper = siblingExecutable(kArmHelperName);
  Helper h = spawnHelper(helper, {std::to_string(pid)});
  const pid_t child = h.pid;
  Fd mine = std::move(h.sock);

  Fd uffd;
  HelperReport final = {};
  bool finished = false;
  for (;;) {
    HelperReport r = {};
    struct iovec iov = {&r, sizeof r};
    alignas(struct cmsghdr) char ctl[CMSG_SPACE(sizeof(int))] = {};
    struct msghdr msg = {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl;
    msg.msg_controllen = sizeof ctl;
    ssize_t n = ::recvmsg(mine.get(), &msg, MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EOF: the helper exited
    for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
        int fd;
        memcpy(&fd, CMSG_DATA(c), sizeof fd);
        uffd = Fd(fd);
      }
    }
    if (r.done) {
      final = r;
      finished = true;
    }
  }
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (!finished)
    throwSys(
        EIO, "posix_spawn",
        "the arming helper of process " + std::to_string(pid) + " died (wait status " + std::to_string(status) + ")");
  if (final.err) throwSys(final.err, final.syscall, final.message);
  if (!uffd.valid()) throwSys(EIO, "recvmsg", "the arming helper sent no userfaultfd");
  return uffd;
}

}  // namespace precopy
