// The PAGEMAP_SCAN calls the tracker makes, and which reported pages each keeps.
//
// Categories seen on Linux 6.18 (a C probe first; test/sender/tracking.test.ts asserts them):
// - before a VMA's first WP scan every page reports WRITTEN, populated or not; populated pages
//   also PRESENT (PFNZERO for the shared zero page), swapped or migrating ones SWAPPED;
// - after it, written pages report WRITTEN again; unpopulated pages carry a pte marker and report
//   SWAPPED (not WRITTEN);
// - PAGE_IS_FILE marks page-cache pages: in a private file mapping the pages never written (the
//   copies the process wrote, RELRO included, are anonymous: PRESENT without FILE); in a shared
//   anonymous mapping every populated page (shmem is page cache).

import {
  PAGE_IS_FILE,
  PAGE_IS_PFNZERO,
  PAGE_IS_PRESENT,
  PAGE_IS_SWAPPED,
  PAGE_IS_WPALLOWED,
  PAGE_IS_WRITTEN,
  PM_SCAN_WP_MATCHING,
  type ScanArgs,
} from '../../native';
import type { VmaKind } from './maps';

export type ScanMode =
  /** First scan of a newly registered VMA: write-protect every page (they all report WRITTEN
   *  then) and keep the populated ones, in the same call (the markers do not exist yet). */
  | 'arm'
  /** Later rounds: pages written since the last WP scan, re-protected atomically. The masks are
   *  exactly WRITTEN: the kernel's fast path. */
  | 'dirty'
  /** Read-only walk for the populated pages (no WP): VMAs we do not track, and the freeze-time
   *  populated set. */
  | 'populated';

const POPULATED = PAGE_IS_PRESENT | PAGE_IS_SWAPPED;

/**
 * Categories an 'arm' or 'populated' scan reports besides WRITTEN|PRESENT|SWAPPED (which the
 * kernel reads off the pte and which tell markers from data: they are always asked). The others
 * cost: FILE makes the kernel look up each present page's struct page, so it is asked only where
 * holdsImagePages() uses it; PFNZERO only where the zero hints save reading pages (staging), not
 * for run lists (the freeze's populated set, where every millisecond is downtime). Measured on
 * 6.18, populated scan of 1 GiB of armed anonymous memory: 10.3 ms with both, 1.5 without
 * (PRESENT alone: 1.4).
 */
export interface ExtraCategories {
  file: boolean;
  zeroPages: boolean;
}

export const ALL_EXTRA_CATEGORIES: ExtraCategories = { file: true, zeroPages: true };

/** FILE matters only in private file mappings (see holdsImagePages). */
export const needsFileCategory = (kind: VmaKind): boolean => kind === 'file-private';

const extraMask = (x: ExtraCategories): number => (x.file ? PAGE_IS_FILE : 0) | (x.zeroPages ? PAGE_IS_PFNZERO : 0);

export function scanArgs(mode: ScanMode, start: number, end: number, extra: ExtraCategories = ALL_EXTRA_CATEGORIES): ScanArgs {
  switch (mode) {
    case 'arm':
      return {
        start,
        end,
        flags: PM_SCAN_WP_MATCHING,
        categoryMask: PAGE_IS_WRITTEN,
        returnMask: PAGE_IS_WRITTEN | POPULATED | extraMask(extra),
        maxPages: 0,
      };
    case 'dirty':
      return { start, end, flags: PM_SCAN_WP_MATCHING, categoryMask: PAGE_IS_WRITTEN, returnMask: PAGE_IS_WRITTEN, maxPages: 0 };
    case 'populated':
      return { start, end, flags: 0, categoryAnyofMask: POPULATED, returnMask: POPULATED | extraMask(extra), maxPages: 0 };
  }
}

const MODES: readonly ScanMode[] = ['arm', 'dirty', 'populated'];
/** scanArgs() of [0, 0) for every mode and ExtraCategories, indexed by maskIndex(). */
const MASKS: readonly ScanArgs[] = MODES.flatMap((mode) =>
  [false, true].flatMap((file) => [false, true].map((zeroPages) => Object.freeze(scanArgs(mode, 0, 0, { file, zeroPages })))),
);
const maskIndex = (mode: ScanMode, x: ExtraCategories): number => MODES.indexOf(mode) * 4 + (x.file ? 2 : 0) + (x.zeroPages ? 1 : 0);

/** The masks of scanArgs() alone (start = end = 0), made once: the walk plan of every round asks
 *  for them per VMA (see setWalkRange). */
export const scanMasks = (mode: ScanMode, extra: ExtraCategories): ScanArgs => MASKS[maskIndex(mode, extra)];

/**
 * Whether a region reported by an 'arm' or 'populated' scan holds pages of the image: populated,
 * and for a private mapping of an existing file not a page-cache page (the receiver rebuilds
 * those from the file). 'dirty' regions are all kept: a written page is always sent.
 */
export function holdsImagePages(kind: VmaKind, categories: number): boolean {
  if ((categories & POPULATED) === 0) return false;
  return !(kind === 'file-private' && (categories & PAGE_IS_FILE) !== 0);
}

/** Present in the page table (not a marker, swap or migration entry). */
export const isPresent = (categories: number): boolean => (categories & PAGE_IS_PRESENT) !== 0;

export const isZeroPage = (categories: number): boolean => (categories & PAGE_IS_PFNZERO) !== 0;

/**
 * One-page probe of registration: with category_inverted = category_mask = WPALLOWED the kernel
 * skips registered VMAs without walking them and reports the pages of unregistered ones.
 * Registration is a VMA flag, so one page tells for the whole VMA.
 */
export function registrationProbeArgs(start: number, pageSize: number): ScanArgs {
  return {
    start,
    end: start + pageSize,
    flags: 0,
    categoryInverted: PAGE_IS_WPALLOWED,
    categoryMask: PAGE_IS_WPALLOWED,
    returnMask: PAGE_IS_WPALLOWED,
    maxPages: 1,
  };
}
