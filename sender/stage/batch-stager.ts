// The staging layer: one RunBatch of addresses in, one PageBatch-shaped StagedBatch out.
//   read     process_vm_readv of every run into one reused Buffer (JS allocates, native fills),
//            on a libuv pool thread; ranges it refuses are retried through /proc/PID/mem
//            (PROT_NONE data), and pages unreadable there too (unmapped meanwhile) are dropped
//            from the batch and reported;
//   hash     one 64-bit hash per page (native hashPages, reused BigUint64Array);
//   zero     a page whose hash is the zero page's AND which compares equal to zeros is a zero page:
//            a bit in zero_map (LSB first, in run order), no bytes; PFNZERO pages are not read;
//   compact  the non-zero pages moved together in place;
//   lz4      one lz4 block of them (RAW when it does not shrink);
//   record   every page's hash goes into SentPages (the table and the image digest).
// stage() handles one batch at a time (its read buffer is reused); the payload it returns is its
// own Buffer, owned by the caller until sent. mismatches() is the verify pass's read + hash +
// compare against SentPages, through the same reader (PROT_NONE data included).

import { performance } from 'node:perf_hooks';
import { logger } from '../../common/log';
import { zeroPageHash } from '../../common/image-digest';
import { hashPages, readPagesAsync } from '../../native';
import { appendPage, type RunBatch } from '../tracking/run-batch';
import { ProcMem } from './proc-mem';
import type { SentPages } from './sent-pages';

// The package ships no types; these are the calls used here.
// eslint-disable-next-line @typescript-eslint/no-var-requires
const lz4: { encodeBlock(input: Buffer, output: Buffer, outStart?: number, outEnd?: number): number } = require('lz4');

const log = logger('stage');

export type Compression = 'lz4' | 'none';

export interface StagerOptions {
  compress: Compression;
  /** Largest batch (pages * page size) stage() accepts: the read buffer's size. */
  maxBatchBytes: number;
}

export interface StagedBatch {
  /** (start, pages) pairs of the pages in this batch, each inside one run of the input. */
  runs: number[];
  /** Bit i (byte i/8, LSB first) set = page i (run order) is all zeros, not in the payload. */
  zeroMap: Buffer | null;
  encoding: 'RAW' | 'LZ4';
  /** Bytes of the non-zero pages before compression. */
  rawLength: number;
  payload: Buffer;
  /** Pages in runs (zero pages included). */
  pages: number;
  zeroPages: number;
  /** (start, pages) runs of the input that could not be read (unmapped meanwhile): not in runs. */
  unreadable: number[];
}

export interface StagerStats {
  batches: number;
  pages: number;
  zeroPages: number;
  rawBytes: number;
  wireBytes: number;
  unreadablePages: number;
  /** Pages read through /proc/PID/mem because process_vm_readv refused them. */
  procMemPages: number;
  /** Reading and hashing. */
  readSeconds: number;
  /** Zero detection, compaction and compression. */
  encodeSeconds: number;
}

// Segment kinds (a run cut where a zero hint starts or ends).
const SEG_READ = 0;
const SEG_ZERO = 1;

export class BatchStager {
  readonly stats: StagerStats = { batches: 0, pages: 0, zeroPages: 0, rawBytes: 0, wireBytes: 0, unreadablePages: 0, procMemPages: 0, readSeconds: 0, encodeSeconds: 0 };
  private readonly maxPages: number;
  private readonly buf: Buffer;
  private readonly hashes: BigUint64Array;
  private readonly outHashes: BigUint64Array;
  private readonly zeroBits: Uint8Array;
  private readonly zeroHash: bigint;
  private readonly zeroPage: Buffer;
  private readonly mem: ProcMem;
  private busy = false;

  constructor(
    readonly pid: number,
    readonly pageSize: number,
    private readonly opts: StagerOptions,
    private readonly sent: SentPages,
  ) {
    if (!Number.isInteger(opts.maxBatchBytes) || opts.maxBatchBytes < pageSize || opts.maxBatchBytes % pageSize !== 0) {
      throw new RangeError(`maxBatchBytes must be a positive multiple of the page size, got ${opts.maxBatchBytes}`);
    }
    this.maxPages = opts.maxBatchBytes / pageSize;
    this.buf = Buffer.allocUnsafe(opts.maxBatchBytes);
    this.hashes = new BigUint64Array(this.maxPages);
    this.outHashes = new BigUint64Array(this.maxPages);
    this.zeroBits = new Uint8Array(Math.ceil(this.maxPages / 8));
    this.zeroHash = zeroPageHash(pageSize);
    this.zeroPage = Buffer.alloc(pageSize);
    this.mem = new ProcMem(pid);
  }

