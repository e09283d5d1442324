// Packed run lists: (start address, page count) pairs, the shape in which pages travel (PageBatch,
// Discard) and in which the scan reports them. Small set operations the orchestration needs:
// what a layout change dropped, what the receiver holds beyond the populated set, batches.

import type { Vma } from '../common/vma';
import type { HeldPages, RunBatch } from './tracking/tracked-process';

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

export function sumPages(runs: ArrayLike<number>): number {
  let n = 0;
  for (let i = 1; i < runs.length; i += 2) n += runs[i];
  return n;
}

/** Cut runs (sorted) into RunBatches of at most maxPages pages, splitting long runs. */
export function* runsToBatches(runs: ArrayLike<number>, maxPages: number, pageSize = 4096): Generator<RunBatch> {
  let cur: number[] = [];
  let pages = 0;
  for (let i = 0; i < runs.length; i += 2) {
    let start = runs[i];
    let left = runs[i + 1];
    while (left > 0) {
      const take = Math.min(left, maxPages - pages);
      cur.push(start, take);
      pages += take;
      start += take * pageSize;
      left -= take;
      if (pages === maxPages) {
        yield { runs: Float64Array.from(cur), pages };
        cur = [];
        pages = 0;
      }
    }
  }
  if (pages > 0) yield { runs: Float64Array.from(cur), pages };
}

/** Pieces of at most maxPages pages of one RunBatch, in order, each with its share of zero hints. */
export function splitRunBatch(b: RunBatch, maxPages: number, pageSize: number): RunBatch[] {
  if (b.pages <= maxPages) return [b];
  const pieces: RunBatch[] = [];
  for (const piece of runsToBatches(b.runs, maxPages, pageSize)) {
    if (b.zeroHint) {
      const first = piece.runs[0];
      const last = piece.runs[piece.runs.length - 2] + piece.runs[piece.runs.length - 1] * pageSize;
      const hint: number[] = [];
      for (let i = 0; i < b.zeroHint.length; i += 2) {
        const s = Math.max(b.zeroHint[i], first);
        const e = Math.min(b.zeroHint[i] + b.zeroHint[i + 1] * pageSize, last);
        if (s < e) hint.push(s, (e - s) / pageSize);
      }
      // A hint only says "no need to read": pages of the piece's span outside its runs are not
      // in the piece, and the stager only consults hints inside its runs.
      if (hint.length > 0) piece.zeroHint = Float64Array.from(hint);
    }
    pieces.push(piece);
  }
  return pieces;
}
