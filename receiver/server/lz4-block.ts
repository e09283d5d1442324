// lz4 block decoding (the `lz4` npm package's native decodeBlock = LZ4_decompress_safe) into a
// buffer of exactly the declared size: a payload that would decompress to more or fewer bytes,
// or is not lz4 at all, is refused without writing past the buffer.

import { invalidArgument } from './stream-error';

// The package ships no types; this is the one function used here.
// eslint-disable-next-line @typescript-eslint/no-var-requires
const lz4: { decodeBlock(input: Buffer, output: Buffer): number } = require('lz4');

export function decodeLz4Block(payload: Buffer, rawLength: number): Buffer {
  if (rawLength === 0) {
    if (payload.length !== 0) throw invalidArgument('PageBatch lz4 payload is not empty but raw_length is 0');
    return payload;
  }
  if (payload.length === 0) throw invalidArgument(`PageBatch lz4 payload is empty, raw_length says ${rawLength}`);
  const out = Buffer.allocUnsafe(rawLength);
  const n = lz4.decodeBlock(payload, out);
  if (n < 0) throw invalidArgument(`PageBatch lz4 payload is not a valid lz4 block of ${rawLength} bytes`);
  if (n !== rawLength) throw invalidArgument(`PageBatch lz4 payload decompresses to ${n} bytes, raw_length says ${rawLength}`);
  return out;
}
