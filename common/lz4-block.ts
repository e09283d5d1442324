// lz4 block encoding and decoding, shared by the sender's stager, its local transfer and the
// receiver. Decoding writes into a buffer of exactly the declared size: a payload that would
// decompress to more or fewer bytes, or is not lz4 at all, is refused without writing past it.
// Errors are plain Lz4Errors; each caller says what they mean to its user (the receiver turns
// them into INVALID_ARGUMENT).

import * as lz4 from 'lz4';

export class Lz4Error extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'Lz4Error';
  }
}

/** Compresses `raw` into `out[0, limit)`; 0 when it would not fit (keep the raw bytes then). */
export function encodeLz4Block(raw: Buffer, out: Buffer, limit = out.length): number {
  return lz4.encodeBlock(raw, out, 0, limit);
}

/** Worst-case compressed size of `n` bytes. */
export const lz4Bound = (n: number): number => lz4.encodeBound(n);

/** Decompresses an lz4 block that must give exactly `rawLength` bytes. */
export function decodeLz4Block(payload: Buffer, rawLength: number): Buffer {
  if (rawLength === 0) {
    if (payload.length !== 0) throw new Lz4Error('lz4 payload is not empty but raw_length is 0');
    return payload;
  }
  if (payload.length === 0) throw new Lz4Error(`lz4 payload is empty, raw_length says ${rawLength}`);
  const out = Buffer.allocUnsafe(rawLength);
  const n = lz4.decodeBlock(payload, out);
  if (n < 0) throw new Lz4Error(`lz4 payload is not a valid lz4 block of ${rawLength} bytes`);
  if (n !== rawLength) throw new Lz4Error(`lz4 payload decompresses to ${n} bytes, raw_length says ${rawLength}`);
  return out;
}

/** One-shot compression into a new buffer of the compressed size (tests, the bench). */
export function lz4Compress(raw: Buffer): Buffer {
  const out = Buffer.allocUnsafe(lz4Bound(raw.length));
  const n = encodeLz4Block(raw, out);
  if (n <= 0) throw new Lz4Error(`lz4 could not compress ${raw.length} bytes`);
  return out.subarray(0, n);
}
