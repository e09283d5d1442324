// See page_stager.h. Runs on a libuv pool thread (binding.cc's StagePagesWorker), so that the
// sender's JavaScript thread only does the protocol: a batch costs it a few microseconds however
// many bytes it holds, and two batches can be staged at once on two cores (docs/design.md, Page
// path).
#include "page_stager.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include "lz4.h"
#include "page_hash.h"
#include "page_reader.h"
#include "sys_error.h"

namespace precopy {

namespace {

// lz4 is tried on a batch only if these sample chunks, spread over it, compress below the job's
// lz4SampleRatio: on incompressible pages lz4 would cost a whole pass over the batch for nothing.
constexpr size_t kSampleChunks = 16;
constexpr size_t kSampleChunkBytes = 4096;

bool isZero(const uint8_t* p, size_t len) {
  // The hash said "maybe zero": compare for certain (first word, then the page against itself).
  return p[0] == 0 && memcmp(p, p + 1, len - 1) == 0;
}

// Read pages of a range process_vm_readv refused, one by one (FOLL_FORCE reads PROT_NONE data).
void readThroughProcMem(int fd, uint64_t addr, size_t pages, size_t ps, uint8_t* into, uint8_t* flags,
                        StageOutcome& out) {
  for (size_t i = 0; i < pages; i++) {
    uint8_t* at = into + i * ps;
    size_t got = 0;
    while (got < ps) {
      ssize_t n = fd >= 0 ? ::pread(fd, at + got, ps - got, static_cast<off_t>(addr + i * ps + got)) : -1;
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;  // EIO: unmapped meanwhile
      got += static_cast<size_t>(n);
    }
    if (got == ps) {
      out.procMemPages++;
    } else {
      memset(at, 0, ps);
      flags[i] = kPageUnreadable;
    }
  }
}

bool sampleCompresses(const uint8_t* raw, size_t len, double ratio) {
  if (len < 2 * kSampleChunks * kSampleChunkBytes) return true;  // small: the sample would be most of it
  char scratch[kSampleChunkBytes];
  const size_t step = (len - kSampleChunkBytes) / (kSampleChunks - 1);
  size_t out = 0;
  for (size_t i = 0; i < kSampleChunks; i++) {
    const int n = LZ4_compress_default(reinterpret_cast<const char*>(raw + i * step), scratch,
                                       static_cast<int>(kSampleChunkBytes), static_cast<int>(kSampleChunkBytes));
    out += n > 0 ? static_cast<size_t>(n) : kSampleChunkBytes;
  }
  return static_cast<double>(out) < ratio * kSampleChunks * kSampleChunkBytes;
}

}  // namespace

uint64_t zeroPageHash(size_t pageSize) {
  std::vector<uint8_t> zero(pageSize, 0);
  return hashPage(zero.data(), pageSize);
}

StageOutcome stagePages(const StageJob& job) {
  const size_t ps = job.pageSize;
  if (ps == 0 || ps % 32 != 0) throwSys(EINVAL, "stagePages", "page size must be a positive multiple of 32");
  size_t total = 0;
  for (size_t i = 0; i < job.rangeCount; i++) total += static_cast<size_t>(job.ranges[2 * i + 1]);
  if (total % ps != 0 || total > job.bufLen)
    throwSys(EINVAL, "stagePages", "ranges do not fit the buffer in whole pages");

  StageOutcome out;
  out.pages = total / ps;
  memset(job.flags, kPageData, out.pages);

  // read
  const ReadOutcome r = readPages(job.pid, job.ranges, job.rangeCount, job.buf, job.bufLen);
  if (!r.failed.empty()) {
    std::vector<size_t> start(job.rangeCount + 1, 0);
    for (size_t i = 0; i < job.rangeCount; i++) start[i + 1] = start[i] + static_cast<size_t>(job.ranges[2 * i + 1]);
    for (uint32_t k : r.failed) {
      readThroughProcMem(job.memFd, static_cast<uint64_t>(job.ranges[2 * k]),
                         static_cast<size_t>(job.ranges[2 * k + 1]) / ps, ps, job.buf + start[k],
                         job.flags + start[k] / ps, out);
    }
  }

  // hash, zero pages, gather the data pages at the front
  static const uint64_t zeroHash4k = zeroPageHash(4096);
  const uint64_t zeroHash = ps == 4096 ? zeroHash4k : zeroPageHash(ps);
  size_t compact = 0;
  for (size_t i = 0; i < out.pages; i++) {
    uint8_t* p = job.buf + i * ps;
    if (job.flags[i] == kPageUnreadable) {
      job.hashes[i] = 0;
      out.unreadablePages++;
      continue;
    }
    const uint64_t h = hashPage(p, ps);
    job.hashes[i] = h;
    if (h == zeroHash && isZero(p, ps)) {
      job.flags[i] = kPageZero;
      out.zeroPages++;
      continue;
    }
    if (compact != i * ps) memmove(job.buf + compact, p, ps);
    compact += ps;
  }
  out.dataBytes = compact;

  // compress
  if (job.lz4Out && compact > 0) {
    if (!sampleCompresses(job.buf, compact, job.lz4SampleRatio)) {
      out.lz4Skipped = true;
    } else {
      // Output capped below the input: lz4 returns 0 when the block would not be smaller.
      const size_t cap = std::min(job.lz4Cap, compact - 1);
      const int n = LZ4_compress_default(reinterpret_cast<const char*>(job.buf), reinterpret_cast<char*>(job.lz4Out),
                                         static_cast<int>(compact), static_cast<int>(cap));
      if (n > 0) out.lz4Bytes = static_cast<size_t>(n);
    }
  }
  return out;
}

}  // namespace precopy
