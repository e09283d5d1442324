// RestoreStub: see restore_stub.h. Facts this relies on (restore-notes.md, probes/restore/):
// clone3 set_tid gives the chosen id or EEXIST; a thread created by an injected clone3 under
// PTRACE_O_TRACECLONE is auto-attached and first stops in PTRACE_EVENT_STOP; SETREGS sets
// fs_base/gs_base; SETREGSET NT_X86_XSTATE needs the full size and keeps XSTATE_BV as given.
#include "restore_stub.h"

#include <elf.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>

#include "inject.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

namespace precopy {

namespace {

// struct clone_args (include/uapi/linux/sched.h, CLONE_ARGS_SIZE_VER2 = 88).
struct CloneArgs {
  uint64_t flags, pidfd, childTid, parentTid, exitSignal, stack, stackSize, tls, setTid, setTidSize, cgroup;
};
static_assert(sizeof(CloneArgs) == 88, "clone_args layout");

std::string num(long v) {
  return std::to_string(v);
}

// The clone3 child: a copy of this (multi-threaded) process with only the calling thread, so only
// raw system calls until execve. Its stdio goes to /dev/null (fds are restored by a later step),
// nothing else is inherited, and PR_SET_PDEATHSIG covers the moment before we seize it (EXITKILL
// takes over then; the restore clears the death signal again).
[[noreturn]] void execStub(const char* path, char* const* argv) {
  ::syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  const long nul = ::syscall(SYS_openat, AT_FDCWD, "/dev/null", O_RDWR, 0);
  if (nul >= 0) {
    for (int fd = 0; fd < 3; fd++)
      if (nul != fd) ::syscall(SYS_dup2, nul, fd);
    if (nul > 2) ::syscall(SYS_close, nul);
  }
  ::syscall(SYS_close_range, 3, ~0U, 0);
  const uint64_t none = 0;
  ::syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, nullptr, sizeof none);
  char* envp[] = {nullptr};
  ::syscall(SYS_execve, path, argv, envp);
  ::syscall(SYS_exit_group, 127);
  __builtin_unreachable();
}

}  // namespace

RestoreStub::RestoreStub(const std::string& stubPath, pid_t wantPid) {
  // Everything the child touches is prepared before the clone.
  char* argv[] = {const_cast<char*>(stubPath.c_str()), nullptr};
  pid_t setTid[1] = {wantPid};
  CloneArgs ca = {};
  ca.flags = CLONE_VFORK;  // we resume once the stub has exec'd (or died)
  ca.exitSignal = SIGCHLD;
  if (wantPid > 0) {
    ca.setTid = reinterpret_cast<uint64_t>(setTid);
    ca.setTidSize = 1;
  }
  const long r = ::syscall(SYS_clone3, &ca, sizeof ca);
  if (r == 0) execStub(stubPath.c_str(), argv);
  if (r < 0) {
    const int err = errno;
    if (err == EEXIST)
      throwSys(EEXIST, "clone3", "pid " + num(wantPid) + " is taken: another process or thread has it on this host");
    if (err == EINVAL && wantPid > 0)
      throwSys(EINVAL, "clone3",
               "pid " + num(wantPid) + " cannot be chosen here (above pid_max, or a nested pid namespace)");
    if (err == EPERM) throwSys(EPERM, "clone3", "choosing a pid needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN");
    throwErrno(err, "clone3", "cannot start the restore stub");
  }
  pid_ = static_cast<pid_t>(r);
  tids_.push_back(pid_);
  int st;
  if (::waitpid(pid_, &st, WNOHANG) == pid_) {
    killed_ = true;
    throwSys(ENOEXEC, "execve", "cannot run " + stubPath + " (run the build)");
  }
  try {
    const long opts = PTRACE_O_EXITKILL | PTRACE_O_TRACECLONE | PTRACE_O_TRACESYSGOOD;
    if (::ptrace(PTRACE_SEIZE, pid_, nullptr, reinterpret_cast<void*>(opts)) < 0)
      throwErrno(errno, "ptrace(PTRACE_SEIZE)", "cannot trace the restore stub " + num(pid_));
    if (::ptrace(PTRACE_INTERRUPT, pid_, nullptr, nullptr) < 0)
      throwErrno(errno, "ptrace(PTRACE_INTERRUPT)", "cannot stop the restore stub " + num(pid_));
    waitStopped(pid_, "stop");
    // Every signal blocked while we work: a signal sent to the new pid waits for the restored
    // process (threads created later inherit this mask until they get their own).
    const uint64_t all = ~0ull;
    if (::ptrace(PTRACE_SETSIGMASK, pid_, sizeof all, &all) < 0)
      throwErrno(errno, "ptrace(PTRACE_SETSIGMASK)", "restore stub");
    gadget_ = findSyscallGadget(pid_);
    mem_ = Fd(::open(("/proc/" + num(pid_) + "/mem").c_str(), O_RDWR | O_CLOEXEC));
    if (!mem_.valid()) throwErrno(errno, "open", "cannot open the memory of the restore stub " + num(pid_));
  } catch (...) {
    kill();
    throw;
  }
}

