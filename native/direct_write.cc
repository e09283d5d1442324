// See direct_write.h. Runs on a libuv pool thread (binding.cc): the copy into the staging buffer
// is as many bytes as the write, and on the receiver's JS thread it was a quarter of its CPU per
// GiB (docs/design.md, Page path). image/aligned-staging.ts says why O_DIRECT at all.
#include "direct_write.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>

#include "sys_error.h"

namespace precopy {

namespace {

// pwrite all of p[0, len) at pos, over short writes and EINTR.
void pwriteAll(int fd, const uint8_t* p, size_t len, uint64_t pos) {
  for (size_t w = 0; w < len;) {
    const ssize_t k = ::pwrite(fd, p + w, len - w, static_cast<off_t>(pos + w));
    if (k < 0) {
      if (errno == EINTR) continue;
      throwErrno(errno, "pwrite", "write page data");
    }
    if (k == 0) throwSys(EIO, "pwrite", "write page data: no progress");
    w += static_cast<size_t>(k);
  }
}

}  // namespace

size_t writeStaged(int fd, const uint8_t* src, size_t len, uint64_t pos, uint8_t* staging, size_t stagingLen) {
  if (stagingLen == 0) throwSys(EINVAL, "pwrite", "empty staging buffer");
  for (size_t done = 0; done < len;) {
    const size_t n = std::min(stagingLen, len - done);
    memcpy(staging, src + done, n);
    pwriteAll(fd, staging, n, pos + done);
    done += n;
  }
  return len;
}

size_t writeRuns(int fd, const uint8_t* src, const double* runs, size_t count) {
  size_t total = 0;
  for (size_t i = 0; i < count; i++) {
    const uint8_t* from = src + static_cast<size_t>(runs[3 * i]);
    const size_t len = static_cast<size_t>(runs[3 * i + 1]);
    pwriteAll(fd, from, len, static_cast<uint64_t>(runs[3 * i + 2]));
    total += len;
  }
  return total;
}

}  // namespace precopy
