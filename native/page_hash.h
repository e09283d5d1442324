// Page content hash and the image digest term (see common/image-digest.ts).
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace precopy {

// 64-bit hash of one page (len a multiple of 32). Same value on every x86_64 machine.
uint64_t hashPage(const uint8_t* p, size_t len);

// Digest term of one page: mix64(addr, hash). The image digest is the sum of terms mod 2^64.
uint64_t digestTerm(uint64_t addr, uint64_t hash);

}  // namespace precopy