RestoreStub::~RestoreStub() {
  if (!detached_) kill();
}

// Waits for tid's next ptrace stop; signal-delivery stops (none are expected: every signal is
// blocked, no code of the stub runs) are a failure.
pid_t RestoreStub::waitStopped(pid_t tid, const char* what) {
  for (;;) {
    int st;
    pid_t r = ::waitpid(tid, &st, __WALL);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throwErrno(errno, "waitpid", std::string("restore stub thread ") + num(tid) + ": " + what);
    if (!WIFSTOPPED(st)) throwSys(ESRCH, "waitpid", "the restore stub (pid " + num(pid_) + ") died during " + what);
    if ((st >> 16) == PTRACE_EVENT_STOP) return tid;
    if (WSTOPSIG(st) == SIGSTOP && (st >> 16) == 0) {
      // A SIGSTOP sent by someone: drop it, the interrupt stop follows.
      ::ptrace(PTRACE_CONT, tid, nullptr, nullptr);
      continue;
    }
    throwSys(EIO, "waitpid",
             "restore stub thread " + num(tid) + " stopped with signal " + num(WSTOPSIG(st)) + " during " + what);
  }
}

long RestoreStub::syscall(pid_t tid, long nr, const uint64_t* args, size_t nargs) {
  if (!attached()) throwSys(ESRCH, "ptrace", "the restore stub is no longer held");
  if (std::find(tids_.begin(), tids_.end(), tid) == tids_.end())
    throwSys(EINVAL, "ptrace", "not a stub thread: " + num(tid));
  user_regs_struct r;
  if (::ptrace(PTRACE_GETREGS, tid, nullptr, &r) < 0)
    throwErrno(errno, "ptrace(PTRACE_GETREGS)", "restore stub thread " + num(tid));
  r.rip = gadget_;
  r.rax = static_cast<unsigned long long>(nr);
  r.orig_rax = ~0ull;  // not in a syscall: no restart fix-up
  r.rsp = 0;           // no stack: sigaltstack's "on the alternate stack?" test looks at rsp
  unsigned long long* slots[6] = {&r.rdi, &r.rsi, &r.rdx, &r.r10, &r.r8, &r.r9};
  for (size_t i = 0; i < 6; i++) *slots[i] = i < nargs ? args[i] : 0;
  if (::ptrace(PTRACE_SETREGS, tid, nullptr, &r) < 0)
    throwErrno(errno, "ptrace(PTRACE_SETREGS)", "restore stub thread " + num(tid));
  bool entered = false;
  for (;;) {
    if (::ptrace(PTRACE_SYSCALL, tid, nullptr, nullptr) < 0)
      throwErrno(errno, "ptrace(PTRACE_SYSCALL)", "restore stub thread " + num(tid));
    int st;
    pid_t w;
    while ((w = ::waitpid(tid, &st, __WALL)) < 0 && errno == EINTR) {
    }
    if (w < 0) throwErrno(errno, "waitpid", "restore stub thread " + num(tid));
    if (!WIFSTOPPED(st)) {
      killed_ = true;
      throwSys(ESRCH, "waitpid", "the restore stub (pid " + num(pid_) + ") died in injected syscall " + num(nr));
    }
    const int event = st >> 16;
    if (event == PTRACE_EVENT_CLONE || event == PTRACE_EVENT_STOP) continue;  // clone3's own event; a group stop
    if (WSTOPSIG(st) == (SIGTRAP | 0x80)) {
      if (!entered) {
        entered = true;
        continue;
      }
      if (::ptrace(PTRACE_GETREGS, tid, nullptr, &r) < 0)
        throwErrno(errno, "ptrace(PTRACE_GETREGS)", "restore stub thread " + num(tid));
      return static_cast<long>(r.rax);
    }
    // A signal-delivery stop: only a fault at the gadget can cause one (all else is blocked).
    throwSys(
        EFAULT, "ptrace(PTRACE_SYSCALL)",
        "restore stub thread " + num(tid) + " got signal " + num(WSTOPSIG(st)) + " running injected syscall " +
            num(nr) + " (is the syscall gadget at 0x" +
            [](uint64_t g) {
              char b[32];
              snprintf(b, sizeof b, "%llx", static_cast<unsigned long long>(g));
              return std::string(b);
            }(gadget_) +
            " still mapped?)");
  }
}

