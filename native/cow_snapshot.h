// A copy-on-write snapshot of a frozen process's memory: a process that shares every private page
// of the target as it was at the freeze, so that the verify pass can read the frozen memory after
// the target runs again (docs/design.md, Verify off the freeze). Runs in the capture helper, the
// tracer of the frozen target.
//
// How, without a trace in the target: a clone(CLONE_VM) child A of the target forks the snapshot
// B; A is killed at once and, with the target's SIGCHLD ignored for that instant, reaped by the
// kernel itself, so the target gets no signal, no zombie and no child accounting
// (getrusage(RUSAGE_CHILDREN) is untouched). B, orphaned, belongs to init (or a subreaper above
// the target). Both are traced from birth (PTRACE_O_TRACEFORK) and never run a user instruction:
// their registers point at exit_group(0), so a tracer that dies lets them exit, never run.
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include <vector>

#include "ptrace_threads.h"

namespace precopy {

struct CowSnapshot {
  pid_t pid = -1;  // the snapshot process (traced by the caller, stopped)
  // [start, end) pairs of the target's memory the snapshot does not freeze: shared mappings, and
  // private ones fork does not copy (MADV_DONTFORK, MADV_WIPEONFORK). Verified while frozen.
  std::vector<uint64_t> notHeld;
};

// Takes the snapshot of frozen `sp` (every thread in a ptrace stop). `options` are the ptrace
// options the threads were seized with. Throws SysError: ENOTSUP with the reason when this target
// rules a snapshot out (pending SIGCHLD, a subreaper or pid-namespace init, a traced child...),
// other errno values when a call failed. The target is left exactly as it was in every case.
CowSnapshot takeCowSnapshot(SeizedProcess& sp, uint64_t gadget, long options);

// Kills and reaps (as its tracer) a snapshot process. Never throws.
void dropCowSnapshot(pid_t snapshot) noexcept;

}  // namespace precopy
