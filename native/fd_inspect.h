// Looking at a file descriptor of another process without disturbing it: a copy taken with
// pidfd_getfd (the process's own descriptor is untouched), asked what a restore must recreate.
// Used by the restorability check (before the target is touched) and by the capture at the freeze.
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <string>

namespace precopy {

// Copies the bytes waiting in the pipe behind fd `fd` of `pid` into `into` (at most `cap` bytes)
// without consuming them (tee into a pipe of ours). Returns the bytes waiting; when that is more
// than cap, only cap were copied (the caller retries with a bigger buffer).
size_t peekPipe(pid_t pid, int fd, uint8_t* into, size_t cap);

struct SocketFacts {
  int family = 0;  // AF_INET, AF_INET6, AF_UNIX, ...
  int type = 0;    // SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET
  int protocol = 0;
  bool listening = false;  // SO_ACCEPTCONN
  bool connected = false;  // getpeername succeeds
  bool reuseAddr = false;
  bool reusePort = false;
  int backlog = -1;          // listen backlog, -1 when the kernel does not say
  std::string localAddress;  // raw sockaddr bytes of getsockname
};

// What a listening or bound socket needs to be recreated.
SocketFacts socketFacts(pid_t pid, int fd);

}  // namespace precopy