void RestoreStub::writeMemory(uint64_t addr, const uint8_t* data, size_t len) {
  size_t done = 0;
  while (done < len) {
    struct iovec l = {const_cast<uint8_t*>(data + done), len - done},
                 rv = {reinterpret_cast<void*>(addr + done), len - done};
    ssize_t n = ::process_vm_writev(pid_, &l, 1, &rv, 1, 0);
    if (n > 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    // Read-only (or PROT_NONE) pages: /proc/PID/mem writes with FOLL_FORCE (one page at most,
    // so that the fast path resumes after it).
    const size_t chunk = std::min<size_t>(len - done, 4096 - ((addr + done) & 4095));
    ssize_t m = ::pwrite(mem_.get(), data + done, chunk, static_cast<off_t>(addr + done));
    if (m <= 0)
      throwErrno(
          m < 0 ? errno : EIO, "pwrite", "cannot write the memory of the restore stub at 0x" + [&] {
            char b[32];
            snprintf(b, sizeof b, "%llx", static_cast<unsigned long long>(addr + done));
            return std::string(b);
          }());
    done += static_cast<size_t>(m);
  }
}

namespace {

// A page of zeros for the zero pages of a batch (local iovecs may repeat an address).
alignas(4096) const uint8_t kZeroPage[4096] = {};
constexpr size_t kMaxIov = 1024;  // IOV_MAX

}  // namespace

void RestoreStub::writePages(const double* runs, size_t nruns, const uint8_t* zeroMap, size_t zeroBytes,
                             const uint8_t* data, size_t dataLen, size_t pageSize) {
  if (pageSize != sizeof kZeroPage)
    throwSys(EINVAL, "process_vm_writev", "page size " + num(pageSize) + " is not 4096");
  // Gathered: remote iovecs are contiguous stretches of the stub, local ones the batch's pages
  // (consecutive data pages merged; zero pages all point at kZeroPage). `pieces` keeps, per remote
  // iovec, its local pieces: the slow path when a call falls short (a read-only page, say).
  std::vector<struct iovec> local, remote;
  std::vector<std::vector<struct iovec>> pieces;
  size_t bytes = 0;
  auto flush = [&] {
    if (remote.empty()) return;
    const ssize_t n = ::process_vm_writev(pid_, local.data(), local.size(), remote.data(), remote.size(), 0);
    if (n != static_cast<ssize_t>(bytes)) {
      for (size_t i = 0; i < remote.size(); i++) {
        uint64_t at = reinterpret_cast<uint64_t>(remote[i].iov_base);
        for (const struct iovec& l : pieces[i]) {
          writeMemory(at, static_cast<const uint8_t*>(l.iov_base), l.iov_len);
          at += l.iov_len;
        }
      }
    }
    local.clear();
    remote.clear();
    pieces.clear();
    bytes = 0;
  };
  size_t dataAt = 0, page = 0;
  for (size_t r = 0; r + 1 < nruns; r += 2) {
    const uint64_t addr = static_cast<uint64_t>(runs[r]);
    const size_t count = static_cast<size_t>(runs[r + 1]);
    for (size_t i = 0; i < count; i++, page++) {
      const uint64_t at = addr + i * pageSize;
      const bool zero = zeroMap && page / 8 < zeroBytes && ((zeroMap[page / 8] >> (page % 8)) & 1);
      const uint8_t* src = kZeroPage;
      if (!zero) {
        if (dataAt + pageSize > dataLen)
          throwSys(EINVAL, "process_vm_writev", "page batch data is shorter than its runs");
        src = data + dataAt;
        dataAt += pageSize;
      }
      const bool joinsRemote =
          !remote.empty() && reinterpret_cast<uint64_t>(remote.back().iov_base) + remote.back().iov_len == at;
      const bool joinsLocal = joinsRemote && !zero && local.back().iov_base != kZeroPage &&
                              static_cast<const uint8_t*>(local.back().iov_base) + local.back().iov_len == src;
      if (joinsLocal) {
        local.back().iov_len += pageSize;
        pieces.back().back().iov_len += pageSize;
        remote.back().iov_len += pageSize;
      } else {
        if (local.size() == kMaxIov || (!joinsRemote && remote.size() == kMaxIov)) flush();
        if (remote.empty() || reinterpret_cast<uint64_t>(remote.back().iov_base) + remote.back().iov_len != at) {
          remote.push_back({reinterpret_cast<void*>(at), 0});
          pieces.emplace_back();
        }
        remote.back().iov_len += pageSize;
        local.push_back({const_cast<uint8_t*>(src), pageSize});
        pieces.back().push_back(local.back());
      }
      bytes += pageSize;
    }
  }
  flush();
}

void RestoreStub::readMemory(uint64_t addr, uint8_t* data, size_t len) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = ::pread(mem_.get(), data + done, len - done, static_cast<off_t>(addr + done));
    if (n <= 0) throwErrno(n < 0 ? errno : EIO, "pread", "cannot read the memory of the restore stub");
    done += static_cast<size_t>(n);
  }
}

