// process_vm_readv in batches of IOV_MAX ranges. The kernel stops a batch at the first byte it
// cannot read and returns how much it copied; the range holding that byte is the one that failed
// (unmapped or made unreadable meanwhile). It is zero-filled and reported, and the batch resumes
// with the next range, so one vanished VMA never costs the rest of the batch.
#include "page_reader.h"

#include <limits.h>
#include <string.h>
#include <sys/uio.h>

#include <string>

#include "sys_error.h"

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

namespace precopy {

// The kernel silently truncates a process_vm_readv call at MAX_RW_COUNT (2 GiB - 4 KiB) total,
// which would look like a failed range: keep every call well under it.
constexpr size_t kMaxBatchBytes = size_t{1} << 30;

ReadOutcome readPages(pid_t pid, const double* ranges, size_t count, uint8_t* into, size_t intoLen) {
  std::vector<struct iovec> remote(count);
  std::vector<size_t> offset(count + 1);  // where range i starts in `into`
  offset[0] = 0;
  for (size_t i = 0; i < count; i++) {
    const double addr = ranges[2 * i], len = ranges[2 * i + 1];
    if (!(addr >= 0 && len >= 0 && addr + len <= 9007199254740992.0) || len > static_cast<double>(kMaxBatchBytes))
      throwSys(EINVAL, "process_vm_readv",
               "range " + std::to_string(i) + " has a bad address or length (at most 1 GiB per range)");
    remote[i].iov_base = reinterpret_cast<void*>(static_cast<uintptr_t>(addr));
    remote[i].iov_len = static_cast<size_t>(len);
    offset[i + 1] = offset[i] + remote[i].iov_len;
  }
  if (offset[count] > intoLen)
    throwSys(EINVAL, "process_vm_readv",
             "buffer too small: " + std::to_string(intoLen) + " bytes for " + std::to_string(offset[count]) +
                 " bytes of ranges");

  ReadOutcome out;
  size_t next = 0;
  while (next < count) {
    size_t n = 1;
    while (n < IOV_MAX && next + n < count && offset[next + n + 1] - offset[next] <= kMaxBatchBytes) n++;
    struct iovec local = {into + offset[next], offset[next + n] - offset[next]};
    ssize_t got = ::process_vm_readv(pid, &local, 1, &remote[next], n, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      if (errno != EFAULT) throwForPid(errno, "process_vm_readv", pid, "read memory of");
      got = 0;  // the very first byte of range `next` is unreadable
    }
    const size_t end = offset[next] + static_cast<size_t>(got);
    out.bytesRead += static_cast<uint64_t>(got);
    if (end == offset[next + n]) {
      next += n;
      continue;
    }
    // Short read: find the range holding the first byte not read (skip empty ranges before it).
    size_t bad = next;
    while (offset[bad + 1] <= end) bad++;
    out.bytesRead -= end - offset[bad];  // a failed range counts as not read at all
    memset(into + offset[bad], 0, remote[bad].iov_len);
    out.failed.push_back(static_cast<uint32_t>(bad));
    next = bad + 1;
  }
  return out;
}

}  // namespace precopy
