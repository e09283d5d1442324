// A freeze for restorable migrations: a helper process (precopy-capture-helper) seizes every
// thread of the target and holds it; the addon talks to it over a socket, synchronously.
//
// Why a helper: capturing the state a restore needs injects syscalls (sigaltstack,
// PR_GET_TID_ADDRESS, rt_sigaction, brk) that borrow the target's registers. If the tracer were
// the sender's Node process and it was SIGKILLed mid-injection, the kernel would detach and the
// target would run on borrowed registers. The helper runs with every signal blocked, reads one
// command at a time and finishes it before reading the next; when its socket reaches EOF (the
// sender died, or dropped the object) it thaws the target and exits. So no moment exists where
// killing the sender leaves a target thread on borrowed registers.
#pragma once

#include <sys/types.h>

#include <stdint.h>

#include <vector>

#include "freeze.h"
#include "sys_error.h"
#include "thread_state.h"

namespace precopy {

constexpr const char* kCaptureHelperName = "precopy-capture-helper";

struct SnapshotInfo {
  pid_t pid;
  std::vector<uint64_t> notHeld;  // [start, end) pairs (cow_snapshot.h)
};

class HelperFrozenProcess {
 public:
  // Starts the helper and, with freezeNow, freeze()s. gadgetHint: a `syscall` instruction of the
  // target found beforehand (findSyscallGadget), checked by the helper; 0 to have it search.
  HelperFrozenProcess(pid_t pid, uint64_t gadgetHint, bool freezeNow);
  // Has the (already started) helper stop every thread of pid, and waits until each is stopped
  // (as FrozenProcess does); threads() then holds each thread's registers as frozen. Throws
  // SysError. Starting the helper ahead keeps its start-up out of the freeze.
  void freeze();
  // Without thaw/thawStopped/kill: closes the socket, so the helper thaws the target.
  ~HelperFrozenProcess();
  HelperFrozenProcess(const HelperFrozenProcess&) = delete;
  HelperFrozenProcess& operator=(const HelperFrozenProcess&) = delete;

  pid_t pid() const { return pid_; }
  bool frozen() const { return !finished_; }
  const std::vector<ThreadRegs>& threads() const { return threads_; }
  // Everything a restore needs from the threads (see thread_state.h). The process stays frozen.
  ProcessCapture capture();
  // A copy-on-write snapshot of the frozen memory (cow_snapshot.h), taken by the helper while the
  // caller goes on: requestSnapshot() returns at once, awaitSnapshot() waits for it (throws
  // SysError, ENOTSUP with the reason, when this process rules it out). It outlives thaw() until
  // dropSnapshot() (or the destructor).
  void requestSnapshot();
  SnapshotInfo awaitSnapshot();
  void dropSnapshot();
  void thaw();
  void thawStopped();  // SIGSTOP queued, then detach: the process stays stopped (drops a snapshot)
  void kill();         // SIGKILL, then detach (drops a snapshot)

 private:
  void finish(uint32_t cmd);
  void reapHelper();
  pid_t pid_;
  pid_t helper_ = -1;
  Fd sock_;
  std::vector<ThreadRegs> threads_;
  bool finished_ = false;
  bool snapshotAsked_ = false;  // requested, answer not read yet
  bool snapshotHeld_ = false;
};

// Body of the helper executable.
void captureHelperMain(pid_t pid, uint64_t gadgetHint, int sock);

}  // namespace precopy
