// The image digest recomputed from what is on disk (commit and verify): for data pages, the
// native hash of the bytes read back from the chunk files; for zero pages, the zero-page hash;
// summed with the address mix exactly as the sender sums them (common/image-digest.ts).
//
// Reads go in spans of up to SPAN_PAGES pages that may include pages that are not data (holes,
// zero pages): one pread per span instead of one per run, so images with interleaved zero pages
// read as fast as dense ones. The next span is read while the current one is hashed.

import { digestOf, zeroPageHash } from '../../common/image-digest';
import { hashPages } from '../../native';
import type { PageWindows } from './page-windows';

const SPAN_PAGES = 2048;
const MASK64 = (1n << 64n) - 1n;

interface Span {
  addr: number;
  pages: number;
  /** Data runs inside the span: [first page, count]. */
  runs: [number, number][];
}

/** Reads `pages` pages at addr into buf (throws if the data is not all there). */
export type PageReader = (addr: number, pages: number, buf: Buffer, off: number) => Promise<void>;

export async function digestFromDisk(windows: PageWindows, read: PageReader): Promise<{ digest: bigint; pages: number }> {
  const ps = windows.pageSize;
  const spans = dataSpans(windows);
  const spanHashes = new BigUint64Array(SPAN_PAGES);
  const hashes = new BigUint64Array(SPAN_PAGES);
  const addrs = new Float64Array(SPAN_PAGES);
  let sum = 0n;
  let pages = 0;

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
    let k = 0;
    for (const [first, n] of s.runs) {
      hashes.set(spanHashes.subarray(first, first + n), k);
      for (let j = 0; j < n; j++) addrs[k + j] = s.addr + (first + j) * ps;
      k += n;
    }
    sum += digestOf(addrs, hashes, k);
    pages += k;
  }

  // Zero pages: addresses gathered across runs, one native call per SPAN_PAGES of them.
  hashes.fill(zeroPageHash(ps));
  let k = 0;
  windows.forEachRun('zero', (addr, n) => {
    for (let i = 0; i < n; i++) {
      addrs[k++] = addr + i * ps;
      if (k === SPAN_PAGES) {
        sum += digestOf(addrs, hashes, k);
        pages += k;
        k = 0;
      }
    }
  });
  sum += digestOf(addrs, hashes, k);
  pages += k;
  return { digest: sum & MASK64, pages };
}

/** Group data runs into spans of at most SPAN_PAGES pages, never across a window (chunk file). */
function dataSpans(windows: PageWindows): Span[] {
  const ps = windows.pageSize;
  const spans: Span[] = [];
  windows.forEachRun('data', (addr, n) => {
    for (let i = 0; i < n; ) {
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
