// A page hash built for speed on whole pages: four independent 64-bit lanes, each taking one
// 8-byte word per 32-byte stripe through a multiply-rotate round (the lanes keep four multiplies
// in flight, so it runs at several GB/s per core), then the lanes are merged and avalanched.
// Pure integer arithmetic on little-endian words: identical on every x86_64 machine and run.
// Not cryptographic: it detects lost or misplaced pages, not forgeries.
#include "page_hash.h"

#include <string.h>

namespace precopy {

namespace {

constexpr uint64_t P1 = 0x9E3779B185EBCA87ull;
constexpr uint64_t P2 = 0xC2B2AE3D27D4EB4Full;
constexpr uint64_t P3 = 0x165667B19E3779F9ull;
constexpr uint64_t P4 = 0x85EBCA77C2B2AE63ull;

inline uint64_t rotl(uint64_t x, int r) {
  return (x << r) | (x >> (64 - r));
}

inline uint64_t load64(const uint8_t* p) {
  uint64_t v;
  memcpy(&v, p, sizeof v);  // x86_64 is little-endian: the byte order is fixed
  return v;
}

inline uint64_t round(uint64_t acc, uint64_t w) {
  return rotl(acc + w * P2, 31) * P1;
}

// splitmix64's finalizer: every input bit reaches every output bit.
inline uint64_t fmix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

uint64_t hashPage(const uint8_t* p, size_t len) {
  uint64_t a = P1 + P2, b = P2, c = 0, d = 0 - P1;
  for (size_t i = 0; i + 32 <= len; i += 32) {
    a = round(a, load64(p + i));
    b = round(b, load64(p + i + 8));
    c = round(c, load64(p + i + 16));
    d = round(d, load64(p + i + 24));
  }
  uint64_t h = rotl(a, 1) + rotl(b, 7) + rotl(c, 12) + rotl(d, 18);
  h = (h ^ round(0, a)) * P1 + P4;
  h = (h ^ round(0, b)) * P1 + P4;
  h = (h ^ round(0, c)) * P1 + P4;
  h = (h ^ round(0, d)) * P1 + P4;
  return fmix(h + len * P3);
}

uint64_t digestTerm(uint64_t addr, uint64_t hash) {
  return fmix(hash ^ fmix(addr + P3));
}

}  // namespace precopy
