// Freeze and thaw. If this process dies while a target is frozen, the kernel detaches every
// tracee (exit_ptrace) and the target runs on: we never set PTRACE_O_EXITKILL.
#include "freeze.h"

#include <signal.h>
#include <elf.h>
#include <sys/ptrace.h>
#include <sys/uio.h>

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
    // The XSAVE area for the core export (gdb shows AVX registers from it); its size is the
    // kernel's (CPUID 0xD), a few KiB.
    r.xstate.resize(64 * 1024);
    struct iovec iov = {r.xstate.data(), r.xstate.size()};
    if (::ptrace(PTRACE_GETREGSET, t.tid, reinterpret_cast<void*>(NT_X86_XSTATE), &iov) == 0)
      r.xstate.resize(iov.iov_len);
    else
      r.xstate.clear();  // no XSAVE (an old CPU): the FXSAVE area alone goes into the image
    threads_.push_back(std::move(r));
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
