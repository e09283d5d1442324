// precopy-capture-helper PID GADGET: holds PID frozen for a restorable migration and captures its
// thread state on request; see capture_helper.h. Started with every signal blocked.
#include <stdlib.h>

#include "capture_helper.h"

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  const pid_t pid = static_cast<pid_t>(strtol(argv[1], nullptr, 10));
  if (pid <= 0) return 2;
  precopy::captureHelperMain(pid, strtoull(argv[2], nullptr, 16), 3);
  return 0;
}
