// See xsave_layout.h.
#include "xsave_layout.h"

#include <cpuid.h>

namespace precopy {

std::vector<XsaveComponent> xsaveLayout() {
  std::vector<XsaveComponent> out;
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid_count(0xd, 0, &eax, &ebx, &ecx, &edx)) return out;
  const uint64_t supported = (static_cast<uint64_t>(edx) << 32) | eax;
  for (uint32_t i = 2; i < 32; i++) {
    if (!(supported & (1ull << i))) continue;
    __get_cpuid_count(0xd, i, &eax, &ebx, &ecx, &edx);
    if (ecx & 1) continue;  // a supervisor component: never in the user area
    out.push_back({i, ebx, eax});
  }
  return out;
}

}  // namespace precopy
