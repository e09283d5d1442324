// userfaultfd ioctls on a uffd taken from the target: they act on the target's address space
// (a uffd is bound to the mm that created it).
#pragma once

#include <stdint.h>

namespace precopy {

// UFFDIO_API asking for `features`; returns the features the kernel reports. EINVAL = unsupported.
uint64_t uffdApi(int uffd, uint64_t features);
// UFFDIO_REGISTER of [start, end) in write-protect mode.
void uffdRegisterWp(int uffd, uint64_t start, uint64_t end);
// UFFDIO_UNREGISTER of [start, end); a range no longer mapped is not an error.
void uffdUnregister(int uffd, uint64_t start, uint64_t end);

}  // namespace precopy
