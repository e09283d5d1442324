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

size_t writeStaged(int fd, const uint8_t* src, size_t len, uint64_t pos, uint8_t* staging, size_t stagingLen) {
  if (stagingLen == 0) throwSys(EINVAL, "pwrite", "empty staging buffer");
  for (size_t done = 0; done < len;) {
    const size_t n = std::min(stagingLen, len - done);
    memcpy(staging, src + done, n);
    for (size_t w = 0; w < n;) {
      const ssize_t k = ::pwrite(fd, staging + w, n - w, static_cast<off_t>(pos + done + w));
      if (k < 0) {
        if (errno == EINTR) continue;
        throwErrno(errno, "pwrite", "write page data");
      }
      if (k == 0) throwSys(EIO, "pwrite", "write page data: no progress");
      w += static_cast<size_t>(k);
    }
    done += n;
  }
  return len;
}

}  // namespace precopy