  async stage(batch: RunBatch): Promise<StagedBatch> {
    return this.exclusive(batch, () => this.stageOne(batch));
  }

  /**
   * Verify (target frozen): read and hash the batch's pages and compare each with what `sent`
   * says the receiver holds (a page it does not hold must be all zeros: an anonymous hole).
   * Returns the runs that differ, and those that could not be read.
   */
  async mismatches(batch: RunBatch, sent: SentPages): Promise<{ differ: number[]; unreadable: number[] }> {
    return this.exclusive(batch, async () => {
      const ps = this.pageSize;
      const { segs, bad } = await this.readAndHash(batch);
      const differ: number[] = [];
      const unreadable: number[] = [];
      for (let s = 0, j = 0; s < segs.length; s += 4) {
        for (let k = 0, addr = segs[s]; k < segs[s + 1]; k++, addr += ps) {
          let h = this.zeroHash;
          if (segs[s + 2] === SEG_READ && bad[j++]) {
            appendPage(unreadable, addr, ps);
            continue;
          }
          if (segs[s + 2] === SEG_READ) h = this.hashes[j - 1];
          if ((sent.hashAt(addr) ?? this.zeroHash) !== h) appendPage(differ, addr, ps);
        }
      }
      return { differ, unreadable };
    });
  }

  close(): void {
    this.mem.close();
  }

  private async exclusive<T>(batch: RunBatch, fn: () => Promise<T>): Promise<T> {
    if (batch.pages > this.maxPages) throw new RangeError(`batch of ${batch.pages} pages exceeds the stager's ${this.maxPages}`);
    if (this.busy) throw new Error('BatchStager: one batch at a time (the read buffer is reused)');
    this.busy = true;
    try {
      return await fn();
    } finally {
      this.busy = false;
    }
  }

  /**
   * Read every non-hinted segment of the batch back to back into buf and hash each page into
   * `hashes`. `bad[j]` = page j of buf could not be read (unmapped meanwhile).
   */
  private async readAndHash(batch: RunBatch): Promise<{ segs: number[]; bad: Uint8Array }> {
    const ps = this.pageSize;
    const segs = cutSegments(batch, ps);
    let readCount = 0;
    for (let s = 0; s < segs.length; s += 4) if (segs[s + 2] === SEG_READ) readCount++;
    const ranges = new Float64Array(2 * readCount);
    let readPages = 0;
    for (let s = 0, k = 0; s < segs.length; s += 4) {
      if (segs[s + 2] !== SEG_READ) continue;
      ranges[k++] = segs[s];
      ranges[k++] = segs[s + 1] * ps;
      readPages += segs[s + 1];
    }
    const bad = new Uint8Array(readPages);
    if (readPages > 0) {
      const t0 = performance.now();
      const res = await readPagesAsync(this.pid, ranges, this.buf.subarray(0, readPages * ps));
      if (res.failed.length > 0) this.retryThroughProcMem(ranges, res.failed, bad);
      this.stats.readSeconds += (performance.now() - t0) / 1000;
      hashPages(this.buf.subarray(0, readPages * ps), ps, this.hashes);
    }
    return { segs, bad };
  }

