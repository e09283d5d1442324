// Presence bitmap generations (bitmaps/<gen>.bm): each durable change writes the windows whose
// bitmaps changed into one new generation file, and the durable index (state.json, manifest.json)
// names [window, generation, slot] per window. Unchanged windows cost nothing per round.

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { SessionFiles, WindowIndex } from './on-disk';
import { BITMAP_BYTES, WINDOW_PAGES, type PageWindow, type PageWindows } from './page-windows';
import { invalid } from './store-error';

// File layout: 32-byte header (magic, version, window pages, window count), then per window a slot:
// u64 window index, data bitmap, zero bitmap. The durable index (state.json) names
// (generation, slot) per window, so a generation only holds what changed.

const MAGIC = Buffer.from('PCPYBMAP', 'latin1');
const HEADER = 32;
const SLOT = 8 + 2 * BITMAP_BYTES;

export function encodeGeneration(wins: PageWindow[]): Buffer {
  const buf = Buffer.alloc(HEADER + wins.length * SLOT);
  MAGIC.copy(buf, 0);
  buf.writeUInt32LE(1, 8);
  buf.writeUInt32LE(WINDOW_PAGES, 12);
  buf.writeUInt32LE(wins.length, 16);
  wins.forEach((win, i) => {
    const at = HEADER + i * SLOT;
    buf.writeBigUInt64LE(BigInt(win.index), at);
    buf.set(win.data, at + 8);
    buf.set(win.zero, at + 8 + BITMAP_BYTES);
  });
  return buf;
}

/** Slot `slot` of a generation file's bytes: its window index and bitmaps (views, not copies). */
export function decodeSlot(buf: Buffer, slot: number, what: string): { window: number; data: Uint8Array; zero: Uint8Array } {
  if (buf.length < HEADER || !buf.subarray(0, 8).equals(MAGIC) || buf.readUInt32LE(8) !== 1 || buf.readUInt32LE(12) !== WINDOW_PAGES) {
    throw invalid(`${what} is not a page bitmap file of this format`);
  }
  const count = buf.readUInt32LE(16);
  if (buf.length !== HEADER + count * SLOT) throw invalid(`${what} is truncated (${buf.length} bytes for ${count} windows)`);
  if (slot < 0 || slot >= count) throw invalid(`${what} has no slot ${slot}`);
  const at = HEADER + slot * SLOT;
  return {
    window: Number(buf.readBigUInt64LE(at)),
    data: buf.subarray(at + 8, at + 8 + BITMAP_BYTES),
    zero: buf.subarray(at + 8 + BITMAP_BYTES, at + SLOT),
  };
}

/** Read the windows an index names into `windows`. */
export async function loadWindows(files: SessionFiles, index: WindowIndex, windows: PageWindows): Promise<void> {
  const byGen = new Map<number, [number, number][]>();
  for (const [w, gen, slot] of index) {
    const list = byGen.get(gen) ?? [];
    list.push([w, slot]);
    byGen.set(gen, list);
  }
  for (const [gen, slots] of byGen) {
    const file = files.generation(gen);
    let buf: Buffer;
    try {
      buf = await fsp.readFile(file);
    } catch (err) {
      throw invalid(`page bitmap ${path.basename(file)} is missing: ${(err as Error).message}`);
    }
    for (const [w, slot] of slots) {
      const s = decodeSlot(buf, slot, path.basename(file));
      if (s.window !== w) throw invalid(`${path.basename(file)} slot ${slot} holds window ${s.window}, expected ${w}`);
      windows.load(w, s.data, s.zero, [gen, slot]);
    }
  }
}
