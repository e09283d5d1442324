// PAGEMAP_SCAN on an open /proc/PID/pagemap.
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "sys_error.h"

namespace precopy {

struct ScanRequest {
  uint64_t start = 0, end = 0, flags = 0;
  uint64_t categoryInverted = 0, categoryMask = 0, categoryAnyofMask = 0, returnMask = 0;
  uint64_t maxPages = 0;  // 0 = no limit
};

struct ScanResult {
  uint64_t count;    // regions written to vec
  uint64_t walkEnd;  // where the walk stopped (== end when complete)
};

Fd openPagemap(pid_t pid);

// One PAGEMAP_SCAN call. `vec` holds room for `vecLen` regions laid out as (start, end,
// categories) u64 triples, which is exactly struct page_region. Safe to call from any thread.
ScanResult pagemapScan(int pagemapFd, const ScanRequest& req, uint64_t* vec, uint64_t vecLen);

}  // namespace precopy
