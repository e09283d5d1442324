// One page batch as SessionWriter.writePages receives it — runs of (start, count), a zero map with
// one bit per page in run order (set = zero page, absent from the data), the non-zero pages back
// to back — checked in full and split into what the writer does with it: data and zero runs to
// mark, and one pwrite per contiguous run of data pages within an address window. Nothing is
// written or marked here, so a batch that fails a check changes nothing.

import type { Vma } from '../common/vma';
import { countBits, nextBit, testBit } from './bitmap';
import { checkRuns } from './input-checks';
import type { PageWindows } from './page-windows';
import { invalid } from './store-error';

/** Address windows a session may hold pages in (64 KiB of bitmaps each: 256 MiB at most). */
const MAX_WINDOWS = 4096;

/** A pwrite of data[off, off+len) at pos in a window's chunk file. */
export type PageWrite = [window: number, pos: number, off: number, len: number];

export interface BatchPlan {
  /** Pages in the batch, zero pages included. */
  pages: number;
  zeroPages: number;
  /** (start, count) runs of the data pages, and of the zero pages. */
  dataRuns: number[];
  zeroRuns: number[];
  writes: PageWrite[];
  /** The address range [lo, hi) from the first run's start to the last run's end. */
  lo: number;
  hi: number;
}

/** Check a batch against the layout and the window budget and split it; null when it holds no page. */
export function planBatch(runs: ArrayLike<number>, zeroMap: Uint8Array | null, data: Buffer, layout: Vma[], windows: PageWindows): BatchPlan | null {
  const ps = windows.pageSize;
  const total = checkRuns(runs, ps, layout);
  if (!Buffer.isBuffer(data)) throw invalid('page data must be a Buffer');
  const zm = zeroMap && zeroMap.length > 0 ? zeroMap : null;
  let zeros = 0;
  if (zm) {
    const want = Math.ceil(total / 8);
    if (zm.length !== want) throw invalid(`zero map has ${zm.length} bytes for ${total} pages (expected ${want})`);
    zeros = countBits(zm, 0, total);
    if (countBits(zm, total, zm.length * 8) !== 0) throw invalid('zero map has bits set beyond the last page');
  }
  const expected = (total - zeros) * ps;
  if (data.length !== expected) {
    throw invalid(`page data is ${data.length} bytes; ${total - zeros} non-zero pages of ${ps} bytes need ${expected}`);
  }
  if (total === 0) return null;
  checkWindowBudget(runs, windows);

  const dataRuns: number[] = [];
  const zeroRuns: number[] = [];
  let idx = 0;
  for (let r = 0; r < runs.length; r += 2) {
    const start = runs[r];
    const count = runs[r + 1];
    if (!zm) dataRuns.push(start, count);
    else {
      for (let i = 0; i < count;) {
        const zero = testBit(zm, idx + i);
        const j = nextBit(zm, idx + i, idx + count, !zero) - idx;
        (zero ? zeroRuns : dataRuns).push(start + i * ps, j - i);
        i = j;
      }
    }
    idx += count;
  }
  const writes: PageWrite[] = [];
  let off = 0;
  for (let r = 0; r < dataRuns.length; r += 2) {
    for (const [w, first, k] of windows.split(dataRuns[r], dataRuns[r + 1])) {
      writes.push([w, first * ps, off, k * ps]);
      off += k * ps;
    }
  }
  const lo = runs[0];
  const hi = runs[runs.length - 2] + runs[runs.length - 1] * ps;
  return { pages: total, zeroPages: zeros, dataRuns, zeroRuns, writes, lo, hi };
}

/**
 * Each address window holding pages costs 64 KiB of bitmaps in memory: a real process touches a
 * handful, a hostile layout spreading single pages over the address space could ask for GiBs.
 */
function checkWindowBudget(runs: ArrayLike<number>, windows: PageWindows): void {
  const fresh = new Set<number>();
  for (let r = 0; r < runs.length; r += 2) {
    for (const [w] of windows.split(runs[r], runs[r + 1])) if (!windows.get(w)) fresh.add(w);
  }
  if (windows.size + fresh.size > MAX_WINDOWS) {
    throw invalid(`pages spread over more than ${MAX_WINDOWS} address windows of ${windows.windowBytes / 2 ** 30} GiB`);
  }
}
