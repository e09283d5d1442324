// The staging layer: one RunBatch of addresses in, one PageBatch-shaped StagedBatch out.
//   read     process_vm_readv of every run into one reused Buffer (JS allocates, native fills),
//            on a libuv pool thread; ranges it refuses are retried through /proc/PID/mem
//            (PROT_NONE data), and pages unreadable there too (unmapped meanwhile) are dropped
//            from the batch and reported;
//   hash     one 64-bit hash per page (native hashPages, reused BigUint64Array);
//   zero     a page whose hash is the zero page's AND which compares equal to zeros is a zero page:
//            a bit in zero_map (LSB first, in run order), no bytes; PFNZERO pages are not read;
//   compact  the non-zero pages moved together in place;
//   lz4      one lz4 block of them, tried only when a sample of the batch compresses (RAW when
//            it does not shrink: the compacted read buffer itself is the payload, no copy);
//   record   every page's hash goes into SentPages (the table and the image digest).
// stage() handles one batch at a time; each staged batch holds one PayloadRing slot (its read
// buffer, its lz4 output) that its payload views: the caller owns it until it calls release(),
// after which the slot's buffers are reused (payload-ring.ts). The verify pass (sender/verify.ts)
// reads and compares the frozen target with its own double-buffered loop.

import { performance } from 'node:perf_hooks';
import { logger } from '../../common/log';
import { zeroPageHash } from '../../common/image-digest';
import { encodeLz4Block } from '../../common/lz4-block';
import { hashPages, readPagesAsync } from '../../native';
import { appendPage, sumPages } from '../../common/page-runs';
import type { RunBatch } from '../tracking/run-batch';
import { ProcMem } from './proc-mem';
import { PayloadRing, type PayloadSlot } from './payload-ring';
import { IN_FLIGHT } from '../pacing';
import type { SentPages } from './sent-pages';

const log = logger('stage');

export type Compression = 'lz4' | 'none';

export interface StagerOptions {
  compress: Compression;
  /** Largest batch (pages * page size) stage() accepts: the read buffer's size. */
  maxBatchBytes: number;
  /** Payload slots kept for reuse: the batches the caller holds at once (default PAYLOAD_SLOTS). */
  payloadSlots?: number;
}

/** The pipeline (sender/round-pipeline.ts) holds at most IN_FLIGHT staged batches, the one being staged
 *  included: one slot each, plus one of slack. */
export const PAYLOAD_SLOTS = IN_FLIGHT + 1;

/** lz4 is tried on a batch only if these sample chunks, spread over it, compress below
 *  SAMPLE_RATIO: on incompressible pages lz4 would cost a whole pass over the batch for nothing. */
const SAMPLE_CHUNKS = 16;
const SAMPLE_CHUNK_BYTES = 4096;
const SAMPLE_RATIO = 0.9;

export interface StagedBatch {
  /** (start, pages) pairs of the pages in this batch, each inside one run of the input. */
  runs: number[];
  /** Bit i (byte i/8, LSB first) set = page i (run order) is all zeros, not in the payload. */
  zeroMap: Buffer | null;
  encoding: 'RAW' | 'LZ4';
  /** Bytes of the non-zero pages before compression. */
  rawLength: number;
  /** A view into the batch's ring slot: valid until release(). */
  payload: Buffer;
  /** Hand the payload's buffers back for reuse, once nothing reads them (after the batch was
   *  sent). Idempotent; a batch never released just leaves its buffers to the GC. */
  release(): void;
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
  /** Batches sent RAW without trying lz4: their sample did not compress. */
  lz4Skipped: number;
}

// Segment kinds (a run cut where a zero hint starts or ends).
const SEG_READ = 0;
const SEG_ZERO = 1;

