// Seize + interrupt all threads of a process; detach them all.
#include "ptrace_threads.h"

#include <sched.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <set>

#include "proc_files.h"
#include "sys_error.h"

namespace precopy {

namespace {

constexpr long kStopTimeoutMs = 10000;  // a thread that does not stop in 10 s is stuck in the kernel
constexpr long kZombieCheckMs = 20;

long nowMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sleepMicros(long us) {
  struct timespec ts = {0, us * 1000};
  nanosleep(&ts, nullptr);
}

Stop classify(int status) {
  if (!WIFSTOPPED(status)) return {StopKind::Exited, 0};
  const int sig = WSTOPSIG(status);
  // PTRACE_EVENT_STOP, and the fork/clone events of a snapshot (cow_snapshot.cc): never a signal.
  if ((status >> 16) != 0) return {StopKind::Event, sig};
  if (sig == (SIGTRAP | 0x80)) return {StopKind::Syscall, sig};
  return {StopKind::Signal, sig};
}

// EPERM from PTRACE_SEIZE also means "someone else (a debugger) already traces it": say so.
[[noreturn]] void throwSeizeError(int err, pid_t pid) {
  if (err == EPERM) {
    long tracer = statusField(pid, "TracerPid");
    if (tracer > 0)
      throwSys(EPERM, "ptrace(PTRACE_SEIZE)",
               "process " + std::to_string(pid) + " is already traced by process " + std::to_string(tracer) +
                   " (a debugger?); detach it first");
  }
  throwForPid(err, "ptrace(PTRACE_SEIZE)", pid, "trace");
}

}  // namespace

Stop SeizedProcess::waitStop(pid_t tid) {
  const pid_t pid = pid_;
  const long t0 = nowMs();
  long nextZombieCheck = t0 + kZombieCheckMs;
  for (unsigned spin = 0;; spin++) {
    int status = 0;
    pid_t r;
    if (leaderExitIsParents(tid)) {
      // Peek first; consume the event only if it is a stop.
      siginfo_t si = {};
      if (::waitid(P_PID, static_cast<id_t>(tid), &si, WEXITED | WSTOPPED | __WALL | WNOHANG | WNOWAIT) < 0 &&
          errno == ECHILD)
        return {StopKind::Exited, 0};
      if (si.si_pid == tid && si.si_code != CLD_TRAPPED && si.si_code != CLD_STOPPED) return {StopKind::Exited, 0};
      r = si.si_pid == tid ? ::waitpid(tid, &status, __WALL | WNOHANG) : 0;
    } else {
      r = ::waitpid(tid, &status, __WALL | WNOHANG);
    }
    if (r == tid) return classify(status);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == ECHILD) return {StopKind::Exited, 0};  // not (or no longer) our tracee
      throwErrno(errno, "waitpid", "waiting for thread " + std::to_string(tid));
    }
    const long now = nowMs();
    if (now >= nextZombieCheck) {
      // A zombie group leader is never reported while other threads live: check /proc. (A tracee
      // of ours that is a process of its own, a snapshot's child, is found under its own pid.)
      char st = threadState(pid, tid);
      if (st == 0) st = threadState(tid, tid);
      if (st == 0 || st == 'Z' || st == 'X') {
        if (!leaderExitIsParents(tid) && ::waitpid(tid, &status, __WALL | WNOHANG) == tid) return classify(status);
        return {StopKind::Exited, 0};
      }
      if (now - t0 > kStopTimeoutMs)
        throwSys(ETIMEDOUT, "waitpid",
                 "thread " + std::to_string(tid) + " of process " + std::to_string(pid) + " did not stop within " +
                     std::to_string(kStopTimeoutMs / 1000) + " s (state " + std::string(1, st) +
                     "): it is blocked in the kernel");
      nextZombieCheck = now + kZombieCheckMs;
    }
    // Stops normally arrive within microseconds: yield first, then back off to 1 ms naps.
    if (spin < 64)
      sched_yield();
    else
      sleepMicros(std::min<long>(1000, 10L << std::min<unsigned>((spin - 64) / 16, 7)));
  }
}

SeizedProcess::SeizedProcess(pid_t pid) : pid_(pid), parentIsUs_(statusField(pid, "PPid") == ::getpid()) {
  try {
    seizeAll();
  } catch (...) {
    detachAll();
    throw;
  }
}

SeizedProcess::~SeizedProcess() {
  detachAll();
}

