// Syscall injection by borrowing a stopped thread: point RIP at an existing `syscall`
// instruction (the vDSO has one), load the arguments, run exactly one syscall between
// PTRACE_SYSCALL enter/exit stops, put every register back. No byte of the target is written.
#include "inject.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <unistd.h>

#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include "proc_files.h"

namespace precopy {

namespace {

struct Mapping {
  uint64_t start, end;
  std::string path;
};

std::vector<Mapping> executableMappings(pid_t pid) {
  std::istringstream maps(readProcFile(pid, "maps"));
  std::vector<Mapping> vdso, others;
  std::string line;
  while (std::getline(maps, line)) {
    Mapping m;
    char perms[8] = {0};
    unsigned long lo, hi;
    int pathAt = 0;
    if (sscanf(line.c_str(), "%lx-%lx %7s %*s %*s %*s %n", &lo, &hi, perms, &pathAt) < 3) continue;
    if (perms[2] != 'x') continue;
    m.start = lo;
    m.end = hi;
    m.path = pathAt > 0 ? line.substr(static_cast<size_t>(pathAt)) : "";
    if (m.path == "[vsyscall]") continue;  // emulated: executing it traps
    (m.path == "[vdso]" ? vdso : others).push_back(m);
  }
  vdso.insert(vdso.end(), others.begin(), others.end());
  return vdso;
}

// The restart logic reads the full register set; any difference would change what the thread
// does next, so restore failures are errors, not warnings.
void getRegs(pid_t pid, pid_t tid, user_regs_struct& r) {
  if (::ptrace(PTRACE_GETREGS, tid, nullptr, &r) < 0)
    throwForPid(errno, "ptrace(PTRACE_GETREGS)", pid, "read registers of");
}
void setRegs(pid_t pid, pid_t tid, const user_regs_struct& r) {
  if (::ptrace(PTRACE_SETREGS, tid, nullptr, &r) < 0)
    throwForPid(errno, "ptrace(PTRACE_SETREGS)", pid, "set registers of");
}

#ifndef PTRACE_GET_RSEQ_CONFIGURATION
#define PTRACE_GET_RSEQ_CONFIGURATION 0x420f
#endif

// The thread's registered rseq area. Returning to user mode to run the injected syscall makes
// the kernel rewrite it (cpu_id, mm_cid: the thread was scheduled out) and, were the thread
// stopped inside an rseq critical section, clear its rseq_cs, which would cancel the abort the
// thread is owed when it resumes. So the area is put back as it was, with the registers: the
// process (and an image or snapshot of it) sees no byte changed by an injection.
class RseqArea {
 public:
  RseqArea(pid_t pid, pid_t tid) : pid_(pid) {
    struct {
      uint64_t abiPointer;
      uint32_t abiSize, signature, flags, pad;
    } rc = {};
    if (::ptrace(static_cast<__ptrace_request>(PTRACE_GET_RSEQ_CONFIGURATION), tid, sizeof rc, &rc) < 0 ||
        !rc.abiPointer)
      return;  // no rseq (or a kernel without the query): nothing the kernel writes
    addr_ = rc.abiPointer;
    len_ = std::min<size_t>(rc.abiSize, sizeof saved_);
    if (!transfer(false)) len_ = 0;
  }
  void restore() {
    if (len_ && !transfer(true)) throwForPid(errno, "process_vm_writev", pid_, "restore the rseq area of");
  }

 private:
  bool transfer(bool write) {
    struct iovec l = {saved_, len_}, r = {reinterpret_cast<void*>(addr_), len_};
    ssize_t n = write ? ::process_vm_writev(pid_, &l, 1, &r, 1, 0) : ::process_vm_readv(pid_, &l, 1, &r, 1, 0);
    return n == static_cast<ssize_t>(len_);
  }
  pid_t pid_;
  uint64_t addr_ = 0;
  size_t len_ = 0;
  uint8_t saved_[64];
};

bool isStopSignal(int sig) {
  return sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU;
}

[[noreturn]] void throwExited(pid_t pid) {
  throwSys(ESRCH, "ptrace", "no such process " + std::to_string(pid) + " (it exited while precopy was arming it)");
}

}  // namespace

uint64_t findSyscallGadget(pid_t pid) {
  const std::string memPath = "/proc/" + std::to_string(pid) + "/mem";
  Fd mem(::open(memPath.c_str(), O_RDONLY | O_CLOEXEC));
  if (!mem.valid()) throwForPid(errno, "open", pid, "read memory of");
  std::vector<unsigned char> buf(1 << 20);
  for (const Mapping& m : executableMappings(pid)) {
    for (uint64_t at = m.start; at + 1 < m.end;) {
      size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), m.end - at));
      ssize_t n = ::pread(mem.get(), buf.data(), want, static_cast<off_t>(at));
      if (n < 2) break;  // unreadable mapping: try the next one
      for (ssize_t i = 0; i + 1 < n; i++)
        if (buf[i] == 0x0f && buf[i + 1] == 0x05) return at + static_cast<uint64_t>(i);
      at += static_cast<uint64_t>(n) - 1;  // overlap one byte: the pair may straddle chunks
    }
  }
  throwSys(ENOEXEC, "pread", "no syscall instruction found in the executable memory of process " + std::to_string(pid));
}

