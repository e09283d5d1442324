// /proc readers: every error is reported with the target pid, so the user sees
// "no such process 1234" rather than a bare ENOENT on some path.
#include "proc_files.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "sys_error.h"

namespace precopy {

std::string readProcFile(pid_t pid, const std::string& name) {
  const std::string path = "/proc/" + std::to_string(pid) + "/" + name;
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) throwForPid(errno, "open", pid, "read " + name + " of process");
  std::string out;
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      throwForPid(errno, "read", pid, "read " + name + " of process");
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

std::vector<pid_t> listThreads(pid_t pid) {
  const std::string path = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = ::opendir(path.c_str());
  if (!d) throwForPid(errno, "opendir", pid, "list the threads of process");
  std::vector<pid_t> tids;
  while (struct dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    tids.push_back(static_cast<pid_t>(::strtol(e->d_name, nullptr, 10)));
  }
  ::closedir(d);
  // An empty task list means the process is exiting: nothing left to trace.
  if (tids.empty()) throwSys(ESRCH, "opendir", "no such process " + std::to_string(pid));
  return tids;
}

char threadState(pid_t pid, pid_t tid) {
  const std::string path = "/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/stat";
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return 0;
  char buf[512];
  ssize_t n = ::read(fd.get(), buf, sizeof buf - 1);
  if (n <= 0) return 0;
  buf[n] = 0;
  // "tid (comm) S ...": comm may hold spaces and parentheses, so look after the last ')'.
  std::string s(buf);
  size_t p = s.rfind(')');
  if (p == std::string::npos || p + 2 >= s.size()) return 0;
  return s[p + 2];
}

long statusField(pid_t pid, const char* name) {
  std::string status;
  try {
    status = readProcFile(pid, "status");
  } catch (const SysError&) {
    return -1;
  }
  const std::string key = std::string("\n") + name + ":";
  size_t p = status.find(key);
  if (p == std::string::npos) return -1;
  return ::strtol(status.c_str() + p + key.size(), nullptr, 10);
}

void checkTargetPid(pid_t pid) {
  if (pid == ::getpid()) throwSys(EINVAL, "precopy", "cannot track or freeze the precopy process itself");
  long tgid = statusField(pid, "Tgid");
  if (tgid < 0) throwSys(ESRCH, "open", "no such process " + std::to_string(pid));
  if (tgid != pid)
    throwSys(EINVAL, "precopy",
             std::to_string(pid) + " is a thread of process " + std::to_string(tgid) + ": give the process id");
}

void checkLeaderAlive(pid_t pid) {
  // A main thread that called pthread_exit leaves a zombie leader whose /proc/PID/{maps,mem,
  // pagemap} show no memory (and whose fd table is gone) while the other threads run on.
  if (threadState(pid, pid) == 'Z' && listThreads(pid).size() > 1)
    throwSys(EINVAL, "precopy",
             "the main thread of process " + std::to_string(pid) +
                 " has exited (pthread_exit): its memory is not visible through /proc/" + std::to_string(pid) +
                 ", precopy cannot track it");
}

}  // namespace precopy
