// Packed page runs: pages as (start address, page count) pairs in one flat array, number[] or
// Float64Array, the form every layer passes page sets in: the native walk writes them, a RunBatch,
// a PageBatch and a Discard carry them, the image stores by them. No per-page or per-run JS
// objects. The helpers that build, count and combine them live here, once; the batching of runs
// for staging (RunBatch) is the sender's (sender/tracking/run-batch.ts).

import type { Vma } from './vma';

/** A page set that can list what it holds in a range as packed runs (the sender's SentPages:
 *  what the receiver holds). */
export interface HeldPages {
  heldRunsIn(start: number, end: number): ArrayLike<number>;
}

// ---- building

/** Append one page to a packed run list, extending the last run when contiguous. */
export function appendPage(out: number[], addr: number, pageSize: number): void {
  const k = out.length;
  if (k > 0 && out[k - 2] + out[k - 1] * pageSize === addr) out[k - 1]++;
  else out.push(addr, 1);
}

/**
 * Append `count` pages at `start` to the first n numbers of a preallocated run array, extending
 * the last run when contiguous and it starts at or after `floor` (a boundary no run may cross:
 * runs of a PageBatch each lie inside one VMA, and adjacent VMAs touch). Returns the new length.
 */
export function appendRun(a: Float64Array, n: number, start: number, count: number, pageSize: number, floor = 0): number {
  if (n > 0 && a[n - 2] >= floor && a[n - 2] + a[n - 1] * pageSize === start) {
    a[n - 1] += count;
    return n;
  }
  a[n] = start;
  a[n + 1] = count;
  return n + 2;
}

// ---- counting

/** Pages of a run list; NaN when a count is not a whole number >= 0 (a list from the wire,
 *  before it is checked, has no page count). */
export function sumPages(runs: ArrayLike<number>): number {
  let n = 0;
  for (let i = 1; i < runs.length; i += 2) {
    const c = runs[i];
    if (!Number.isSafeInteger(c) || c < 0) return NaN;
    n += c;
  }
  return n;
}

/** Pages of `runs` (ascending, checked) that are not inside `held` (ascending, merged [start, end) ranges). */
export function pagesNotHeld(runs: ArrayLike<number>, held: [number, number][], pageSize: number): number {
  let added = 0;
  let h = 0;
  for (let i = 0; i < runs.length; i += 2) {
    const start = runs[i];
    const end = start + runs[i + 1] * pageSize;
    let covered = 0;
    while (h < held.length && held[h][1] <= start) h++;
    for (let k = h; k < held.length && held[k][0] < end; k++) {
      covered += Math.min(end, held[k][1]) - Math.max(start, held[k][0]);
    }
    added += runs[i + 1] - covered / pageSize;
  }
  return added;
}

// ---- set operations (through sorted, merged byte ranges)

type Range = [start: number, end: number];

/** Byte ranges of runs, sorted and merged. */
function toRanges(runs: ArrayLike<number>, pageSize: number): Range[] {
  const out: Range[] = [];
  for (let i = 0; i < runs.length; i += 2) out.push([runs[i], runs[i] + runs[i + 1] * pageSize]);
  return merge(out);
}

function merge(ranges: Range[]): Range[] {
  ranges.sort((a, b) => a[0] - b[0]);
  const out: Range[] = [];
  for (const r of ranges) {
    const last = out[out.length - 1];
    if (last && r[0] <= last[1]) last[1] = Math.max(last[1], r[1]);
    else if (r[1] > r[0]) out.push([r[0], r[1]]);
  }
  return out;
}

function toRuns(ranges: Range[], pageSize: number): number[] {
  const out: number[] = [];
  for (const [s, e] of ranges) out.push(s, (e - s) / pageSize);
  return out;
}

/** a minus b, both sorted and merged. */
function subtract(a: Range[], b: Range[]): Range[] {
  const out: Range[] = [];
  let j = 0;
  for (const [s0, e] of a) {
    let s = s0;
    while (j < b.length && b[j][1] <= s) j++;
    let k = j;
    while (k < b.length && b[k][0] < e) {
      if (b[k][0] > s) out.push([s, b[k][0]]);
      s = Math.max(s, b[k][1]);
      k++;
    }
    if (s < e) out.push([s, e]);
  }
  return out;
}

const layoutRanges = (layout: readonly Vma[]): Range[] => merge(layout.map((v) => [v.start, v.end] as Range));

/** Page runs covered by `before` and not by `after` (what a new layout drops). */
export function runsOutside(before: readonly Vma[], after: readonly Vma[], pageSize: number): number[] {
  return toRuns(subtract(layoutRanges(before), layoutRanges(after)), pageSize);
}

/** The union of run lists: sorted, merged runs, each page once. */
export function unionRuns(lists: readonly ArrayLike<number>[], pageSize: number): number[] {
  const ranges: Range[] = [];
  for (const runs of lists) for (let i = 0; i < runs.length; i += 2) ranges.push([runs[i], runs[i] + runs[i + 1] * pageSize]);
  return toRuns(merge(ranges), pageSize);
}

/** The pages of `runs` inside the layout, cut at VMA boundaries (a PageBatch run must lie inside
 *  one VMA, and adjacent VMAs touch). */
export function runsWithin(runs: ArrayLike<number>, layout: readonly Vma[], pageSize: number): number[] {
  const have = toRanges(runs, pageSize);
  const vmas = [...layout].sort((a, b) => a.start - b.start);
  const out: number[] = [];
  let j = 0;
  for (const v of vmas) {
    while (j < have.length && have[j][1] <= v.start) j++;
    for (let k = j; k < have.length && have[k][0] < v.end; k++) {
      const s = Math.max(have[k][0], v.start);
      const e = Math.min(have[k][1], v.end);
      if (s < e) out.push(s, (e - s) / pageSize);
    }
  }
  return out;
}

/** The pages of `runs` inside `areas` ([start, end) byte pairs) and outside them. */
export function splitRuns(runs: ArrayLike<number>, areas: ArrayLike<number>, pageSize: number): { inside: number[]; outside: number[] } {
  const have = toRanges(runs, pageSize);
  const cut: Range[] = [];
  for (let i = 0; i + 1 < areas.length; i += 2) cut.push([areas[i], areas[i + 1]]);
  const outside = subtract(have, merge(cut));
  return { inside: toRuns(subtract(have, outside), pageSize), outside: toRuns(outside, pageSize) };
}

/** The pages of `runs` that `held` does not hold (sorted, merged). */
export function runsNotHeld(held: HeldPages, runs: ArrayLike<number>, pageSize: number): number[] {
  const out: Range[] = [];
  for (const [s, e] of toRanges(runs, pageSize)) out.push(...subtract([[s, e]], toRanges(held.heldRunsIn(s, e), pageSize)));
  return toRuns(out, pageSize);
}

/** Top of the user address space (x86-64, 47 bits; 5-level paging is not in use here). */
const USER_TOP = 2 ** 47;

/**
 * The runs `held` holds outside `populated` (what the receiver has that the target no longer has).
 * Walks the gaps between populated runs, so its cost follows the gaps, not the held pages: the
 * populated set is most of what is held, and this runs while the target is frozen.
 */
export function heldOutside(held: HeldPages, populated: ArrayLike<number>, pageSize: number): number[] {
  const out: number[] = [];
  let prev = 0;
  for (const [start, end] of toRanges(populated, pageSize)) {
    if (start > prev) for (const v of Array.from(held.heldRunsIn(prev, start))) out.push(v);
    prev = end;
  }
  for (const v of Array.from(held.heldRunsIn(prev, USER_TOP))) out.push(v);
  return out;
}
