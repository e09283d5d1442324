// Helpers of the scanning/staging tests: draining RunBatch streams into page sets, reading
// /proc/PID/pagemap and smaps directly (independent of the sender's own pagemap use), temp files.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { RunBatch } from '../../../sender/tracking/run-batch';

export const PAGE = 4096;

export interface Drained {
  batches: RunBatch[];
  /** Every page address returned. */
  pages: Set<number>;
}

export async function drain(src: AsyncIterable<RunBatch>): Promise<Drained> {
  const out: Drained = { batches: [], pages: new Set() };
  for await (const b of src) {
    out.batches.push(b);
    let n = 0;
    for (let i = 0; i < b.runs.length; i += 2) {
      for (let k = 0; k < b.runs[i + 1]; k++) {
        const a = b.runs[i] + k * PAGE;
        if (out.pages.has(a)) throw new Error(`page 0x${a.toString(16)} returned twice`);
        out.pages.add(a);
      }
      n += b.runs[i + 1];
    }
    if (n !== b.pages) throw new Error(`batch says ${b.pages} pages, runs hold ${n}`);
  }
  return out;
}

/** Page indexes (relative to base) of the addresses in [base, base + count pages). */
export function indexesIn(pages: Set<number>, base: number, count: number): number[] {
  const out: number[] = [];
  for (const a of pages) if (a >= base && a < base + count * PAGE) out.push((a - base) / PAGE);
  return out.sort((x, y) => x - y);
}

export const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, i) => from + i);

export interface PagemapEntry {
  present: boolean;
  swapped: boolean;
  /** Bit 61: file page or shared anonymous. */
  fileOrShared: boolean;
}

/** Raw /proc/PID/pagemap entries of `count` pages from addr. */
export function pagemap(pid: number, addr: number, count: number): PagemapEntry[] {
  const fd = fs.openSync(`/proc/${pid}/pagemap`, 'r');
  try {
    const buf = Buffer.alloc(count * 8);
    fs.readSync(fd, buf, 0, buf.length, (addr / PAGE) * 8);
    const out: PagemapEntry[] = [];
    for (let i = 0; i < count; i++) {
      const e = buf.readBigUInt64LE(i * 8);
      out.push({ present: ((e >> 63n) & 1n) === 1n, swapped: ((e >> 62n) & 1n) === 1n, fileOrShared: ((e >> 61n) & 1n) === 1n });
    }
    return out;
  } finally {
    fs.closeSync(fd);
  }
}

/** A field (kB) of the smaps entry of the VMA containing addr. */
export function smapsField(pid: number, addr: number, field: string): number {
  let inside = false;
  for (const line of fs.readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (head) inside = parseInt(head[1], 16) <= addr && addr < parseInt(head[2], 16);
    else if (inside && line.startsWith(field + ':')) return Number(/(\d+)/.exec(line)![1]);
  }
  throw new Error(`no ${field} for 0x${addr.toString(16)}`);
}

/** A file of `pages` pages, page i filled with byte (i + 1) & 0xff. Removed at process exit. */
export function tempFile(pages: number): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'precopy-scan-'));
  const file = path.join(dir, 'mapped file.bin');
  const buf = Buffer.alloc(pages * PAGE);
  for (let i = 0; i < pages; i++) buf.fill((i + 1) & 0xff, i * PAGE, (i + 1) * PAGE);
  fs.writeFileSync(file, buf);
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  return file;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
