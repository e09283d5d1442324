// Starting one of our helper executables (they live next to the addon, build/Release/) with every
// signal blocked and one end of a socketpair at fd 3.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "sys_error.h"

namespace precopy {

// build/Release/<name>, found from the addon's own location.
std::string siblingExecutable(const char* name);

struct Helper {
  pid_t pid;
  Fd sock;  // our end: SOCK_SEQPACKET, close-on-exec
};

// Spawns `path args...` with all signals blocked (only SIGKILL of the helper itself can stop it)
// and an empty environment; its end of the socket pair is fd 3.
Helper spawnHelper(const std::string& path, const std::vector<std::string>& args);

// Receive one message; returns its length, 0 on EOF. Throws on a truncated message.
size_t recvMessage(int sock, void* buf, size_t cap, const char* who);
// Send one message; false when the peer is gone (EPIPE / ECONNRESET).
bool sendMessage(int sock, const void* buf, size_t len);

}  // namespace precopy