  private async stageOne(batch: RunBatch): Promise<StagedBatch> {
    const ps = this.pageSize;
    const { segs, bad } = await this.readAndHash(batch);
    const t1 = performance.now();

    // zero detection and compaction, in run order
    const runs: number[] = [];
    const unreadable: number[] = [];
    let pages = 0;
    let zeroPages = 0;
    let compact = 0; // bytes of non-zero pages gathered at the front of buf
    let j = 0; // page index into buf
    let newRun = true;
    for (let s = 0; s < segs.length; s += 4) {
      if (segs[s + 3] === 1) newRun = true; // first segment of an input run
      const kind = segs[s + 2];
      for (let k = 0, addr = segs[s]; k < segs[s + 1]; k++, addr += ps) {
        let h = this.zeroHash;
        let zero = true;
        if (kind === SEG_READ) {
          const at = j * ps;
          if (bad[j++]) {
            appendPage(unreadable, addr, ps);
            newRun = true;
            continue;
          }
          h = this.hashes[j - 1];
          zero = h === this.zeroHash && this.buf.compare(this.zeroPage, 0, ps, at, at + ps) === 0;
          if (!zero) {
            if (compact !== at) this.buf.copyWithin(compact, at, at + ps);
            compact += ps;
          }
        }
        if (zero) {
          this.zeroBits[pages >>> 3] |= 1 << (pages & 7);
          zeroPages++;
        }
        this.outHashes[pages++] = h;
        if (newRun) runs.push(addr, 1);
        else runs[runs.length - 1]++;
        newRun = false;
      }
    }

    // compress
    const rawLength = compact;
    const { payload, encoding } = this.encode(rawLength);
    let zeroMap: Buffer | null = null;
    if (zeroPages > 0) zeroMap = Buffer.from(this.zeroBits.subarray(0, Math.ceil(pages / 8)));
    this.zeroBits.fill(0, 0, Math.ceil(pages / 8));

    // what the receiver will hold
    if (pages > 0) this.sent.record(runs, this.outHashes);

    const st = this.stats;
    st.batches++;
    st.pages += pages;
    st.zeroPages += zeroPages;
    st.rawBytes += rawLength;
    st.wireBytes += payload.length;
    st.encodeSeconds += (performance.now() - t1) / 1000;
    if (unreadable.length > 0) {
      let n = 0;
      for (let i = 1; i < unreadable.length; i += 2) n += unreadable[i];
      st.unreadablePages += n;
      log.debug(`${n} pages could not be read (unmapped meanwhile): dropped from the batch`);
    }
    return { runs, zeroMap, encoding, rawLength, payload, pages, zeroPages, unreadable };
  }

  /** Ranges process_vm_readv refused: read them page by page through /proc/PID/mem. */
  private retryThroughProcMem(ranges: Float64Array, failed: number[], bad: Uint8Array): void {
    const ps = this.pageSize;
    const failedSet = new Set(failed);
    for (let k = 0, page = 0; k < ranges.length / 2; k++) {
      const n = ranges[2 * k + 1] / ps;
      if (failedSet.has(k)) {
        const ok = this.mem.readPages(ranges[2 * k], n, ps, this.buf, page * ps);
        for (let i = 0; i < n; i++) {
          if (ok[i]) this.stats.procMemPages++;
          else bad[page + i] = 1;
        }
      }
      page += n;
    }
  }

  private encode(rawLength: number): { payload: Buffer; encoding: 'RAW' | 'LZ4' } {
    const out = Buffer.allocUnsafe(rawLength);
    if (rawLength > 0 && this.opts.compress === 'lz4') {
      // Output capped at rawLength: lz4 returns 0 when the block would not be smaller.
      const n = lz4.encodeBlock(this.buf.subarray(0, rawLength), out, 0, rawLength);
      if (n > 0 && n < rawLength) {
        // Keep little memory per batch in flight: copy a well-compressed block out of `out`.
        return { payload: n <= rawLength / 2 ? Buffer.from(out.subarray(0, n)) : out.subarray(0, n), encoding: 'LZ4' };
      }
    }
    this.buf.copy(out, 0, 0, rawLength);
    return { payload: out, encoding: 'RAW' };
  }
}

/**
 * Cut the batch's runs where zero hints start and end: flat (start, pages, kind, firstOfRun)
 * quadruples, in run order.
 */
export function cutSegments(batch: RunBatch, ps: number): number[] {
  const { runs, zeroHint: zh } = batch;
  const segs: number[] = [];
  let z = 0;
  for (let r = 0; r < runs.length; r += 2) {
    let s = runs[r];
    let n = runs[r + 1];
    let first = 1;
    while (n > 0) {
      while (zh && z < zh.length && zh[z] + zh[z + 1] * ps <= s) z += 2;
      let k: number;
      let kind: number;
      if (zh && z < zh.length && zh[z] <= s) {
        k = Math.min(n, (zh[z] + zh[z + 1] * ps - s) / ps);
        kind = SEG_ZERO;
      } else {
        k = zh && z < zh.length ? Math.min(n, (zh[z] - s) / ps) : n;
        kind = SEG_READ;
      }
      segs.push(s, k, kind, first);
      first = 0;
      s += k * ps;
      n -= k;
    }
  }
  return segs;
}
