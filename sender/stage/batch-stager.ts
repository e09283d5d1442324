// The staging layer: one RunBatch of addresses in, one PageBatch-shaped StagedBatch out. The byte
// work is one native call on a libuv pool thread (native stagePages, docs/design.md, Page path):
//   read     process_vm_readv of every run into the slot's read buffer; ranges it refuses are
//            read through /proc/PID/mem (PROT_NONE data), and pages unreadable there too
//            (unmapped meanwhile) are dropped from the batch and reported;
//   hash     one 64-bit hash per page;
//   zero     a page whose hash is the zero page's AND which compares equal to zeros is a zero page:
//            a bit in zero_map (LSB first, in run order), no bytes; PFNZERO pages are not read;
//   compact  the non-zero pages moved together in place;
//   lz4      one lz4 block of them, tried only when a sample of the batch compresses below
//            LZ4_SAMPLE_RATIO, or FROZEN_LZ4_SAMPLE_RATIO while the target is frozen (RAW when it
//            does not shrink: the compacted read buffer itself is the payload, no copy).
// Back on the JS thread, the batch's runs and zero map are built from the per-page flags, and
// every page's hash goes into SentPages (the table and the image digest).
// stage() handles one batch at a time; each staged batch holds one PayloadRing slot (its read
// buffer, its lz4 output, its hash and flag arrays) that its payload views: the caller owns it
// until it calls release(), after which the slot's buffers are reused (payload-ring.ts). The
// verify pass (sender/verify.ts) reads and compares the frozen target with its own loop.

import { performance } from 'node:perf_hooks';
import { logger } from '../../common/log';
import { zeroPageHash } from '../../common/image-digest';
import { StageFlag, stagePages } from '../../native';
import { PAGES_HEADER_ROOM } from '../../proto/page-codec';
import { appendPage, sumPages } from '../../common/page-runs';
import type { RunBatch } from '../tracking/run-batch';
import { ProcMem } from './proc-mem';
import { PayloadRing, type PayloadSlot } from './payload-ring';
import { IN_FLIGHT, STAGE_DEPTH } from '../pacing';
import type { StageOutcome } from '../../native';
import type { SentPages } from './sent-pages';

const log = logger('stage');
const noop = (): void => undefined;

export type Compression = 'lz4' | 'none';

/** lz4 is tried on a batch whose sample compresses below this (pre-copy: bytes matter). */
export const LZ4_SAMPLE_RATIO = 0.9;
/**
 * The same while the target is frozen, where time matters, not bytes: lz4 runs at a few hundred
 * MB/s per core here, so a batch that shrinks only to 0.9 costs more to compress than the bytes
 * it saves take on any link faster than a few tens of MB/s (docs/design.md, Final round). Below
 * half, compressing still pays on links up to about half lz4's speed.
 */
export const FROZEN_LZ4_SAMPLE_RATIO = 0.5;

export interface StagerOptions {
  compress: Compression;
  /** Largest batch (pages * page size) stage() accepts: the read buffer's size. */
  maxBatchBytes: number;
  /** Payload slots kept for reuse: the batches the caller holds at once (default PAYLOAD_SLOTS). */
  payloadSlots?: number;
}

/** The pipeline (sender/round-pipeline.ts) holds at most IN_FLIGHT staged batches waiting for the
 *  transfer and STAGE_DEPTH being staged: one slot each, plus one of slack. */
