// The process a restore grows into: a tiny stub executable (precopy-restore-stub) started with
// clone3 set_tid = the image's pid, seized, and then reshaped from outside with injected system
// calls (it never runs its own code again): mappings, threads (clone3 set_tid), per-thread
// state, credentials; finally every thread gets its image registers and all are detached.
//
// Seized with PTRACE_O_EXITKILL: if the restoring process dies (or the stub object is dropped)
// before detachAll(), the half-made process is killed, never left running. Use on one thread
// (ptrace ties tracees to the thread that attached them: the JS main thread).
#pragma once

#include <stdint.h>
#include <sys/types.h>
#include <sys/user.h>

#include <string>
#include <vector>

#include "sys_error.h"

namespace precopy {

constexpr const char* kRestoreStubName = "precopy-restore-stub";

class RestoreStub {
 public:
  // wantPid > 0: that pid or a SysError (EEXIST "pid N is taken ..."); 0: any pid.
  RestoreStub(const std::string& stubPath, pid_t wantPid);
  ~RestoreStub();  // kills the stub unless detached
  RestoreStub(const RestoreStub&) = delete;
  RestoreStub& operator=(const RestoreStub&) = delete;

  pid_t pid() const { return pid_; }
  const std::vector<pid_t>& tids() const { return tids_; }
  bool attached() const { return !detached_ && !killed_; }
  // Address of the `syscall` instruction used for injection (in the stub's [vdso]); the caller
  // moves it along when it moves the vDSO.
  uint64_t gadget() const { return gadget_; }
  void setGadget(uint64_t g) { gadget_ = g; }

  // Raw result of syscall nr (a negative errno on failure) run in thread tid.
  long syscall(pid_t tid, long nr, const uint64_t* args, size_t nargs);
  // process_vm_writev; /proc/PID/mem (FOLL_FORCE) where that faults (read-only pages).
  void writeMemory(uint64_t addr, const uint8_t* data, size_t len);
  void readMemory(uint64_t addr, uint8_t* data, size_t len);
  // One page batch as the wire carries it: runs are (address, page count) pairs, zeroMap one bit
  // per page in run order (set: a zero page, absent from data; may be null), data the other pages
  // back to back. Gathered into few process_vm_writev calls; writeMemory where one falls short.
  void writePages(const double* runs, size_t nruns, const uint8_t* zeroMap, size_t zeroBytes, const uint8_t* data,
                  size_t dataLen, size_t pageSize);
  // clone3(CLONE_VM|FS|FILES|SIGHAND|THREAD|SYSVSEM, set_tid = wantTid) in the main thread; the
  // new thread is auto-attached and stopped. scratch: 256 writable bytes in the stub.
  pid_t createThread(pid_t wantTid, uint64_t scratch);
  // Final registers (fs_base/gs_base included), XSAVE area, blocked-signal mask of one thread.
  void setThreadState(pid_t tid, const user_regs_struct& regs, const uint8_t* xstate, size_t xlen, uint64_t sigmask);
  // Detach every thread: the restored process runs. Throws if a detach fails (then kills).
  void detachAll();
  // SIGKILL and reap. Never throws.
  void kill() noexcept;

 private:
  pid_t waitStopped(pid_t tid, const char* what);
  pid_t pid_ = -1;
  uint64_t gadget_ = 0;
  Fd mem_;
  std::vector<pid_t> tids_;
  bool detached_ = false;
  bool killed_ = false;
};

// waitpid for a child we started without Node's knowledge (a restored process): returns false
// while it runs (block = false), else true with the wait status in *status.
bool reapChild(pid_t pid, bool block, int* status);

}  // namespace precopy
