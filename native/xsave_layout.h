// Where this CPU's XSAVE area keeps each state component (CPUID leaf 0xD): the layout of the
// NT_X86_XSTATE bytes ptrace gives. AMD and Intel place the AVX-512 components at different
// offsets; tools that assume Intel's (gdb 13) need the area rewritten to that layout.
#pragma once

#include <stdint.h>

#include <vector>

namespace precopy {

struct XsaveComponent {
  uint32_t index;   // state component number (2 = AVX, 5 = opmask, 6 = ZMM_Hi256, 7 = Hi16_ZMM, 9 = PKRU)
  uint32_t offset;  // in the standard (non-compacted) format
  uint32_t size;
};

// Components 2..31 this CPU supports for user state (XCR0 bits it reports), in index order.
std::vector<XsaveComponent> xsaveLayout();

}  // namespace precopy
