// Test-only fault injection, in one place (as CRIU keeps its own in one file): every way the
// environment can make precopy misbehave on purpose, each read here and nowhere else, all with
// the prefix PRECOPY_FAULT_. Unset in production; each is one environment lookup where it applies.
// This module imports nothing of the project, so every layer (native/ included) may use it.
//
//   PRECOPY_FAULT_LOSE_WRITES=N       the sender's stop-and-copy round drops the first N dirty
//                                     pages the scan reports, as a kernel that lost those writes
//                                     would; only the verify pass over the frozen target can see it
//   PRECOPY_FAULT_STORE_CRASH_AT=P[@N] the image store SIGKILLs its own process the N-th time it
//                                     reaches crash point P (image/crash-hook.ts lists the points)
//   PRECOPY_FAULT_MISSING_FEATURES=a,b the kernel probe reports these features missing
//                                     (pagemap_scan, userfaultfd, wp_async, wp_unpopulated)
//   PRECOPY_FAULT_BUFFERED_WRITES=1   the image store never uses O_DIRECT (a file system where it
//                                     is slow; before/after comparisons in the bench)
//   PRECOPY_FAULT_PREBUILD_FAIL_AT=P  a handover's destination process built during pre-copy
//                                     fails at P (open, layout, pages): the receiver must fall
//                                     back to a full restore after the commit

const PREFIX = 'PRECOPY_FAULT_';

function raw(name: string): string | undefined {
  const v = process.env[PREFIX + name];
  return v === undefined || v === '' ? undefined : v;
}

/** The full variable name of a fault, for log lines and for tests that set it. */
export const faultVariable = (
  name: 'LOSE_WRITES' | 'STORE_CRASH_AT' | 'MISSING_FEATURES' | 'BUFFERED_WRITES' | 'RESTORE_FAIL_AT' | 'HANDOVER_DIE' | 'PREBUILD_FAIL_AT',
): string => PREFIX + name;

/** Dirty pages the stop-and-copy round must drop (0: none). */
export function loseWritesCount(): number {
  const n = Number(raw('LOSE_WRITES') ?? 0);
  return Number.isInteger(n) && n > 0 ? n : 0;
}

/** The store crash point to stop at, and on which hit of it (1: the first). */
export function storeCrashPoint(): { point: string; nth: number } | null {
  const spec = raw('STORE_CRASH_AT');
  if (!spec) return null;
  const [point, nth] = spec.split('@');
  return { point, nth: Number(nth ?? 1) };
}

/** Kernel feature names the probe must report missing (validated by the probe). */
export function missingFeatures(): string[] {
  return (raw('MISSING_FEATURES') ?? '')
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
}

/** The image store must not use O_DIRECT. */
export const bufferedWritesOnly = (): boolean => raw('BUFFERED_WRITES') === '1';

/** The restore step at which a restore must fail (null: none). */
export const restoreFailStep = (): string | null => raw('RESTORE_FAIL_AT') ?? null;

/** Where a handover's prebuilt process must fail (null: nowhere). */
export const prebuildFailPoint = (): string | null => raw('PREBUILD_FAIL_AT') ?? null;

/** The point of a handover at which the sender must die (null: none). */
export const handoverDiePoint = (): string | null => raw('HANDOVER_DIE') ?? null;
