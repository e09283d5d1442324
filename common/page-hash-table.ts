// A table of one 64-bit content hash per page, and the image digest of the pages it holds kept
// up to date as pages are (re)recorded and forgotten. The sender keeps one for what the receiver
// holds (sender/stage/sent-pages.ts); the receiver one for the data pages it stores
// (receiver/store/running-digest.ts), so that neither ever needs a pass over the whole image to
// know its digest.
//
// Compact: per 2 MiB chunk (512 pages of 4 KiB) one BigUint64Array(512) of hashes and a 512-bit
// bitmap, in a Map keyed by chunk index; a 4 GiB image costs about 8.5 MiB. The digest is the sum
// over held pages of mix64(address, hash) mod 2^64 (common/image-digest.ts): re-recording a page
// subtracts its old term and adds the new one.

import { addDigest, subDigest } from './image-digest';
import { digestPages } from '../native';
import { appendPage, sumPages } from './page-runs';

const CHUNK_PAGES = 512;
const WORDS = CHUNK_PAGES / 32;

interface Chunk {
  hashes: BigUint64Array;
  bits: Uint32Array;
  count: number;
}

export class PageHashTable {
  private readonly chunks = new Map<number, Chunk>();
  private readonly chunkBytes: number;
  private held = 0;
  private sum = 0n;
  // Scratch for digestPages calls (grown as needed, reused).
  private addrs = new Float64Array(1024);
  private oldAddrs = new Float64Array(1024);
  private oldHashes = new BigUint64Array(1024);

  constructor(readonly pageSize: number) {
    this.chunkBytes = CHUNK_PAGES * pageSize;
  }

  /** Image digest of everything held. */
  digest(): bigint {
    return this.sum;
  }

  /** Pages held. */
  pages(): number {
    return this.held;
  }

  has(addr: number): boolean {
    return this.hashAt(addr) !== undefined;
  }

  /** Content hash of the page held at addr, undefined if none. */
  hashAt(addr: number): bigint | undefined {
    const c = this.chunks.get(Math.floor(addr / this.chunkBytes));
    if (!c) return undefined;
    const i = this.indexIn(addr);
    return bit(c.bits, i) ? c.hashes[i] : undefined;
  }

  /**
   * Record pages: `runs` (start, pages) pairs, `hashes` one per page in run order. A page held
   * before is replaced (its digest term swapped).
   */
  record(runs: ArrayLike<number>, hashes: BigUint64Array): void {
    const ps = this.pageSize;
    const total = sumPages(runs);
    if (hashes.length < total) throw new RangeError(`PageHashTable.record: ${total} pages but ${hashes.length} hashes`);
    this.reserve(total);
    let p = 0;
    let old = 0;
    let c: Chunk | undefined;
    let ck = -1;
    for (let r = 0; r < runs.length; r += 2) {
      for (let k = 0, addr = runs[r]; k < runs[r + 1]; k++, addr += ps, p++) {
        const key = Math.floor(addr / this.chunkBytes);
        if (key !== ck) {
          ck = key;
          c = this.chunks.get(key);
          if (!c) this.chunks.set(key, (c = { hashes: new BigUint64Array(CHUNK_PAGES), bits: new Uint32Array(WORDS), count: 0 }));
        }
        const i = this.indexIn(addr);
        if (bit(c!.bits, i)) {
          this.oldAddrs[old] = addr;
          this.oldHashes[old++] = c!.hashes[i];
        } else {
          c!.bits[i >>> 5] |= 1 << (i & 31);
          c!.count++;
          this.held++;
        }
        c!.hashes[i] = hashes[p];
        this.addrs[p] = addr;
      }
    }
    this.sum = addDigest(this.sum, digestPages(this.addrs, hashes, total));
    if (old > 0) this.sum = subDigest(this.sum, digestPages(this.oldAddrs, this.oldHashes, old));
  }

  /**
   * Forget the pages of `runs` (discarded, or their VMA vanished). Returns the runs that were
   * actually held: what a Discard message needs to name.
   */
  forget(runs: ArrayLike<number>): number[] {
    const ps = this.pageSize;
    const out: number[] = [];
    let n = 0;
    const flush = () => {
      if (n > 0) this.sum = subDigest(this.sum, digestPages(this.oldAddrs, this.oldHashes, n));
      n = 0;
    };
    for (let r = 0; r < runs.length; r += 2) {
      const end = runs[r] + runs[r + 1] * ps;
      for (let addr = runs[r]; addr < end;) {
        const key = Math.floor(addr / this.chunkBytes);
        const chunkEnd = Math.min(end, (key + 1) * this.chunkBytes);
        const c = this.chunks.get(key);
        if (!c) {
          addr = chunkEnd; // nothing held in this chunk: skip it whole
          continue;
        }
        for (; addr < chunkEnd; addr += ps) {
          const i = this.indexIn(addr);
          if (!bit(c.bits, i)) continue;
          c.bits[i >>> 5] &= ~(1 << (i & 31));
          c.count--;
          this.held--;
          if (n === this.oldAddrs.length) flush();
          this.oldAddrs[n] = addr;
          this.oldHashes[n++] = c.hashes[i];
          appendPage(out, addr, ps);
        }
        if (c.count === 0) this.chunks.delete(key);
      }
    }
    flush();
    return out;
  }

  /** Every held page as ascending (start, pages) runs. */
  runs(): number[] {
    const out: number[] = [];
    const keys = [...this.chunks.keys()].sort((a, b) => a - b);
    for (const key of keys) this.collect(key, key * this.chunkBytes, (key + 1) * this.chunkBytes, out);
    return out;
  }

  /** Held pages within [start, end) as ascending runs. */
  heldRunsIn(start: number, end: number): number[] {
    const out: number[] = [];
    if (this.chunks.size === 0) return out;
    const first = Math.floor(start / this.chunkBytes);
    const last = Math.floor((end - 1) / this.chunkBytes);
    // A huge sparse range: visit the held chunks rather than every chunk index in it.
    const keys = last - first > this.chunks.size ? [...this.chunks.keys()].filter((k) => k >= first && k <= last).sort((a, b) => a - b) : range(first, last);
    for (const key of keys) this.collect(key, Math.max(start, key * this.chunkBytes), Math.min(end, (key + 1) * this.chunkBytes), out);
    return out;
  }

  private collect(key: number, from: number, to: number, out: number[]): void {
    const c = this.chunks.get(key);
    if (!c) return;
    for (let addr = from; addr < to; addr += this.pageSize) if (bit(c.bits, this.indexIn(addr))) appendPage(out, addr, this.pageSize);
  }

  private indexIn(addr: number): number {
    return Math.floor((addr % this.chunkBytes) / this.pageSize);
  }

  private reserve(n: number): void {
    if (this.addrs.length >= n) return;
    const size = Math.max(n, 2 * this.addrs.length);
    this.addrs = new Float64Array(size);
    this.oldAddrs = new Float64Array(size);
    this.oldHashes = new BigUint64Array(size);
  }
}

const bit = (bits: Uint32Array, i: number): boolean => (bits[i >>> 5] & (1 << (i & 31))) !== 0;

function range(first: number, last: number): number[] {
  const out: number[] = [];
  for (let k = first; k <= last; k++) out.push(k);
  return out;
}
