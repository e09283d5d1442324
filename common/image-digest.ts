// The image digest: sum over every page an image holds of mix64(address, hashPage(bytes)),
// modulo 2^64. A sum (not a running hash) so that sender and receiver can compute it in any
// order, chunk by chunk, and the sender can update it when a page is re-sent (subtract the old
// term, add the new). Not cryptographic: it guards against lost or misplaced pages, not attackers
// (TLS does that).

import { digestPages, hashPages } from '../native';

const MASK = (1n << 64n) - 1n;

export function addDigest(a: bigint, b: bigint): bigint {
  return (a + b) & MASK;
}

export function subDigest(a: bigint, b: bigint): bigint {
  return (a - b) & MASK;
}

const zeroHashes = new Map<number, bigint>();

/** Content hash of an all-zero page of this size (zero pages travel as bits, not bytes). */
export function zeroPageHash(pageSize: number): bigint {
  let h = zeroHashes.get(pageSize);
  if (h === undefined) {
    const out = new BigUint64Array(1);
    hashPages(Buffer.alloc(pageSize), pageSize, out);
    h = out[0];
    zeroHashes.set(pageSize, h);
  }
  return h;
}

export function digestToBuffer(d: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(d & MASK);
  return b;
}

export function digestFromBuffer(b: Buffer): bigint {
  if (b.length !== 8) throw new RangeError(`image digest must be 8 bytes, got ${b.length}`);
  return b.readBigUInt64LE();
}

export function digestHex(d: bigint): string {
  return (d & MASK).toString(16).padStart(16, '0');
}

/** Digest term of `count` pages whose addresses and content hashes are given. */
export function digestOf(addrs: Float64Array, hashes: BigUint64Array, count: number): bigint {
  return digestPages(addrs, hashes, count);
}
