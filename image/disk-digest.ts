// The data pages of an image read back from disk and hashed (native hashPages), for the digest
// recomputed from disk: `verify`, and the running digest rebuilt when a writer reopens a session
// (running-digest.ts). Summed with the address mix exactly as the sender sums them
// (common/image-digest.ts).
//
// Reads go in spans of up to SPAN_PAGES pages that may include pages that are not data (holes,
// zero pages): one pread per span instead of one per run, so images with interleaved zero pages
// read as fast as dense ones. The next span is read while the current one is hashed.

import { hashPages } from '../native';
import type { PageWindows } from './page-windows';

const SPAN_PAGES = 2048;

interface Span {
  addr: number;
  pages: number;
  /** Data runs inside the span: [first page, count]. */
  runs: [number, number][];
}

/** Reads `pages` pages at addr into buf (throws if the data is not all there). */
export type PageReader = (addr: number, pages: number, buf: Buffer, off: number) => Promise<void>;

/** Receives the data pages of one span: (start, pages) runs and the pages' hashes in run order. */
export type HashSink = (runs: number[], hashes: BigUint64Array) => void;

/** Read and hash every data page the windows hold, span by span, in address order. */
export async function hashDataOnDisk(windows: PageWindows, read: PageReader, sink: HashSink): Promise<void> {
  const ps = windows.pageSize;
  const spans = dataSpans(windows);
  if (spans.length === 0) return;
  const spanHashes = new BigUint64Array(SPAN_PAGES);
  const hashes = new BigUint64Array(SPAN_PAGES);

  const bufs = [Buffer.allocUnsafe(SPAN_PAGES * ps), Buffer.allocUnsafe(SPAN_PAGES * ps)];
  const readSpan = (i: number): Promise<void> | null => {
    if (i >= spans.length) return null;
    const p = read(spans[i].addr, spans[i].pages, bufs[i % 2], 0);
    // A failed read-ahead must not be an unhandled rejection while the current span is hashed.
    p.catch(() => undefined);
    return p;
  };
  let pending = readSpan(0);
  for (let i = 0; i < spans.length; i++) {
    await pending;
    pending = readSpan(i + 1);
    const s = spans[i];
    hashPages(bufs[i % 2].subarray(0, s.pages * ps), ps, spanHashes.subarray(0, s.pages));
    // Keep the data pages' hashes (TypedArray.set: no BigInt per element).
    const runs: number[] = [];
    let k = 0;
    for (const [first, n] of s.runs) {
      hashes.set(spanHashes.subarray(first, first + n), k);
      runs.push(s.addr + first * ps, n);
      k += n;
    }
    sink(runs, hashes.subarray(0, k));
  }
}

/** Group data runs into spans of at most SPAN_PAGES pages, never across a window (chunk file). */
function dataSpans(windows: PageWindows): Span[] {
  const ps = windows.pageSize;
  const spans: Span[] = [];
  windows.forEachRun('data', (addr, n) => {
    for (let i = 0; i < n;) {
      const a = addr + i * ps;
      const last = spans[spans.length - 1];
      const at = last ? (a - last.addr) / ps : SPAN_PAGES;
      if (last && at < SPAN_PAGES && Math.floor(a / windows.windowBytes) === Math.floor(last.addr / windows.windowBytes)) {
        const k = Math.min(SPAN_PAGES - at, n - i);
        last.runs.push([at, k]);
        last.pages = at + k;
        i += k;
      } else {
        const k = Math.min(SPAN_PAGES, n - i);
        spans.push({ addr: a, pages: k, runs: [[0, k]] });
        i += k;
      }
    }
  });
  return spans;
}
