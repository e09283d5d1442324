// Thread and signal state at the freeze. Out-parameters of the injected queries (sigaltstack,
// PR_GET_TID_ADDRESS, rt_sigaction) go to the thread's own stack below its red zone
// (stack_scratch.h).
#include "thread_state.h"

#include <elf.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#include <string>

#include "inject.h"
#include "stack_scratch.h"
#include "sys_error.h"

#ifndef PTRACE_GET_RSEQ_CONFIGURATION
#define PTRACE_GET_RSEQ_CONFIGURATION 0x420f
#endif
#ifndef PR_GET_TID_ADDRESS
#define PR_GET_TID_ADDRESS 40
#endif

namespace precopy {

namespace {

constexpr long kErestartsys = 512, kErestartnointr = 513, kErestartnohand = 514, kErestartRestartblock = 516;

struct RseqConfiguration {
  uint64_t abiPointer;
  uint32_t abiSize, signature, flags, pad;
};

std::string tidText(pid_t tid) {
  return "thread " + std::to_string(tid);
}

void ptraceRead(pid_t pid, pid_t tid, int req, void* addr, void* data, const char* name) {
  if (::ptrace(static_cast<__ptrace_request>(req), tid, addr, data) < 0)
    throwForPid(errno, std::string("ptrace(") + name + ")", pid, "read the state of " + tidText(tid) + " of");
}

void checkResult(long r, const char* call, pid_t pid, pid_t tid) {
  if (r < 0)
    throwErrno(static_cast<int>(-r), call,
               std::string(call) + " injected into " + tidText(tid) + " of process " + std::to_string(pid) + " failed");
}

void readThread(SeizedProcess& sp, SeizedThread& t, uint64_t gadget, ThreadCapture& c) {
  const pid_t pid = sp.pid(), tid = t.tid;
  c.tid = tid;
  ptraceRead(pid, tid, PTRACE_GETREGS, nullptr, &c.regs, "PTRACE_GETREGS");
  ptraceRead(pid, tid, PTRACE_GETFPREGS, nullptr, &c.fpregs, "PTRACE_GETFPREGS");
  c.restoreRegs = c.regs;
  c.restart = applySyscallRestart(c.restoreRegs);

  // The kernel writes min(iov_len, its XSAVE size) and reports what it wrote.
  c.xstate.assign(64 * 1024, 0);
  struct iovec iov = {c.xstate.data(), c.xstate.size()};
  ptraceRead(pid, tid, PTRACE_GETREGSET, reinterpret_cast<void*>(NT_X86_XSTATE), &iov,
             "PTRACE_GETREGSET NT_X86_XSTATE");
  c.xstate.resize(iov.iov_len);

  ptraceRead(pid, tid, PTRACE_GETSIGMASK, reinterpret_cast<void*>(sizeof c.sigmask), &c.sigmask, "PTRACE_GETSIGMASK");

  RseqConfiguration rc = {};
  ptraceRead(pid, tid, PTRACE_GET_RSEQ_CONFIGURATION, reinterpret_cast<void*>(sizeof rc), &rc,
             "PTRACE_GET_RSEQ_CONFIGURATION");
  c.rseqAddr = rc.abiPointer;
  c.rseqLen = rc.abiSize;
  c.rseqSig = rc.signature;
  c.rseqFlags = rc.flags;

  void* head = nullptr;
  size_t len = 0;
  if (::syscall(SYS_get_robust_list, tid, &head, &len) < 0)
    throwForPid(errno, "get_robust_list", pid, "read the robust futex list of " + tidText(tid) + " of");
  c.robustHead = reinterpret_cast<uint64_t>(head);
  c.robustLen = len;

  StackScratch scratch(pid, tid, c.regs.rsp);
  // sigaltstack(NULL, &old): SS_ONSTACK in the answer is computed from the thread's rsp, which
  // the injection leaves as it was.
  checkResult(injectSyscall(sp, t, gadget, SYS_sigaltstack, {0, scratch.addr()}), "sigaltstack", pid, tid);
  stack_t ss = {};
  scratch.read(&ss, sizeof ss);
  c.altSp = reinterpret_cast<uint64_t>(ss.ss_sp);
  c.altFlags = ss.ss_flags;
  c.altSize = ss.ss_size;

  checkResult(injectSyscall(sp, t, gadget, SYS_prctl, {PR_GET_TID_ADDRESS, scratch.addr()}),
              "prctl(PR_GET_TID_ADDRESS)", pid, tid);
  scratch.read(&c.clearChildTid, sizeof c.clearChildTid);
}

}  // namespace

SyscallRestart applySyscallRestart(user_regs_struct& r) {
  SyscallRestart d = SyscallRestart::None;
  if (static_cast<long long>(r.orig_rax) >= 0) {
    switch (-static_cast<long long>(r.rax)) {
      case kErestartsys:
      case kErestartnointr:
      case kErestartnohand:
        d = SyscallRestart::Restart;
        break;
      case kErestartRestartblock:
        d = SyscallRestart::ReissueRestartBlock;
        break;
      default:
        break;
    }
  }
  if (d != SyscallRestart::None) {
    r.rax = r.orig_rax;  // the syscall number again
    r.rip -= 2;          // back onto the 2-byte `syscall` instruction
  }
  r.orig_rax = ~0ull;
  return d;
}

ProcessCapture captureProcess(SeizedProcess& sp, uint64_t gadget) {
  ProcessCapture pc;
  const pid_t pid = sp.pid();
  // Leader first (the image's order); anyLiveThread() prefers it.
  SeizedThread& leader = sp.anyLiveThread();
  if (leader.tid != pid)
    throwSys(ESRCH, "ptrace",
             "the main thread of process " + std::to_string(pid) + " has exited: such a process cannot be restored");
  pc.threads.emplace_back();
  readThread(sp, leader, gadget, pc.threads.back());
  for (SeizedThread& t : sp.threads()) {
    if (t.exited || t.tid == pid) continue;
    pc.threads.emplace_back();
    readThread(sp, t, gadget, pc.threads.back());
  }

  const ThreadCapture& lc = pc.threads.front();
  StackScratch scratch(pid, leader.tid, lc.regs.rsp);
  for (int sig = 1; sig <= 64; sig++) {
    checkResult(injectSyscall(sp, leader, gadget, SYS_rt_sigaction, {static_cast<uint64_t>(sig), 0, scratch.addr(), 8}),
                "rt_sigaction", pid, leader.tid);
    scratch.read(&pc.actions[sig - 1], sizeof(KernelSigaction));
  }
  // brk(0) answers the current break without moving it (/proc has only start_brk).
  pc.brk = static_cast<uint64_t>(injectSyscall(sp, leader, gadget, SYS_brk, {0}));
  long d = injectSyscall(sp, leader, gadget, SYS_prctl, {PR_GET_DUMPABLE});
  checkResult(d, "prctl(PR_GET_DUMPABLE)", pid, leader.tid);
  pc.dumpable = static_cast<int32_t>(d);
  long sb = injectSyscall(sp, leader, gadget, SYS_prctl, {PR_GET_SECUREBITS});
  checkResult(sb, "prctl(PR_GET_SECUREBITS)", pid, leader.tid);
  pc.securebits = static_cast<int32_t>(sb);
  return pc;
}

}  // namespace precopy