pid_t RestoreStub::createThread(pid_t wantTid, uint64_t scratch) {
  CloneArgs ca = {};
  ca.flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM;
  ca.setTid = wantTid > 0 ? scratch + 128 : 0;
  ca.setTidSize = wantTid > 0 ? 1 : 0;  // 0: whatever id the kernel gives
  // stack = 0: the thread starts on the caller's rsp; it runs nothing before we set its registers.
  writeMemory(scratch, reinterpret_cast<const uint8_t*>(&ca), sizeof ca);
  writeMemory(scratch + 128, reinterpret_cast<const uint8_t*>(&wantTid), sizeof wantTid);
  const uint64_t args[2] = {scratch, sizeof ca};
  const long r = syscall(pid_, SYS_clone3, args, 2);
  if (r == -EEXIST)
    throwSys(EEXIST, "clone3",
             "thread id " + num(wantTid) + " is taken: another process or thread has it on this host");
  if (r < 0)
    throwErrno(static_cast<int>(-r), "clone3", "cannot create thread " + num(wantTid) + " in the restore stub");
  if (wantTid > 0 && r != wantTid)
    throwSys(EIO, "clone3", "clone3 gave thread id " + num(r) + " instead of " + num(wantTid));
  tids_.push_back(static_cast<pid_t>(r));
  waitStopped(static_cast<pid_t>(r), "thread creation");
  return static_cast<pid_t>(r);
}

