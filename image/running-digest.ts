// The image digest of what a session holds, kept up to date as pages arrive, so that a commit —
// inside the migration's downtime — compares the sender's digest with it instead of reading the
// whole image back (277-327 ms for 1 GiB). Reading back stays the job of `receiver verify`, the
// storage-integrity check, off the downtime path.
//
// Data pages: their content hashes in a PageHashTable (common/page-hash-table.ts, ~2 MiB per GiB
// held), hashed from the bytes writePages has anyway. Zero pages need no table entry (their hash
// is zeroPageHash): a sum of their digest terms and a count are enough, so the zero bits a sender
// sends almost for free cost no memory here. Every change of a page's kind goes through this
// class, which subtracts the old term (data hash or zero) before the window bitmaps change.
//
// Nothing here is persisted: a writer reopening a session (resume after a crash or a broken
// stream) rebuilds it once from the pages on disk (fromDisk) at its first round or commit — which
// is also how verify and SessionReader.digest compute the digest from disk, in a fresh instance.

import type { Vma } from '../common/vma';
import { addDigest, digestOf, subDigest, zeroPageHash } from '../common/image-digest';
import { PageHashTable } from '../common/page-hash-table';
import { hashDataOnDisk, type PageReader } from './disk-digest';
import type { PageWindows } from './page-windows';

/** Zero-page addresses gathered per digestPages call. */
const SPAN = 2048;

export class RunningDigest {
  /** Content hashes of the data pages. */
  private readonly data: PageHashTable;
  /** Σ digest terms of the zero pages, and how many there are. */
  private zeroSum = 0n;
  private zeroPages = 0;
  private readonly zeros: ZeroTerms;

  constructor(private readonly windows: PageWindows) {
    this.data = new PageHashTable(windows.pageSize);
    this.zeros = new ZeroTerms(windows.pageSize);
  }

  /** Read every data page back from disk and hash it: the digest of what is on disk now. */
  static async fromDisk(windows: PageWindows, read: PageReader): Promise<RunningDigest> {
    const d = new RunningDigest(windows);
    await hashDataOnDisk(windows, read, (runs, hashes) => d.data.record(runs, hashes));
    windows.forEachRun('zero', (addr, n) => d.zeros.add(addr, n));
    const z = d.zeros.take();
    d.zeroSum = z.sum;
    d.zeroPages = z.pages;
    return d;
  }

  /** Digest and page count (data and zero pages) of what the windows hold. */
  digest(): { digest: bigint; pages: number } {
    return { digest: addDigest(this.data.digest(), this.zeroSum), pages: this.data.pages() + this.zeroPages };
  }

  counts(): { dataPages: number; zeroPages: number } {
    return { dataPages: this.data.pages(), zeroPages: this.zeroPages };
  }

  /** The pages of `runs` ((start, pages) pairs, ascending) now hold data with these hashes (run order). */
  markData(runs: ArrayLike<number>, hashes: BigUint64Array): void {
    if (runs.length === 0) return;
    this.unzero(runs);
    for (let r = 0; r < runs.length; r += 2) this.windows.markData(runs[r], runs[r + 1]);
    this.data.record(runs, hashes);
  }

  /** The pages of `runs` are now zero pages. */
  markZero(runs: ArrayLike<number>): void {
    if (runs.length === 0) return;
    this.data.forget(runs);
    this.unzero(runs);
    for (let r = 0; r < runs.length; r += 2) {
      this.zeros.add(runs[r], runs[r + 1]);
      this.windows.markZero(runs[r], runs[r + 1]);
    }
    const z = this.zeros.take();
    this.zeroSum = addDigest(this.zeroSum, z.sum);
    this.zeroPages += z.pages;
  }

  /** Forget pages (discard); returns how many were held. */
  clear(addr: number, pages: number): number {
    this.forget(addr, pages);
    return this.windows.clear(addr, pages);
  }

  /** Drop every page outside the layout; returns how many were held. */
  dropOutside(layout: Vma[]): number {
    return this.windows.dropOutside(layout, (addr, pages) => this.forget(addr, pages));
  }

  /** Subtract the terms of whatever [addr, +pages) holds (call before the bitmaps are cleared). */
  private forget(addr: number, pages: number): void {
    const run = [addr, pages];
    this.data.forget(run);
    this.unzero(run);
  }

  /** Subtract the terms of the pages of `runs` that are zero pages now (before they change). */
  private unzero(runs: ArrayLike<number>): void {
    const ps = this.windows.pageSize;
    for (let r = 0; r < runs.length; r += 2) {
      this.windows.forEachRun('zero', (addr, n) => this.zeros.add(addr, n), runs[r], runs[r] + runs[r + 1] * ps);
    }
    const z = this.zeros.take();
    this.zeroSum = subDigest(this.zeroSum, z.sum);
    this.zeroPages -= z.pages;
  }
}

/** Σ mix64(addr, zeroPageHash) over the zero-page runs added since the last take(). */
class ZeroTerms {
  private readonly addrs = new Float64Array(SPAN);
  private readonly hashes: BigUint64Array;
  private k = 0;
  private sum = 0n;
  private pages = 0;

  constructor(private readonly pageSize: number) {
    this.hashes = new BigUint64Array(SPAN).fill(zeroPageHash(pageSize));
  }

  add(addr: number, pages: number): void {
    for (let i = 0; i < pages; i++) {
      this.addrs[this.k++] = addr + i * this.pageSize;
      if (this.k === SPAN) this.flush();
    }
    this.pages += pages;
  }

  take(): { sum: bigint; pages: number } {
    this.flush();
    const t = { sum: this.sum, pages: this.pages };
    this.sum = 0n;
    this.pages = 0;
    return t;
  }

  private flush(): void {
    if (this.k > 0) this.sum = addDigest(this.sum, digestOf(this.addrs, this.hashes, this.k));
    this.k = 0;
  }
}
