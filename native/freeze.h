// Freeze a process (every thread in a ptrace stop), capture its threads' registers, thaw it.
#pragma once

#include <sys/types.h>
#include <sys/user.h>

#include <memory>
#include <vector>

#include "ptrace_threads.h"

namespace precopy {

struct ThreadRegs {
  pid_t tid;
  user_regs_struct regs;
  user_fpregs_struct fpregs;
  // The whole XSAVE area (NT_X86_XSTATE): AVX and later registers, which FXSAVE lacks. Empty when
  // not captured.
  std::vector<uint8_t> xstate;
};

class FrozenProcess {
 public:
  // Stops every thread (see SeizedProcess); with captureRegisters, reads each thread's general
  // and FP/SSE registers. Use on the thread that will thaw it (the JS main thread).
  FrozenProcess(pid_t pid, bool captureRegisters);
  pid_t pid() const { return seized_->pid(); }
  bool frozen() const { return seized_->attached(); }
  const std::vector<ThreadRegs>& threads() const { return threads_; }
  // Detach every thread: the process runs on.
  void thaw();
  // Queue SIGSTOP to the process, then detach: every thread group-stops before running user
  // code again, and the process stays stopped (state T) until SIGCONT.
  void thawStopped();

 private:
  std::unique_ptr<SeizedProcess> seized_;
  std::vector<ThreadRegs> threads_;
};

}  // namespace precopy
