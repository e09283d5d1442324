// Stop every thread of a process with PTRACE_SEIZE + PTRACE_INTERRUPT and let them all go again.
// Shared by inject (arming) and freeze.
//
// ptrace ties a tracee to the *thread* that attached it: construct, use and detach a
// SeizedProcess on the same thread (the JS main thread).
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <vector>

namespace precopy {

enum class StopKind {
  Exited,   // the thread is gone (exited, killed, or a zombie group leader)
  Event,    // PTRACE_EVENT_STOP: our interrupt (SIGTRAP) or a group stop (SIGSTOP, SIGTSTP, ...)
  Syscall,  // syscall-enter or -exit stop (PTRACE_O_TRACESYSGOOD: SIGTRAP | 0x80)
  Signal,   // signal-delivery stop: the thread is about to receive `sig`
};

struct Stop {
  StopKind kind;
  int sig;  // WSTOPSIG for stops
};

struct SeizedThread {
  pid_t tid;
  bool exited = false;
  // Signals we had to take from the thread (a signal-delivery stop while its registers were
  // borrowed for an injected syscall); queued back to it before detaching.
  std::vector<siginfo_t> requeue;
};

class SeizedProcess {
 public:
  // Seizes and interrupts every thread, re-listing /proc/PID/task until no new thread appears
  // (a stopped thread cannot create threads, so the set is then complete), and waits until each
  // is in a PTRACE_EVENT_STOP. A thread caught about to receive a signal gets it delivered first
  // (the kernel then stops it at its handler's entry), so no signal is lost or reordered.
  // Throws SysError (ESRCH, EPERM, ...) after letting go of whatever it had seized.
  explicit SeizedProcess(pid_t pid);
  ~SeizedProcess();
  SeizedProcess(const SeizedProcess&) = delete;
  SeizedProcess& operator=(const SeizedProcess&) = delete;

  pid_t pid() const { return pid_; }
  std::vector<SeizedThread>& threads() { return threads_; }
  bool attached() const { return !detached_; }
  // The thread to borrow for injected syscalls: the group leader if alive, else any live thread.
  SeizedThread& anyLiveThread();

  // Wait for the next state change of tracee `tid`. Polls with WNOHANG (a blocking waitpid could
  // hang forever on a zombie group leader, and waitpid(-1) would reap Node's own children); gives
  // up with ETIMEDOUT after a while (a thread stuck in uninterruptible sleep). When we are also
  // the process's real parent, a dead leader is left unreaped: its exit status belongs to the
  // parent's own wait (e.g. Node's child_process), which a tracer's waitpid would steal.
  Stop waitStop(pid_t tid);

  // Detach from every thread (queueing back any taken signal first). Idempotent, never throws:
  // a thread that died meanwhile is reaped instead.
  void detachAll() noexcept;

 private:
  void seizeAll();
  bool leaderExitIsParents(pid_t tid) const { return tid == pid_ && parentIsUs_; }
  pid_t pid_;
  bool parentIsUs_;
  std::vector<SeizedThread> threads_;
  bool detached_ = false;
};

}  // namespace precopy
