// Taking a userfaultfd created inside the target: the addon side (takeUserfaultfd) and the body
// of the helper executable that does the ptrace work (armHelperMain).
#pragma once

#include <sys/types.h>

#include "sys_error.h"

namespace precopy {

// Stops every thread of pid, runs userfaultfd(O_CLOEXEC|O_NONBLOCK) inside it, takes the new fd
// with pidfd_getfd, closes the target's copy with an injected close(), and resumes every thread.
// The target's fd table ends exactly as it was; the returned fd is ours alone. The ptrace work is
// done by the helper executable kArmHelperName, found next to the addon.
Fd takeUserfaultfd(pid_t pid);

constexpr const char* kArmHelperName = "precopy-arm-helper";

// Body of the helper executable: arm pid, report over the socket `sock` (fd passing + status).
void armHelperMain(pid_t pid, int sock);

}  // namespace precopy
