// Small readers of /proc/PID files shared by the ptrace and inject code.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace precopy {

// Whole content of a (small, /proc) text file; throws SysError (ESRCH for a vanished process).
std::string readProcFile(pid_t pid, const std::string& path);

// Thread ids in /proc/PID/task (throws ESRCH "no such process PID" when it is gone).
std::vector<pid_t> listThreads(pid_t pid);

// State letter of one thread from /proc/PID/task/TID/stat ('R', 'S', 'D', 't', 'T', 'Z', ...),
// or 0 when the thread no longer exists.
char threadState(pid_t pid, pid_t tid);

// Numeric field of /proc/PID/status ("Tgid", "TracerPid"), -1 when absent.
long statusField(pid_t pid, const char* name);

// Refuse a pid that is not a live process we may aim at (a thread id, ourselves, gone).
void checkTargetPid(pid_t pid);

// Refuse a process whose main thread has exited while others run (nothing to track through /proc).
void checkLeaderAlive(pid_t pid);

}  // namespace precopy
