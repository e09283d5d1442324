// Bit arrays over pages: bit i lives in byte i >> 3, least significant bit first (the same order
// as PageBatch.zero_map). Range operations touch whole bytes where they can, so marking a run of
// a million pages costs a fill, not a million bit operations.

export function testBit(bm: Uint8Array, i: number): boolean {
  return ((bm[i >> 3] >> (i & 7)) & 1) === 1;
}

/** Set bits [from, to). */
export function setBits(bm: Uint8Array, from: number, to: number): void {
  fillBits(bm, from, to, true);
}

/** Clear bits [from, to). */
export function clearBits(bm: Uint8Array, from: number, to: number): void {
  fillBits(bm, from, to, false);
}

function fillBits(bm: Uint8Array, from: number, to: number, on: boolean): void {
  let i = from;
  while (i < to && (i & 7) !== 0) {
    if (on) bm[i >> 3] |= 1 << (i & 7);
    else bm[i >> 3] &= ~(1 << (i & 7));
    i++;
  }
  const wholeEnd = to & ~7;
  if (i < wholeEnd) {
    bm.fill(on ? 0xff : 0, i >> 3, wholeEnd >> 3);
    i = wholeEnd;
  }
  while (i < to) {
    if (on) bm[i >> 3] |= 1 << (i & 7);
    else bm[i >> 3] &= ~(1 << (i & 7));
    i++;
  }
}

/** First index in [i, to) whose bit equals `want`; `to` when there is none. Skips whole bytes. */
export function nextBit(bm: Uint8Array, i: number, to: number, want: boolean): number {
  const skip = want ? 0x00 : 0xff;
  while (i < to) {
    if ((i & 7) === 0 && i + 8 <= to && bm[i >> 3] === skip) {
      i += 8;
      continue;
    }
    if (testBit(bm, i) === want) return i;
    i++;
  }
  return to;
}

/** Calls fn(start, end) for every maximal run of set bits inside [from, to). */
export function forEachRun(bm: Uint8Array, from: number, to: number, fn: (start: number, end: number) => void): void {
  let i = from;
  while (i < to) {
    const start = nextBit(bm, i, to, true);
    if (start >= to) return;
    const end = nextBit(bm, start, to, false);
    fn(start, end);
    i = end;
  }
}

const POP = new Uint8Array(256);
for (let b = 1; b < 256; b++) POP[b] = (b & 1) + POP[b >> 1];

/** Number of set bits in [from, to). */
export function countBits(bm: Uint8Array, from = 0, to = bm.length * 8): number {
  let n = 0;
  let i = from;
  while (i < to && (i & 7) !== 0) n += testBit(bm, i++) ? 1 : 0;
  const wholeEnd = to & ~7;
  for (let byte = i >> 3; byte < wholeEnd >> 3; byte++) n += POP[bm[byte]];
  for (i = Math.max(i, wholeEnd); i < to; i++) n += testBit(bm, i) ? 1 : 0;
  return n;
}

/** True when no bit is set. */
export function isEmpty(bm: Uint8Array): boolean {
  for (let i = 0; i < bm.length; i++) if (bm[i] !== 0) return false;
  return true;
}