void SeizedProcess::seizeAll() {
  std::set<pid_t> known;
  for (;;) {
    std::vector<pid_t> fresh;
    for (pid_t tid : listThreads(pid_))
      if (known.insert(tid).second) fresh.push_back(tid);
    if (fresh.empty()) break;  // every listed thread is stopped and none is new: complete

    const size_t first = threads_.size();
    for (pid_t tid : fresh) {
      char st = threadState(pid_, tid);
      if (st == 0 || st == 'Z' || st == 'X') continue;  // exited (e.g. a leader that called pthread_exit)
      if (::ptrace(PTRACE_SEIZE, tid, nullptr, reinterpret_cast<void*>(PTRACE_O_TRACESYSGOOD)) < 0) {
        if (errno == ESRCH) continue;  // the thread exited between listing and seizing
        throwSeizeError(errno, pid_);
      }
      threads_.emplace_back();
      threads_.back().tid = tid;
      // ESRCH here means it is exiting; waitStop reports that.
      ::ptrace(PTRACE_INTERRUPT, tid, nullptr, nullptr);
    }
    for (size_t i = first; i < threads_.size(); i++) {
      SeizedThread& t = threads_[i];
      for (;;) {
        Stop s = waitStop(t.tid);
        if (s.kind == StopKind::Exited) {
          t.exited = true;
          break;
        }
        if (s.kind == StopKind::Event) break;
        // Caught at a signal-delivery stop: let the signal go as it would have (handler frame,
        // group stop, or death); the pending interrupt then stops the thread right after.
        int pass = s.kind == StopKind::Signal ? s.sig : 0;
        if (::ptrace(PTRACE_CONT, t.tid, nullptr, reinterpret_cast<void*>(static_cast<long>(pass))) < 0) {
          t.exited = true;
          break;
        }
      }
    }
  }
  if (std::none_of(threads_.begin(), threads_.end(), [](const SeizedThread& t) { return !t.exited; }))
    throwSys(ESRCH, "ptrace(PTRACE_SEIZE)", "no such process " + std::to_string(pid_));
}

SeizedThread& SeizedProcess::anyLiveThread() {
  SeizedThread* best = nullptr;
  for (SeizedThread& t : threads_) {
    if (t.exited) continue;
    if (t.tid == pid_) return t;
    if (!best) best = &t;
  }
  if (!best) throwSys(ESRCH, "ptrace", "no such process " + std::to_string(pid_) + " (all its threads exited)");
  return *best;
}

void SeizedProcess::detachAll() noexcept {
  if (detached_) return;
  detached_ = true;
  // Group leader last: the kernel reports a dead leader only after its other threads are reaped.
  std::stable_partition(threads_.begin(), threads_.end(), [this](const SeizedThread& t) { return t.tid != pid_; });
  for (SeizedThread& t : threads_) {
    if (t.exited) continue;
    for (const siginfo_t& si : t.requeue) {
      // rt_tgsigqueueinfo keeps the siginfo but refuses kernel/kill() codes from another
      // process; those go back as a plain tgkill (same signal, sender shown as us).
      siginfo_t info = si;
      if (info.si_code >= 0 || info.si_code == SI_TKILL ||
          ::syscall(SYS_rt_tgsigqueueinfo, pid_, t.tid, info.si_signo, &info) < 0)
        ::syscall(SYS_tgkill, pid_, t.tid, si.si_signo);
    }
    if (::ptrace(PTRACE_DETACH, t.tid, nullptr, nullptr) == 0) continue;
    // Not in a ptrace stop: either dying (reap it as tracer, so that the real parent gets its
    // exit; unless we are that parent), or running after a failed resume (stop, then detach).
    if (leaderExitIsParents(t.tid) && threadState(pid_, t.tid) != 't') continue;
    for (int attempt = 0; attempt < 100; attempt++) {
      int status;
      pid_t r = ::waitpid(t.tid, &status, __WALL | WNOHANG);
      if (r < 0 && errno == ECHILD) break;
      if (r == t.tid) {
        if (!WIFSTOPPED(status)) break;
        if (::ptrace(PTRACE_DETACH, t.tid, nullptr, nullptr) == 0) break;
      }
      char st = threadState(pid_, t.tid);
      if (st == 0) break;
      if (st != 'Z' && st != 'X') ::ptrace(PTRACE_INTERRUPT, t.tid, nullptr, nullptr);
      sleepMicros(1000);
    }
  }
}

}  // namespace precopy
