// Freeze and thaw. If this process dies while a target is frozen, the kernel detaches every
// tracee (exit_ptrace) and the target runs on: we never set PTRACE_O_EXITKILL.
#include "freeze.h"

#include <signal.h>
#include <sys/ptrace.h>

#include "proc_files.h"
#include "sys_error.h"

namespace precopy {

FrozenProcess::FrozenProcess(pid_t pid, bool captureRegisters) {
  checkTargetPid(pid);
  seized_ = std::make_unique<SeizedProcess>(pid);
  if (!captureRegisters) return;
  for (const SeizedThread& t : seized_->threads()) {
    if (t.exited) continue;
    ThreadRegs r{};
    r.tid = t.tid;
    if (::ptrace(PTRACE_GETREGS, t.tid, nullptr, &r.regs) < 0 ||
        ::ptrace(PTRACE_GETFPREGS, t.tid, nullptr, &r.fpregs) < 0) {
      if (errno == ESRCH) continue;  // died while frozen (killed): nothing to capture
      throwForPid(errno, "ptrace(PTRACE_GETREGS)", pid, "read registers of");
    }
    threads_.push_back(r);
  }
}

void FrozenProcess::thaw() {
  seized_->detachAll();
}

void FrozenProcess::thawStopped() {
  if (seized_->attached() && ::kill(seized_->pid(), SIGSTOP) < 0 && errno != ESRCH)
    throwForPid(errno, "kill", seized_->pid(), "stop");
  seized_->detachAll();
}

}  // namespace precopy
