// An NT_X86_XSTATE area in the layout gdb expects. ptrace gives the XSAVE area in this CPU's
// standard format (CPUID leaf 0xD); AMD CPUs place the AVX-512 components at other offsets than
// Intel's, and gdb 13 reads Intel's only: it refuses a shorter note ("section too small") and
// would read the wrong bytes from a padded one. So the components are moved to Intel's offsets.

import type { XsaveComponent } from '../../native';

/** Intel's standard-format offsets (SDM vol. 1, 13.4.3), which gdb hard-codes. */
const INTEL_OFFSETS: Record<number, number> = { 2: 576, 3: 960, 4: 1024, 5: 1088, 6: 1152, 7: 1664, 9: 2688 };
/** Legacy region (512) and the XSAVE header (64): the same everywhere. */
const LEGACY_AND_HEADER = 576;
/** XCR0 as the kernel stores it in the software-reserved bytes of the legacy region. */
const XCR0_OFFSET = 464;

export function xstateForGdb(xstate: Buffer, layout: readonly XsaveComponent[]): Buffer {
  if (xstate.length < LEGACY_AND_HEADER) return xstate;
  const xcr0 = xstate.readBigUInt64LE(XCR0_OFFSET);
  const present = layout.filter((c) => (xcr0 >> BigInt(c.index)) & 1n && INTEL_OFFSETS[c.index] !== undefined);
  if (present.every((c) => c.offset === INTEL_OFFSETS[c.index])) return xstate;
  const size = Math.max(LEGACY_AND_HEADER, ...present.map((c) => INTEL_OFFSETS[c.index] + c.size));
  const out = Buffer.alloc(size);
  xstate.copy(out, 0, 0, LEGACY_AND_HEADER);
  for (const c of present) {
    if (c.offset + c.size <= xstate.length) xstate.copy(out, INTEL_OFFSETS[c.index], c.offset, c.offset + c.size);
  }
  return out;
}
