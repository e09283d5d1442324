// WHY: grpc-js frames every message into a Buffer of its own and decodes every received one into
// another, so each side allocates and frees a page batch's worth (4 MiB) per batch. glibc serves
// such sizes with a fresh mmap (or trims its heap top after the free), so every batch faulted its
// buffer in again: on this project's VMs a first touch of memory the guest gave back costs a
// hypervisor exit per fault (perf: 14% of the sender's samples were page faults under grpc-js's
// framing copy). With the thresholds below the buffers are reused from the heap instead: 1 GiB of
// 4 MiB allocate-and-copy went from 460 to 115 ms, and a 1 GiB migration's CPU dropped by up to
// 0.3 s per side (docs/design.md, Page path). What is kept is bounded by the batches in flight.
#include "malloc_tuning.h"

#include <malloc.h>

namespace precopy {

namespace {
constexpr int kMmapThreshold = 64 << 20;  // above the largest message (68 MiB limit) only
constexpr int kTrimThreshold = 256 << 20;
constexpr int kTopPad = 16 << 20;
}  // namespace

bool keepFreedMemory() {
  return mallopt(M_MMAP_THRESHOLD, kMmapThreshold) == 1 && mallopt(M_TRIM_THRESHOLD, kTrimThreshold) == 1 &&
         mallopt(M_TOP_PAD, kTopPad) == 1;
}

}  // namespace precopy