export const PAYLOAD_SLOTS = IN_FLIGHT + STAGE_DEPTH + 1;

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
  /** Free bytes before payload, in the slot, that the link may write the message header into. */
  payloadHeadroom: number;
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
  /** The native part (read, hash, zero pages, compaction, lz4), wall time on the pool thread. */
  readSeconds: number;
  /** The JS part on the main thread (runs, zero map, SentPages). */
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
  private readonly outHashes: BigUint64Array;
  private readonly zeroBits: Uint8Array;
  private readonly zeroHash: bigint;
  private mem: ProcMem;
  private lz4SampleRatio = LZ4_SAMPLE_RATIO;
  /** Settles when the last batch handed to stage() is done (ordering of overlapping calls). */
  private lastStaged: Promise<void> = Promise.resolve();

  constructor(
    private pid: number,
    readonly pageSize: number,
    private readonly opts: StagerOptions,
    private readonly sent: SentPages,
  ) {
    if (!Number.isInteger(opts.maxBatchBytes) || opts.maxBatchBytes < pageSize || opts.maxBatchBytes % pageSize !== 0) {
      throw new RangeError(`maxBatchBytes must be a positive multiple of the page size, got ${opts.maxBatchBytes}`);
    }
    this.maxPages = opts.maxBatchBytes / pageSize;
    this.ring = new PayloadRing(opts.maxBatchBytes, opts.payloadSlots ?? PAYLOAD_SLOTS, pageSize, PAGES_HEADER_ROOM);
    this.outHashes = new BigUint64Array(this.maxPages);
    this.zeroBits = new Uint8Array(Math.ceil(this.maxPages / 8));
    this.zeroHash = zeroPageHash(pageSize);
    this.mem = new ProcMem(pid);
  }

  /** The target is frozen (the stop-and-copy round) or runs: which lz4 gate applies. */
  set frozen(on: boolean) {
    this.lz4SampleRatio = on ? FROZEN_LZ4_SAMPLE_RATIO : LZ4_SAMPLE_RATIO;
  }

  /** Read pages from another process from now on: the verify's snapshot of the frozen target
   *  (its pages re-sent from there; docs/design.md, Verify off the freeze), then the target again.
   *  Call between rounds only (nothing staged in flight). */
  readFrom(pid: number): void {
    if (pid === this.pid) return;
    this.mem.close();
    this.pid = pid;
    this.mem = new ProcMem(pid);
  }

  /**
   * Stage one batch. Calls may overlap (the pipeline keeps STAGE_DEPTH in flight): the byte work
   * of each runs at once on the pool, and they complete in call order, so SentPages records and
   * the caller sees batches in the order the scan gave them.
   */
  async stage(batch: RunBatch): Promise<StagedBatch> {
    if (batch.pages > this.maxPages) throw new RangeError(`batch of ${batch.pages} pages exceeds the stager's ${this.maxPages}`);
    const before = this.lastStaged;
    const slot = this.ring.acquire();
    const done = this.stageOne(batch, slot, before);
    this.lastStaged = done.then(noop, noop);
    try {
      return await done;
    } catch (err) {
      this.ring.release(slot);
      throw err;
    }
  }

  /** Slots of the payload ring made so far (PAYLOAD_SLOTS when every batch is released in time). */
  get payloadSlotsMade(): number {
    return this.ring.stats.slotsMade;
  }

  close(): void {
    this.mem.close();
  }

  /**
   * The native part: read every non-hinted segment of the batch back to back into the slot, hash,
   * flag and gather its pages, compress them when it pays.
   */
  private async readAndEncode(segs: number[], slot: PayloadSlot): Promise<StageOutcome | null> {
    const ps = this.pageSize;
    let readCount = 0;
    for (let s = 0; s < segs.length; s += 4) if (segs[s + 2] === SEG_READ) readCount++;
    if (readCount === 0) return null;
    const ranges = new Float64Array(2 * readCount);
    for (let s = 0, k = 0; s < segs.length; s += 4) {
      if (segs[s + 2] !== SEG_READ) continue;
      ranges[k++] = segs[s];
      ranges[k++] = segs[s + 1] * ps;
    }
    const lz4Out = this.opts.compress === 'lz4' ? this.ring.lz4Of(slot) : null;
    const t0 = performance.now();
    const out = await stagePages({
      pid: this.pid,
      memFd: this.mem.fd(),
      ranges,
      buf: slot.read,
      lz4Out,
      pageSize: ps,
      hashes: slot.hashes,
      flags: slot.flags,
      lz4SampleRatio: this.lz4SampleRatio,
    });
    this.stats.readSeconds += (performance.now() - t0) / 1000;
    return out;
  }

  private async stageOne(batch: RunBatch, slot: PayloadSlot, before: Promise<void>): Promise<StagedBatch> {
    const ps = this.pageSize;
    const segs = cutSegments(batch, ps);
    const out = await this.readAndEncode(segs, slot);
    await before; // the batches handed in earlier are finished first (their SentPages records)
    const t1 = performance.now();

    // runs and zero map, in run order
    const runs: number[] = [];
    const unreadable: number[] = [];
    let pages = 0;
    let zeroPages = 0;
    let j = 0; // page index among the pages read
    let newRun = true;
    for (let s = 0; s < segs.length; s += 4) {
      if (segs[s + 3] === 1) newRun = true; // first segment of an input run
      const read = segs[s + 2] === SEG_READ;
      for (let k = 0, addr = segs[s]; k < segs[s + 1]; k++, addr += ps) {
        let h = this.zeroHash;
        let zero = true;
        if (read) {
          const flag = slot.flags[j];
          h = slot.hashes[j++];
          if (flag === StageFlag.Unreadable) {
            appendPage(unreadable, addr, ps);
            newRun = true;
            continue;
          }
          zero = flag === StageFlag.Zero;
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

    // the payload: the slot's lz4 block, or (RAW) the compacted read buffer itself, no copy
    const rawLength = out?.dataBytes ?? 0;
    const lz4 = out !== null && out.lz4Bytes > 0;
    const payload = lz4 ? slot.lz4!.subarray(0, out.lz4Bytes) : slot.read.subarray(0, rawLength);
    const encoding = lz4 ? 'LZ4' : 'RAW';
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
    st.procMemPages += out?.procMemPages ?? 0;
    if (out?.lz4Skipped) st.lz4Skipped++;
    st.encodeSeconds += (performance.now() - t1) / 1000;
    if (unreadable.length > 0) {
      const n = sumPages(unreadable);
      st.unreadablePages += n;
      log.debug(`${n} pages could not be read (unmapped meanwhile): dropped from the batch`);
    }
    const release = (): void => this.ring.release(slot);
    return { runs, zeroMap, encoding, rawLength, payload, payloadHeadroom: this.ring.headroom, release, pages, zeroPages, unreadable };
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
