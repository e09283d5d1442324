// RunBatch: what the scanning layer hands to the staging layer. Runs of pages as packed
// (start, pageCount) pairs in a Float64Array (no per-region JS objects; common/page-runs.ts), at
// most maxPages pages. RunBatcher fills one batch at a time from scan regions; runsToBatches and
// splitRunBatch cut run lists and batches that are too big.

import { appendRun } from '../../common/page-runs';

export interface RunBatch {
  /** (start address, page count) pairs, ascending, page-aligned, each inside one VMA. */
  runs: Float64Array;
  /** Total pages in runs. */
  pages: number;
  /** Sub-runs of `runs` known to be the shared zero page (PAGE_IS_PFNZERO): need no read. */
  zeroHint?: Float64Array;
}

export class RunBatcher {
  private runs: Float64Array;
  private n = 0;
  private zero: Float64Array;
  private nz = 0;
  pages = 0;
  /** Pages handed out by take() so far. */
  taken = 0;
  /** A run may be extended only if it starts at or after this address (the current VMA's start):
   *  PageBatch runs must each lie inside one VMA, and adjacent VMAs touch. */
  private floor = 0;

  constructor(
    readonly maxPages: number,
    readonly pageSize: number,
  ) {
    if (!Number.isInteger(maxPages) || maxPages < 1) throw new RangeError(`maxPages must be a positive integer, got ${maxPages}`);
    // Worst case one run per page; allocated once per walk, reused for every batch.
    this.runs = new Float64Array(2 * maxPages);
    this.zero = new Float64Array(2 * maxPages);
  }

  /** Pages that still fit. */
  room(): number {
    return this.maxPages - this.pages;
  }

  full(): boolean {
    return this.pages === this.maxPages;
  }

  /** The next page added starts a new run (a VMA boundary at `start`). */
  boundary(start: number): void {
    this.floor = start;
  }

  /** Add as many pages of [start, start + count pages) as fit; returns how many were taken. */
  add(start: number, count: number, isZero = false): number {
    const take = Math.min(count, this.maxPages - this.pages);
    if (take <= 0) return 0;
    this.n = appendRun(this.runs, this.n, start, take, this.pageSize, this.floor);
    if (isZero) this.nz = appendRun(this.zero, this.nz, start, take, this.pageSize, this.floor);
    this.pages += take;
    return take;
  }

  /**
   * Add the first n runs of src ((start, count) pairs) as they are, `pages` in all, at most room():
   * ascending, none extending another (only the first may extend the batch's last run), no zero
   * hints. A walk's dirty regions, which the native walk has already merged: one copy, no loop.
   */
  addRuns(src: Float64Array, n: number, pages: number): void {
    if (n === 0) return;
    if (pages > this.room()) throw new RangeError(`addRuns: ${pages} pages do not fit in ${this.room()}`);
    this.add(src[0], src[1]);
    this.runs.set(src.subarray(2, 2 * n), this.n);
    this.n += 2 * (n - 1);
    this.pages += pages - src[1];
  }

  /** Drop what the batch holds (a batcher reused after a walk that was left unfinished). */
  clear(): void {
    this.n = 0;
    this.nz = 0;
    this.pages = 0;
    this.taken = 0;
    this.floor = 0;
  }

  /** The batch so far (copied out), and start a new one. */
  take(): RunBatch {
    const b: RunBatch = { runs: this.runs.slice(0, this.n), pages: this.pages };
    if (this.nz > 0) b.zeroHint = this.zero.slice(0, this.nz);
    this.taken += this.pages;
    this.n = 0;
    this.nz = 0;
    this.pages = 0;
    return b;
  }
}

/**
 * Cut runs (sorted) into RunBatches of at most maxPages pages, splitting long runs. With
 * spanBytes, a batch also never holds pages of two different spanBytes-aligned spans (so that all
 * of it goes on one lane: proto/lanes.ts).
 */
export function* runsToBatches(runs: ArrayLike<number>, maxPages: number, pageSize = 4096, spanBytes = 0): Generator<RunBatch> {
  let cur: number[] = [];
  let pages = 0;
  let span = -1;
  for (let i = 0; i < runs.length; i += 2) {
    let start = runs[i];
    let left = runs[i + 1];
    while (left > 0) {
      let take = Math.min(left, maxPages - pages);
      if (spanBytes > 0) {
        const s = Math.floor(start / spanBytes);
        if (pages > 0 && s !== span) {
          yield { runs: Float64Array.from(cur), pages };
          cur = [];
          pages = 0;
          take = Math.min(left, maxPages);
        }
        span = s;
        take = Math.min(take, ((s + 1) * spanBytes - start) / pageSize);
      }
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

/** Pieces of at most maxPages pages of one RunBatch (and within one span, see runsToBatches), in
 *  order, each with its share of zero hints. */
export function splitRunBatch(b: RunBatch, maxPages: number, pageSize: number, spanBytes = 0): RunBatch[] {
  if (b.pages <= maxPages && (spanBytes === 0 || withinSpan(b, pageSize, spanBytes))) return [b];
  const pieces: RunBatch[] = [];
  for (const piece of runsToBatches(b.runs, maxPages, pageSize, spanBytes)) {
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

function withinSpan(b: RunBatch, pageSize: number, spanBytes: number): boolean {
  const n = b.runs.length;
  if (n === 0) return true;
  const last = b.runs[n - 2] + b.runs[n - 1] * pageSize - 1;
  return Math.floor(b.runs[0] / spanBytes) === Math.floor(last / spanBytes);
}
