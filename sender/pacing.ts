// How staged batches are paced into each kind of transfer: how many may wait for the transfer at
// once. The stager sizes its ring of payload buffers from it; the round pipeline enforces it.

import type { TransferTarget } from './transfer/open-transfer';

/** How batches are paced into one kind of transfer. */
export interface Pacing {
  /** Staged batches waiting for the transfer at most. */
  inFlight: number;
}

/**
 * grpc: one batch. sendBatch() resolves once HTTP/2 wrote the batch, and the socket buffer and the
 * receiver still work on it while the next is staged: measured at 1 and 4 GiB on loopback, 3 moved
 * no more bytes per second and held more 4 MiB buffers (sender peak RSS in the bench).
 * dir: three. Writing to the image files is the slow step and overlaps with staging only if
 * batches wait for it (1 in flight: 0.7 GB/s instead of 1.2-1.5); it makes no garbage copies.
 */
export const PACING: Readonly<Record<TransferTarget['kind'], Pacing>> = {
  grpc: { inFlight: 1 },
  dir: { inFlight: 3 },
};

/** The pacing of a transfer over `lanes` streams: a batch in flight per lane. */
export function pacingFor(kind: TransferTarget['kind'], lanes: number): Pacing {
  const p = PACING[kind];
  return lanes > 1 ? { ...p, inFlight: Math.max(p.inFlight, lanes) } : p;
}

/** The most batches any pacing keeps in flight (the stager's ring is sized by it). */
export const IN_FLIGHT = Math.max(...Object.values(PACING).map((p) => p.inFlight));

/** Batches staged at once: the byte work of one (read, hash, lz4, on a libuv pool thread) runs
 *  while the JS thread finishes and sends the one before, and on 2+ cores two batches compress in
 *  parallel (docs/design.md, Page path). Staged batches are still taken and sent in order. */
export const STAGE_DEPTH = 2;
