// Capture of the per-thread and per-signal state a restore needs, for a process whose threads are
// all in ptrace stops (a SeizedProcess). Runs in the capture helper (capture_helper.cc), never in
// the sender's Node process: the injected queries borrow the target's registers.
#pragma once

#include <stdint.h>
#include <sys/types.h>
#include <sys/user.h>

#include <vector>

#include "ptrace_threads.h"

namespace precopy {

// See image/process-state.ts (SyscallRestart) for what the kernel would have done.
enum class SyscallRestart : int32_t { None = 0, Restart = 1, ReissueRestartBlock = 2 };

// struct sigaction as rt_sigaction reads and writes it on x86_64 (kernel layout, 8-byte mask).
struct KernelSigaction {
  uint64_t handler, flags, restorer, mask;
};

struct ThreadCapture {
  pid_t tid = 0;
  user_regs_struct regs{};         // as frozen
  user_regs_struct restoreRegs{};  // with the restart decision applied, orig_rax = -1
  user_fpregs_struct fpregs{};
  SyscallRestart restart = SyscallRestart::None;
  std::vector<uint8_t> xstate;  // NT_X86_XSTATE, the size the kernel reports
  uint64_t sigmask = 0;
  uint64_t rseqAddr = 0;  // 0: no rseq registered
  uint32_t rseqLen = 0, rseqSig = 0, rseqFlags = 0;
  uint64_t robustHead = 0, robustLen = 0;
  uint64_t clearChildTid = 0;
  uint64_t altSp = 0, altSize = 0;
  int32_t altFlags = 0;
};

struct ProcessCapture {
  std::vector<ThreadCapture> threads;  // group leader first
  KernelSigaction actions[64] = {};    // index sig - 1
  uint64_t brk = 0;
  int32_t dumpable = 0;
  int32_t securebits = 0;
};

// Applies the kernel's "no handler" restart rule to a copy of a thread's registers.
SyscallRestart applySyscallRestart(user_regs_struct& r);

// Reads everything of every live thread of sp (ptrace reads, plus syscalls injected through the
// `syscall` instruction at gadget). The target's registers, signal masks and the stack bytes used
// as scratch space are all put back exactly.
ProcessCapture captureProcess(SeizedProcess& sp, uint64_t gadget);

}  // namespace precopy
