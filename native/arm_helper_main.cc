// precopy-arm-helper PID: the short-lived process that ptrace-injects userfaultfd() into PID and
// hands the fd to the addon over fd 3 (see takeUserfaultfd in arm_helper.cc). Started by the addon
// with every signal blocked, so only SIGKILL of the helper itself can interrupt an injection.
#include <stdlib.h>

#include "arm_helper.h"

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const pid_t pid = static_cast<pid_t>(strtol(argv[1], nullptr, 10));
  if (pid <= 0) return 2;
  precopy::armHelperMain(pid, 3);
  return 0;
}
