// Batched reads of another process's memory with process_vm_readv.
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <vector>

namespace precopy {

struct ReadOutcome {
  uint64_t bytesRead = 0;
  std::vector<uint32_t> failed;  // indexes of ranges that could not be read in full (zero-filled)
};

// ranges: `count` (address, length) pairs as doubles (JS numbers); the bytes land back to back
// in `into` (at least the sum of lengths). Thread-safe (no tracer relationship needed).
ReadOutcome readPages(pid_t pid, const double* ranges, size_t count, uint8_t* into, size_t intoLen);

}  // namespace precopy
