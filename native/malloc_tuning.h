// glibc malloc settings for a process that moves page data through short-lived large buffers.
#pragma once

namespace precopy {

// Keep freed memory in the process instead of giving it back to the kernel at once (see the .cc).
// Returns false if glibc refused a setting.
bool keepFreedMemory();

}  // namespace precopy
