// posix_spawn of a helper executable; see helper_process.h. A fresh executable rather than a
// fork of Node: a fork of a multi-threaded process can inherit locks held by other threads.
#include "helper_process.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>

namespace precopy {

std::string siblingExecutable(const char* name) {
  Dl_info info;
  if (!::dladdr(reinterpret_cast<void*>(&siblingExecutable), &info) || !info.dli_fname)
    throwSys(ENOENT, "dladdr", std::string("cannot locate the precopy addon to find ") + name);
  std::string p = info.dli_fname;
  size_t slash = p.rfind('/');
  return (slash == std::string::npos ? std::string(".") : p.substr(0, slash)) + "/" + name;
}

Helper spawnHelper(const std::string& path, const std::vector<std::string>& args) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
    throwErrno(errno, "socketpair", "cannot start " + path);
  Fd mine(sv[0]), theirs(sv[1]);
  // dup2(3, 3) would keep close-on-exec set: move our child's end off fd 3 first.
  Fd moved;
  if (theirs.get() == 3) {
    moved = Fd(::fcntl(theirs.get(), F_DUPFD_CLOEXEC, 4));
    if (!moved.valid()) throwErrno(errno, "fcntl", "cannot start " + path);
  }
  const int childEnd = moved.valid() ? moved.get() : theirs.get();
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, childEnd, 3);
  posix_spawnattr_init(&attr);
  sigset_t all;
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(path.c_str()));
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  char* envp[] = {nullptr};
  pid_t child;
  const int err = ::posix_spawn(&child, path.c_str(), &fa, &attr, argv.data(), envp);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (err) throwErrno(err, "posix_spawn", "cannot start " + path + " (run the build)");
  return Helper{child, std::move(mine)};
}

size_t recvMessage(int sock, void* buf, size_t cap, const char* who) {
  for (;;) {
    ssize_t n = ::recv(sock, buf, cap, MSG_TRUNC);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      if (errno == ECONNRESET) return 0;
      throwErrno(errno, "recv", std::string("talking to ") + who);
    }
    if (static_cast<size_t>(n) > cap)
      throwSys(EMSGSIZE, "recv", std::string(who) + " sent a message larger than expected");
    return static_cast<size_t>(n);
  }
}

bool sendMessage(int sock, const void* buf, size_t len) {
  for (;;) {
    if (::send(sock, buf, len, MSG_NOSIGNAL) == static_cast<ssize_t>(len)) return true;
    if (errno == EINTR) continue;
    return false;
  }
}

}  // namespace precopy
