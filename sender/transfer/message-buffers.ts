// Reused buffers for serialized page batches on the sender's link. grpc-js frames every message
// into a new Buffer of its own (5-byte header + a copy), so the serialized message is garbage as
// soon as it is framed; at 4 MiB a batch that garbage was half of the sender's per-batch
// allocations (GC time, peak RSS). MigrationLink takes a buffer here for each page batch and
// gives it back in the write callback: node's Writable calls it after grpc-js's _write callback,
// which grpc-js calls after the framed copy was handed to HTTP/2 (retries are disabled on the
// channel, so no retry buffer keeps the serialized message either).

import { tuneGcForPageBuffers } from '../../common/gc-tuning';

/** Buffers smaller than this are not worth keeping. */
const MIN_POOLED_BYTES = 256 << 10;
/** Sizes are rounded up to this, so that batches of slightly different sizes share buffers. */
const GRANULE = 256 << 10;

export class MessageBuffers {
  private readonly free: ArrayBuffer[] = [];

  /** `capacity`: free buffers kept at most (those in use are not counted). */
  constructor(readonly capacity: number) {
    tuneGcForPageBuffers(); // the link moves page data in bulk (common/gc-tuning.ts)
  }

  /** A Buffer of exactly `size` bytes, contents undefined: use take as encodePagesMessage's alloc. */
  readonly take = (size: number): Buffer => {
    if (size < MIN_POOLED_BYTES) return Buffer.allocUnsafe(size);
    let ab = this.free.pop();
    if (!ab || ab.byteLength < size) ab = Buffer.allocUnsafeSlow(Math.ceil(size / GRANULE) * GRANULE).buffer as ArrayBuffer;
    return Buffer.from(ab, 0, size);
  };

  /** Give back a Buffer from take() once nothing reads it any more. */
  give(buf: Buffer): void {
    const ab = buf.buffer as ArrayBuffer;
    if (buf.byteOffset !== 0 || ab.byteLength < MIN_POOLED_BYTES || this.free.length >= this.capacity) return;
    if (!this.free.includes(ab)) this.free.push(ab);
  }
}