export class BatchStager {
  readonly stats: StagerStats = {
    batches: 0,
    pages: 0,
    zeroPages: 0,
    rawBytes: 0,
    wireBytes: 0,
    unreadablePages: 0,
    procMemPages: 0,
    readSeconds: 0,
    encodeSeconds: 0,
    lz4Skipped: 0,
  };
  private readonly maxPages: number;
  private readonly ring: PayloadRing;
  private readonly sampleOut = Buffer.allocUnsafe(SAMPLE_CHUNK_BYTES);
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
    this.ring = new PayloadRing(opts.maxBatchBytes, opts.payloadSlots ?? PAYLOAD_SLOTS);
    this.hashes = new BigUint64Array(this.maxPages);
    this.outHashes = new BigUint64Array(this.maxPages);
    this.zeroBits = new Uint8Array(Math.ceil(this.maxPages / 8));
    this.zeroHash = zeroPageHash(pageSize);
    this.zeroPage = Buffer.alloc(pageSize);
    this.mem = new ProcMem(pid);
  }

  async stage(batch: RunBatch): Promise<StagedBatch> {
    return this.exclusive(batch, async () => {
      const slot = this.ring.acquire();
      try {
        return await this.stageOne(batch, slot);
      } catch (err) {
        this.ring.release(slot);
        throw err;
      }
    });
  }

  /** Slots of the payload ring made so far (PAYLOAD_SLOTS when every batch is released in time). */
  get payloadSlotsMade(): number {
    return this.ring.stats.slotsMade;
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
  private async readAndHash(batch: RunBatch, buf: Buffer): Promise<{ segs: number[]; bad: Uint8Array }> {
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
      const res = await readPagesAsync(this.pid, ranges, buf.subarray(0, readPages * ps));
      if (res.failed.length > 0) this.retryThroughProcMem(ranges, res.failed, bad, buf);
      this.stats.readSeconds += (performance.now() - t0) / 1000;
      hashPages(buf.subarray(0, readPages * ps), ps, this.hashes);
    }
    return { segs, bad };
  }

  private async stageOne(batch: RunBatch, slot: PayloadSlot): Promise<StagedBatch> {
    const ps = this.pageSize;
    const buf = slot.read;
    const { segs, bad } = await this.readAndHash(batch, buf);
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
          zero = h === this.zeroHash && buf.compare(this.zeroPage, 0, ps, at, at + ps) === 0;
          if (!zero) {
            if (compact !== at) buf.copyWithin(compact, at, at + ps);
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
    const { payload, encoding } = this.encode(slot, rawLength);
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
      const n = sumPages(unreadable);
      st.unreadablePages += n;
      log.debug(`${n} pages could not be read (unmapped meanwhile): dropped from the batch`);
    }
    const release = (): void => this.ring.release(slot);
    return { runs, zeroMap, encoding, rawLength, payload, release, pages, zeroPages, unreadable };
  }

  /** Ranges process_vm_readv refused: read them page by page through /proc/PID/mem. */
  private retryThroughProcMem(ranges: Float64Array, failed: number[], bad: Uint8Array, buf: Buffer): void {
    const ps = this.pageSize;
    const failedSet = new Set(failed);
    for (let k = 0, page = 0; k < ranges.length / 2; k++) {
      const n = ranges[2 * k + 1] / ps;
      if (failedSet.has(k)) {
        const ok = this.mem.readPages(ranges[2 * k], n, ps, buf, page * ps);
        for (let i = 0; i < n; i++) {
          if (ok[i]) this.stats.procMemPages++;
          else bad[page + i] = 1;
        }
      }
      page += n;
    }
  }

  /** The payload: the slot's lz4 output, or (RAW) the compacted read buffer itself, no copy. */
  private encode(slot: PayloadSlot, rawLength: number): { payload: Buffer; encoding: 'RAW' | 'LZ4' } {
    const raw = slot.read.subarray(0, rawLength);
    if (rawLength > 0 && this.opts.compress === 'lz4') {
      if (this.sampleCompresses(raw)) {
        const out = (slot.lz4 ??= Buffer.allocUnsafe(this.ring.slotBytes));
        // Output capped at rawLength: lz4 returns 0 when the block would not be smaller.
        const n = encodeLz4Block(raw, out, rawLength);
        if (n > 0 && n < rawLength) return { payload: out.subarray(0, n), encoding: 'LZ4' };
      } else {
        this.stats.lz4Skipped++;
      }
    }
    return { payload: raw, encoding: 'RAW' };
  }

  /** Whether SAMPLE_CHUNKS chunks spread over `raw` compress below SAMPLE_RATIO (small batches:
   *  always tried, the sample would be most of them). */
  private sampleCompresses(raw: Buffer): boolean {
    const chunk = SAMPLE_CHUNK_BYTES;
    if (raw.length < 2 * SAMPLE_CHUNKS * chunk) return true;
    const step = Math.floor((raw.length - chunk) / (SAMPLE_CHUNKS - 1));
    let out = 0;
    for (let i = 0; i < SAMPLE_CHUNKS; i++) {
      const n = encodeLz4Block(raw.subarray(i * step, i * step + chunk), this.sampleOut, chunk);
      out += n > 0 ? n : chunk; // 0: did not fit, incompressible
    }
    return out < SAMPLE_RATIO * SAMPLE_CHUNKS * chunk;
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
