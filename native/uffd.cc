// userfaultfd: API handshake and WP-mode registration.
#include "uffd.h"

#include <stdio.h>

#include <string>

#include "kernel_abi.h"
#include "sys_error.h"

namespace precopy {

namespace {
std::string range(uint64_t start, uint64_t end) {
  char buf[64];
  snprintf(buf, sizeof buf, "%llx-%llx", static_cast<unsigned long long>(start), static_cast<unsigned long long>(end));
  return buf;
}
}  // namespace

uint64_t uffdApi(int uffd, uint64_t features) {
  struct uffdio_api api = {};
  api.api = UFFD_API;
  api.features = features;
  if (::ioctl(uffd, UFFDIO_API, &api) < 0) {
    if (errno == EINVAL)
      throwSys(EINVAL, "ioctl(UFFDIO_API)",
               "this kernel's userfaultfd lacks write-protect async tracking (UFFD_FEATURE_WP_ASYNC, "
               "UFFD_FEATURE_WP_UNPOPULATED: Linux >= 6.7)");
    throwErrno(errno, "ioctl(UFFDIO_API)", "userfaultfd API handshake failed");
  }
  return api.features;
}

void uffdRegisterWp(int uffd, uint64_t start, uint64_t end) {
  struct uffdio_register reg = {};
  reg.range.start = start;
  reg.range.len = end - start;
  reg.mode = UFFDIO_REGISTER_MODE_WP;
  if (::ioctl(uffd, UFFDIO_REGISTER, &reg) < 0)
    throwErrno(errno, "ioctl(UFFDIO_REGISTER)", "cannot register " + range(start, end) + " for write tracking");
}

void uffdUnregister(int uffd, uint64_t start, uint64_t end) {
  struct uffdio_range r = {start, end - start};
  if (::ioctl(uffd, UFFDIO_UNREGISTER, &r) < 0) {
    // EINVAL/ENOMEM: (part of) the range is no longer mapped; nothing is registered there.
    if (errno == EINVAL || errno == ENOMEM) return;
    throwErrno(errno, "ioctl(UFFDIO_UNREGISTER)", "cannot unregister " + range(start, end));
  }
}

}  // namespace precopy
