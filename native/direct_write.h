// O_DIRECT writes of page data that sits at any address: copied through an aligned staging buffer.
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

namespace precopy {

// Write src[0, len) at file offset pos of fd (opened with O_DIRECT), staging.size bytes at a time
// through `staging` (page aligned). Throws SysError (EINVAL when the file system refuses O_DIRECT
// or the alignment); returns bytes written (len).
size_t writeStaged(int fd, const uint8_t* src, size_t len, uint64_t pos, uint8_t* staging, size_t stagingLen);

// Buffered writes of many pieces of src: `runs` holds `count` (src offset, length, file offset)
// triples, checked by the caller to lie inside src. One pool job for a batch's short runs instead
// of one write call each on the JS thread. Throws SysError; returns bytes written.
size_t writeRuns(int fd, const uint8_t* src, const double* runs, size_t count);

}  // namespace precopy
