// PAGEMAP_SCAN (Linux 6.7+): walk page tables of the target, report regions of pages matching
// the category masks, and with PM_SCAN_WP_MATCHING write-protect again what it reports.
#include "pagemap_scan.h"

#include <fcntl.h>
#include <stdio.h>

#include <string>

#include "kernel_abi.h"

namespace precopy {

Fd openPagemap(pid_t pid) {
  const std::string path = "/proc/" + std::to_string(pid) + "/pagemap";
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) throwForPid(errno, "open", pid, "read the page tables of");
  return fd;
}

// The kernel gathers regions in an internal buffer of PAGEMAP_WALK_SIZE / PAGE_SIZE entries (512
// with 4 KiB pages and 2 MiB PMDs), flushing it to the caller's vec and walking on when it fills.
// If a later internal pass then finishes the range, do_pagemap_scan() leaves walk_end at the
// earlier flush point (it only fills walk_end in when it is still 0), so walk_end can lie *before*
// regions already returned and write-protected again; resuming from it reports pages twice and out
// of order. Seen on 6.18 with vec_len 1024. Never asking for more than one internal buffer keeps
// walk_end exact: a full vec then always ends the call with walk_end at the stop point.
constexpr uint64_t kMaxRegionsPerCall = 512;

ScanResult pagemapScan(int pagemapFd, const ScanRequest& req, uint64_t* vec, uint64_t vecLen) {
  if (vecLen > kMaxRegionsPerCall) vecLen = kMaxRegionsPerCall;
  struct pm_scan_arg a = {};
  a.size = sizeof a;
  a.flags = req.flags;
  a.start = req.start;
  a.end = req.end;
  a.vec = reinterpret_cast<uint64_t>(vec);
  a.vec_len = vecLen;
  a.max_pages = req.maxPages;
  a.category_inverted = req.categoryInverted;
  a.category_mask = req.categoryMask;
  a.category_anyof_mask = req.categoryAnyofMask;
  a.return_mask = req.returnMask;
  // No EINTR retry: the walk only stops for a fatal signal to us, and with WP matching a
  // repeated call could not recover a lost report anyway.
  const long n = ::ioctl(pagemapFd, PAGEMAP_SCAN, &a);
  if (n < 0) {
    const int err = errno;
    char what[160];
    snprintf(what, sizeof what, "PAGEMAP_SCAN of %llx-%llx (walk stopped at %llx)", (unsigned long long)req.start,
             (unsigned long long)req.end, (unsigned long long)a.walk_end);
    if (err == ENOTTY)
      throwSys(err, "ioctl(PAGEMAP_SCAN)", "this kernel has no PAGEMAP_SCAN ioctl (Linux >= 6.7 needed)");
    if (err == EPERM && (req.flags & PM_SCAN_CHECK_WPASYNC))
      throwSys(err, "ioctl(PAGEMAP_SCAN)",
               std::string(what) + ": a VMA in the range is not registered for write tracking");
    throwErrno(err, "ioctl(PAGEMAP_SCAN)", what);
  }
  return ScanResult{static_cast<uint64_t>(n), a.walk_end};
}

}  // namespace precopy
