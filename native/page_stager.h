// One page batch staged for sending, all of its byte work on the calling (libuv pool) thread:
// read the target's pages, hash each, find the zero pages, gather the others at the front of the
// buffer, and compress them into one lz4 block when a sample says it pays.
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

namespace precopy {

// Per-page outcome in StageJob::flags.
enum PageFlag : uint8_t { kPageData = 0, kPageZero = 1, kPageUnreadable = 2 };

struct StageJob {
  pid_t pid;
  int memFd;             // /proc/PID/mem, read-only: the fallback for ranges process_vm_readv refuses
  const double* ranges;  // (address, length) pairs, page aligned
  size_t rangeCount;
  uint8_t* buf;  // the pages land here back to back, then the data pages are gathered
  size_t bufLen;
  size_t pageSize;  // a multiple of 32
  uint8_t* lz4Out;  // null: do not compress
  size_t lz4Cap;
  double lz4SampleRatio;  // lz4 is tried only if a sample of the batch compresses below this
  uint64_t* hashes;       // out: one per page read (zero pages get the zero page's hash)
  uint8_t* flags;         // out: one PageFlag per page read
};

struct StageOutcome {
  size_t pages = 0;      // pages in the ranges
  size_t dataBytes = 0;  // bytes of data pages now at the front of buf
  size_t lz4Bytes = 0;   // > 0: the lz4 block in lz4Out is the payload
  uint32_t zeroPages = 0;
  uint32_t unreadablePages = 0;
  uint32_t procMemPages = 0;  // read through /proc/PID/mem
  bool lz4Skipped = false;    // compression not tried: the sample did not shrink
};

// Throws SysError for a bad job or a dead target (ESRCH); pages that cannot be read are flagged.
StageOutcome stagePages(const StageJob& job);

// The hash of an all-zero page of `pageSize` bytes.
uint64_t zeroPageHash(size_t pageSize);

}  // namespace precopy