void RestoreStub::setThreadState(pid_t tid, const user_regs_struct& regs, const uint8_t* xstate, size_t xlen,
                                 uint64_t sigmask) {
  if (std::find(tids_.begin(), tids_.end(), tid) == tids_.end())
    throwSys(EINVAL, "ptrace", "not a stub thread: " + num(tid));
  if (::ptrace(PTRACE_SETREGS, tid, nullptr, &regs) < 0)
    throwErrno(errno, "ptrace(PTRACE_SETREGS)", "cannot load the registers of thread " + num(tid));
  // The kernel wants exactly its own XSAVE size (a short one is EFAULT): say which sizes differ.
  std::vector<uint8_t> cur(64 * 1024);
  struct iovec iov = {cur.data(), cur.size()};
  if (::ptrace(PTRACE_GETREGSET, tid, reinterpret_cast<void*>(NT_X86_XSTATE), &iov) < 0)
    throwErrno(errno, "ptrace(PTRACE_GETREGSET)", "cannot read the XSAVE area of thread " + num(tid));
  if (iov.iov_len != xlen)
    throwSys(EINVAL, "ptrace(PTRACE_SETREGSET)",
             "the image's XSAVE area has " + num(static_cast<long>(xlen)) + " bytes, this CPU's " +
                 num(static_cast<long>(iov.iov_len)) + ": restore on the same kind of CPU");
  struct iovec in = {const_cast<uint8_t*>(xstate), xlen};
  if (::ptrace(PTRACE_SETREGSET, tid, reinterpret_cast<void*>(NT_X86_XSTATE), &in) < 0)
    throwErrno(errno, "ptrace(PTRACE_SETREGSET)", "cannot load the XSAVE area of thread " + num(tid));
  if (::ptrace(PTRACE_SETSIGMASK, tid, sizeof sigmask, &sigmask) < 0)
    throwErrno(errno, "ptrace(PTRACE_SETSIGMASK)", "cannot set the signal mask of thread " + num(tid));
}

void RestoreStub::detachAll() {
  if (!attached()) throwSys(ESRCH, "ptrace", "the restore stub is no longer held");
  // Every thread has its full state: detaching one by one lets each run at once, none waits on
  // state that is not there yet.
  bool letGo = false;
  for (pid_t tid : tids_) {
    if (::ptrace(PTRACE_DETACH, tid, nullptr, nullptr) == 0) {
      letGo = true;
      continue;
    }
    const int err = errno;
    if (err == ESRCH && letGo) {
      // A thread let go before this one already ended the process (a program that exits at once,
      // e.g. on EOF of its new stdin): this one is being killed by that exit_group. It ran; we,
      // its tracer, collect its exit so that it does not linger as a zombie.
      int st;
      while (::waitpid(tid, &st, __WALL) < 0 && errno == EINTR) {
      }
      continue;
    }
    kill();
    throwErrno(err, "ptrace(PTRACE_DETACH)", "cannot let restored thread " + num(tid) + " run");
  }
  detached_ = true;
}

void RestoreStub::kill() noexcept {
  if (pid_ <= 0 || detached_) return;
  ::kill(pid_, SIGKILL);
  if (!killed_) {
    // As tracer we collect each thread's exit, then the group's as its parent.
    for (pid_t tid : tids_) {
      if (tid == pid_) continue;
      int st;
      while (::waitpid(tid, &st, __WALL) < 0 && errno == EINTR) {
      }
    }
  }
  int st;
  for (;;) {
    pid_t r = ::waitpid(pid_, &st, __WALL);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 || WIFEXITED(st) || WIFSIGNALED(st)) break;
  }
  killed_ = true;
  detached_ = true;
}

bool reapChild(pid_t pid, bool block, int* status) {
  for (;;) {
    pid_t r = ::waitpid(pid, status, block ? 0 : WNOHANG);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throwForPid(errno, "waitpid", pid, "wait for");
    return r == pid;
  }
}

}  // namespace precopy
