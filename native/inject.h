// Run system calls inside a stopped target without writing code into it.
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include <initializer_list>

#include "ptrace_threads.h"
#include "sys_error.h"

namespace precopy {

// Address of a `syscall` instruction (0f 05) in the target's executable memory ([vdso] first).
uint64_t findSyscallGadget(pid_t pid);
// True when `addr` still holds one (a gadget found earlier; an exec would have moved it).
bool isSyscallGadget(pid_t pid, uint64_t addr);

// Runs syscall `nr` with up to six arguments in seized thread `t` (which must be in a ptrace
// stop), returns the raw result (-errno on failure). The thread's registers and signal mask are
// restored exactly, so a syscall it was interrupted in restarts as it would have without us.
long injectSyscall(SeizedProcess& sp, SeizedThread& t, uint64_t gadget, long nr, std::initializer_list<uint64_t> args);

}  // namespace precopy
