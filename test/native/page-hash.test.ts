// The page hash and digest term are part of the image format (the receiver recomputes them, the
// digest travels between hosts): pinned values prove they stay the same across builds and
// machines; the other checks prove they separate what they must.

import test from 'ava';
import { digestPages, hashPages } from '../../native';
import { addDigest, zeroPageHash } from '../../common/image-digest';

const PAGE = 4096;
const M64 = (1n << 64n) - 1n;

/** Four pages: zeros, bytes i & 255, all 0xff, u64 words i * golden ratio. */
function samplePages(): Buffer {
  const b = Buffer.alloc(4 * PAGE);
  for (let i = 0; i < PAGE; i++) b[PAGE + i] = i & 255;
  b.fill(0xff, 2 * PAGE, 3 * PAGE);
  for (let i = 0; i < PAGE; i += 8) b.writeBigUInt64LE((BigInt(i) * 0x9e3779b97f4a7c15n) & M64, 3 * PAGE + i);
  return b;
}

const hashes = (b: Buffer) => {
  const out = new BigUint64Array(b.length / PAGE);
  hashPages(b, PAGE, out);
  return out;
};

test('page hash values are pinned (same on every machine and build)', (t) => {
  t.deepEqual([...hashes(samplePages())], [0x3e27bdbd6b0149d4n, 0x83b918dd762f20d8n, 0x50ed9d898c6625can, 0x2d8817ff910ee829n]);
  t.is(digestPages(new Float64Array([0x7f0000000000, 0x1000]), hashes(samplePages()), 2), 0x3154f8c3b378de45n);
  t.is(zeroPageHash(PAGE), 0x3e27bdbd6b0149d4n);
});

test('page hash: every single-bit flip changes it; position in the buffer does not', (t) => {
  const page = samplePages().subarray(3 * PAGE);
  const base = hashes(Buffer.from(page))[0];
  const seen = new Set<bigint>([base]);
  for (let bit = 0; bit < PAGE * 8; bit += 61) {
    const p = Buffer.from(page);
    p[bit >> 3] ^= 1 << (bit & 7);
    const h = hashes(p)[0];
    if (seen.has(h)) return t.fail(`bit ${bit}: collision`);
    seen.add(h);
  }
  // the same page at another offset of a larger buffer hashes the same
  const two = Buffer.concat([Buffer.alloc(PAGE, 7), page]);
  t.is(hashes(two)[1], base);
  // words swapped between lanes must not cancel out
  const swapped = Buffer.from(page);
  page.copy(swapped, 0, 8, 16);
  page.copy(swapped, 8, 0, 8);
  t.not(hashes(swapped)[0], base);
});

test('digest: a sum of per-page terms, order-free and chunkable; the address matters', (t) => {
  const h = hashes(samplePages());
  const addrs = new Float64Array([0x10000, 0x11000, 0x7fff0000, 0x555555554000]);
  const whole = digestPages(addrs, h, 4);
  const halves = addDigest(digestPages(addrs.subarray(0, 2), h.subarray(0, 2), 2), digestPages(addrs.subarray(2), h.subarray(2), 2));
  t.is(halves, whole);
  const rev = digestPages(new Float64Array([...addrs].reverse()), new BigUint64Array([...h].reverse()), 4);
  t.is(rev, whole);
  // same pages at swapped addresses: a misplaced page changes the digest
  const moved = digestPages(new Float64Array([addrs[1], addrs[0], addrs[2], addrs[3]]), h, 4);
  t.not(moved, whole);
  t.is(digestPages(addrs, h, 0), 0n);
  t.throws(() => digestPages(addrs, h, 5), { instanceOf: RangeError });
  t.throws(() => hashPages(Buffer.alloc(100), PAGE, new BigUint64Array(1)), { instanceOf: RangeError });
});