bool isSyscallGadget(pid_t pid, uint64_t addr) {
  const std::string memPath = "/proc/" + std::to_string(pid) + "/mem";
  Fd mem(::open(memPath.c_str(), O_RDONLY | O_CLOEXEC));
  unsigned char b[2] = {0, 0};
  if (!mem.valid() || ::pread(mem.get(), b, 2, static_cast<off_t>(addr)) != 2 || b[0] != 0x0f || b[1] != 0x05)
    return false;
  // And executable: a data page that happens to hold 0f 05 would fault.
  for (const Mapping& m : executableMappings(pid))
    if (m.start <= addr && addr + 2 <= m.end) return true;
  return false;
}

namespace {

// Resume the borrowed thread until our syscall has run: its enter stop, then its exit stop.
// Returns rax at the exit stop.
long runOneSyscall(SeizedProcess& sp, SeizedThread& t, long nr) {
  const pid_t pid = sp.pid(), tid = t.tid;
  user_regs_struct r;
  int phase = 0;  // 0: waiting for the syscall-enter stop, 1: for the syscall-exit stop
  int pass = 0;   // signal to hand on at the next resume
  for (;;) {
    if (::ptrace(PTRACE_SYSCALL, tid, nullptr, reinterpret_cast<void*>(static_cast<long>(pass))) < 0) {
      if (errno == ESRCH && sp.waitStop(tid).kind == StopKind::Exited) t.exited = true;
      throwExited(pid);
    }
    pass = 0;
    const Stop s = sp.waitStop(tid);
    switch (s.kind) {
      case StopKind::Exited:
        t.exited = true;
        throwExited(pid);
      case StopKind::Syscall:
        getRegs(pid, tid, r);
        if (phase == 1) return static_cast<long>(r.rax);
        if (static_cast<long>(r.orig_rax) != nr)
          throwSys(EIO, "ptrace(PTRACE_SYSCALL)",
                   "unexpected syscall " + std::to_string(static_cast<long>(r.orig_rax)) + " while injecting into " +
                       std::to_string(pid));
        phase = 1;
        break;
      case StopKind::Event:
        break;  // a group stop (someone sent SIGSTOP): keep going; it stops again after detach
      case StopKind::Signal:
        if (isStopSignal(s.sig)) {
          pass = s.sig;  // becomes a group stop, harmless to our registers
        } else {
          // Only unblockable or synchronous signals get here (all others are blocked): take it
          // now, give it back before detaching.
          siginfo_t si;
          if (::ptrace(PTRACE_GETSIGINFO, tid, nullptr, &si) == 0) t.requeue.push_back(si);
        }
        break;
    }
  }
}

}  // namespace

long injectSyscall(SeizedProcess& sp, SeizedThread& t, uint64_t gadget, long nr, std::initializer_list<uint64_t> args) {
  const pid_t pid = sp.pid(), tid = t.tid;
  if (args.size() > 6) throwSys(EINVAL, "ptrace", "a syscall takes at most six arguments");
  user_regs_struct saved, r;
  getRegs(pid, tid, saved);
  // Block every blockable signal while the registers are borrowed: a handler frame built on top
  // of them would return into our gadget. Kernel sigset is 8 bytes (glibc's sigset_t is larger).
  uint64_t savedMask = 0, allBlocked = ~0ull;
  if (::ptrace(PTRACE_GETSIGMASK, tid, sizeof savedMask, &savedMask) < 0 ||
      ::ptrace(PTRACE_SETSIGMASK, tid, sizeof allBlocked, &allBlocked) < 0)
    throwForPid(errno, "ptrace(PTRACE_SETSIGMASK)", pid, "set the signal mask of");

  r = saved;
  r.rip = gadget;
  r.rax = static_cast<unsigned long long>(nr);
  // orig_rax = -1: "not in a syscall", so the kernel applies no restart fix-up to these regs.
  r.orig_rax = ~0ull;
  unsigned long long* slots[6] = {&r.rdi, &r.rsi, &r.rdx, &r.r10, &r.r8, &r.r9};
  size_t i = 0;
  for (uint64_t a : args) *slots[i++] = a;

  RseqArea rseq(pid, tid);
  long result;
  try {
    setRegs(pid, tid, r);
    result = runOneSyscall(sp, t, nr);
  } catch (...) {
    // Best effort: put the thread back as it was if it is still stopped (it is, unless it died).
    if (!t.exited) {
      ::ptrace(PTRACE_SETREGS, tid, nullptr, &saved);
      ::ptrace(PTRACE_SETSIGMASK, tid, sizeof savedMask, &savedMask);
      try {
        rseq.restore();
      } catch (const SysError&) {
      }
    }
    throw;
  }
  rseq.restore();
  // Exactly the saved registers, orig_rax and rax included: after detach the kernel's own
  // restart logic sees the interrupted syscall as it was (e.g. -ERESTARTSYS with orig_rax = read)
  // and restarts it.
  setRegs(pid, tid, saved);
  if (::ptrace(PTRACE_SETSIGMASK, tid, sizeof savedMask, &savedMask) < 0)
    throwForPid(errno, "ptrace(PTRACE_SETSIGMASK)", pid, "restore the signal mask of");
  return result;
}

}  // namespace precopy
