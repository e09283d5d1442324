// One round's data path: scan → stage (read, hash, zero detection, lz4) → transfer, overlapped.
// While batch k is on its way to the receiver, batch k+1 is being scanned and staged; at most
// PACING[kind].inFlight batches are staged-but-not-accepted, and the transfer's sendBatch() resolves only
// once a batch is accepted (gRPC: written to HTTP/2, see sender/transfer/migration-link.ts maxQueuedBytes), so the
// sender's memory stays bounded by a few batches whatever the target's size, and a slow link
// slows the scan instead of filling RAM. Each staged batch's payload lives in one of the stager's
// reused ring slots; the pipeline owns it from stage() until that batch's sendBatch() resolves,
// then release()s it. Over gRPC a batch leaves from its slot with no copy (grpc-framing.ts), so
// it leaves no 4 MiB garbage behind for the GC either.

import { logger } from '../common/log';
import { splitRunBatch, type RunBatch } from './tracking/run-batch';
import type { BatchStager, StagedBatch } from './stage/batch-stager';
import type { PageTransfer } from './transfer/page-transfer';
import { PACING, STAGE_DEPTH, type Pacing } from './pacing';
import { LANE_SPAN_BYTES } from '../proto/lanes';

const log = logger('pipeline');

/** Pages staged and sent as one batch at most: scan batches (--max-pages, 4096 by default) are cut
 *  to this. Measured on a 1 GiB target over gRPC: 4 MiB batches move ~290 MiB/s with ~160 MB of
 *  sender RSS, 16 MiB batches ~210 MiB/s with ~350 MB (cache misses, buffers waiting for GC). */
export const STAGE_PAGES = 1024;

const EMPTY = Buffer.alloc(0);

export interface RoundTotals {
  /** Pages the scan returned, zero pages included. */
  dirtyPages: number;
  zeroPages: number;
  /** Page bytes read and sent (zero pages excluded), before compression. */
  rawBytes: number;
  /** Payload bytes sent. */
  wireBytes: number;
  batches: number;
  /** (start, pages) runs that could not be read (unmapped or made unreadable meanwhile). */
  unreadable: number[];
}

export const emptyTotals = (): RoundTotals => ({ dirtyPages: 0, zeroPages: 0, rawBytes: 0, wireBytes: 0, batches: 0, unreadable: [] });

export interface PipelineOptions {
  signal?: AbortSignal;
  /** Default: PACING.grpc. */
  pacing?: Pacing;
  /** Called after each accepted batch with the round's totals so far (progress bar). */
  onProgress?(t: RoundTotals): void;
}

/** Run every batch of `source` through the stager into the transfer; resolves when all were
 *  accepted (not yet durable: endRound() waits for that). */
export async function runPipeline(
  source: AsyncIterable<RunBatch> | Iterable<RunBatch>,
  stager: BatchStager,
  transfer: PageTransfer,
  opts: PipelineOptions = {},
): Promise<RoundTotals> {
  const totals = emptyTotals();
  const inFlight: Promise<void>[] = [];
  const pacing = opts.pacing ?? PACING.grpc;
  // Over several lanes, a batch holds pages of one lane only (proto/lanes.ts).
  const spanBytes = transfer.lanes > 1 ? LANE_SPAN_BYTES : 0;
  let failure: unknown = null;

  const send = (b: StagedBatch): Promise<void> => {
    totals.batches++;
    const batch = {
      runs: b.runs,
      zeroMap: b.zeroMap ?? EMPTY,
      encoding: b.encoding,
      rawLength: b.rawLength,
      payload: b.payload,
      payloadHeadroom: b.payloadHeadroom,
    };
    const p = transfer.sendBatch(batch).then(() => {
      // Accepted: the transfer no longer reads the payload (grpc: written to the socket; local: written),
      // so its ring slot may take the next batch. A rejected batch keeps its slot (left to the
      // GC): a failed transfer might still hold the payload.
      b.release();
      totals.zeroPages += b.zeroPages;
      totals.rawBytes += b.rawLength;
      totals.wireBytes += b.payload.length;
      opts.onProgress?.(totals);
    });
    // Remember the first failure now, so that a rejection while we are busy staging is never
    // "unhandled"; it is rethrown at the next window check.
    p.catch((err) => {
      failure ??= err;
    });
    return p;
  };

  // Up to STAGE_DEPTH batches are staged at once (on libuv pool threads); they are taken in order.
  const staging: Promise<StagedBatch>[] = [];
  const takeStaged = async (): Promise<void> => {
    const staged = await staging.shift()!;
    if (staged.unreadable.length > 0) totals.unreadable.push(...staged.unreadable);
    if (staged.pages > 0) inFlight.push(send(staged));
    else staged.release();
    while (inFlight.length >= pacing.inFlight) await inFlight.shift();
  };
  try {
    scan: for await (const scanned of source) {
      totals.dirtyPages += scanned.pages;
      for (const batch of splitRunBatch(scanned, STAGE_PAGES, stager.pageSize, spanBytes)) {
        if (failure) break scan;
        opts.signal?.throwIfAborted();
        const p = stager.stage(batch);
        p.catch(() => undefined); // awaited in order by takeStaged; never "unhandled" meanwhile
        staging.push(p);
        if (staging.length >= STAGE_DEPTH) await takeStaged();
      }
    }
    while (staging.length > 0 && !failure) await takeStaged();
  } finally {
    // Batches still being staged hold ring slots the native side writes into: let them finish.
    await Promise.allSettled(staging);
  }
  await Promise.allSettled(inFlight);
  if (failure) throw failure;
  opts.signal?.throwIfAborted();
  if (totals.unreadable.length > 0) log.debug(`${totals.unreadable.length / 2} runs could not be read (unmapped meanwhile)`);
  return totals;
}
