// Test helpers for the image store and exports: temp directories, session metadata, VMAs, a
// deterministic page generator, and a model of what an image should hold (a Map from address to
// page bytes) that computes the expected digest and expected VMA content independently of the
// store.

import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ExecutionContext } from 'ava';
import type { Vma } from '../../common/vma';
import { addDigest, digestOf, zeroPageHash } from '../../common/image-digest';
import { hashPages } from '../../native';
import type { SessionWriter, SessionMeta, RoundEnd, ThreadState } from '../../image/image-store';
import { X86_64_REGS_BYTES, X86_64_REG_NAMES, type X86Reg } from '../../receiver/export/x86-regs';

export const PS = 4096;

/** A fresh directory removed when the test ends. */
export function tempDir(t: ExecutionContext, prefix = 'precopy-store-'): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export function meta(sessionId: string, over: Partial<SessionMeta> = {}): SessionMeta {
  return {
    sessionId,
    sourceHost: 'src-host',
    pid: 4242,
    pageSize: PS,
    kernel: '6.18.0-test',
    command: 'target',
    memoryBytes: 1 << 20,
    createdAt: new Date().toISOString(),
    ...over,
  };
}

export function vma(start: number, pages: number, over: Partial<Vma> = {}): Vma {
  return { start, end: start + pages * PS, perms: 'rw-p', offset: 0, path: '', fileBacked: false, inode: 0, dev: '00:00', ...over };
}

/** Deterministic, non-zero content of page `addr` at generation `gen`. */
export function pageBytes(addr: number, gen: number): Buffer {
  const b = Buffer.alloc(PS);
  b.writeDoubleLE(addr, 0);
  b.writeUInt32LE(gen, 8);
  let x = (addr / PS) * 2654435761 + gen * 40503 + 1;
  for (let i = 16; i < PS; i += 4) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    b.writeUInt32LE(x, i);
  }
  return b;
}

export function figures(round: number): RoundEnd {
  return {
    round,
    dirtyPages: 0,
    zeroPages: 0,
    rawBytes: 0,
    wireBytes: 0,
    durationSeconds: 0.1,
    dirtyRateBytesPerSecond: 0,
    transferRateBytesPerSecond: 0,
    expectedDowntimeSeconds: 0,
    remainingBytes: 0,
    throttlePercent: 0,
    batches: 1,
  };
}

/** What an image should hold: address → page bytes (or 'zero'). */
export class Model {
  readonly pages = new Map<number, Buffer | 'zero'>();
  layout: Vma[] = [];

  setLayout(layout: Vma[]): void {
    this.layout = layout;
    for (const a of [...this.pages.keys()]) if (!layout.some((v) => a >= v.start && a < v.end)) this.pages.delete(a);
  }

  discard(addr: number, n: number): void {
    for (let i = 0; i < n; i++) this.pages.delete(addr + i * PS);
  }

  digest(): { digest: bigint; pages: number } {
    let sum = 0n;
    const h = new BigUint64Array(1);
    const a = new Float64Array(1);
    for (const [addr, content] of this.pages) {
      if (content === 'zero') h[0] = zeroPageHash(PS);
      else hashPages(content, PS, h);
      a[0] = addr;
      sum = addDigest(sum, digestOf(a, h, 1));
    }
    return { digest: sum, pages: this.pages.size };
  }

  /** Expected bytes of a VMA: sent pages, else the backing file's content, else zeros. */
  vmaBytes(v: Vma, backing?: Buffer): Buffer {
    const out = Buffer.alloc(v.end - v.start);
    for (let addr = v.start; addr < v.end; addr += PS) {
      const p = this.pages.get(addr);
      const at = addr - v.start;
      if (p instanceof Buffer) p.copy(out, at);
      else if (p === undefined && backing) backing.copy(out, at, Math.min(backing.length, v.offset + at), Math.min(backing.length, v.offset + at + PS));
    }
    return out;
  }
}

/**
 * Send pages at `addrs` (any order; grouped into ascending runs here) in one batch: zero pages
 * (those in `zeros`) as bits, the others as generation `gen` content. Updates the model.
 */
export async function sendBatch(img: SessionWriter, model: Model, addrs: number[], gen: number, zeros: Set<number> = new Set()): Promise<void> {
  const b = batchOf(model, addrs, gen, zeros);
  await img.writePages(b.runs, b.zeroMap, b.data);
}

/** The batch sendBatch writes (runs, zero map or null, raw data); updates the model. Also used to
 *  build PageBatch messages in the server tests. */
export function batchOf(model: Model, addrs: number[], gen: number, zeros: Set<number> = new Set()): { runs: number[]; zeroMap: Buffer | null; data: Buffer } {
  const sorted = [...new Set(addrs)].sort((a, b) => a - b);
  const runs: number[] = [];
  for (const a of sorted) {
    const n = runs.length;
    if (n > 0 && runs[n - 2] + runs[n - 1] * PS === a) runs[n - 1]++;
    else runs.push(a, 1);
  }
  const zeroMap = Buffer.alloc(Math.ceil(sorted.length / 8));
  const data: Buffer[] = [];
  sorted.forEach((a, i) => {
    if (zeros.has(a)) {
      zeroMap[i >> 3] |= 1 << (i & 7);
      model.pages.set(a, 'zero');
    } else {
      const b = pageBytes(a, gen);
      data.push(b);
      model.pages.set(a, b);
    }
  });
  return { runs, zeroMap: zeros.size > 0 ? zeroMap : null, data: Buffer.concat(data) };
}

/** Addresses of `n` pages from `start`. */
export function pagesOf(start: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => start + i * PS);
}

/** Fisher-Yates with a fixed seed: "any order" that is the same every run. */
export function shuffled<T>(xs: T[], seed = 7): T[] {
  const out = [...xs];
  let s = seed;
  for (let i = out.length - 1; i > 0; i--) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/** mulberry32: a seeded PRNG of floats in [0, 1), for property tests and benches that must repeat. */
export function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let x = Math.imul(s ^ (s >>> 15), 1 | s);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** Split xs into chunks of n. */
export function chunked<T>(xs: T[], n: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += n) out.push(xs.slice(i, i + n));
  return out;
}

/** Commit the model's pages with the model's digest; fails the test's expectations loudly if refused. */
/** Commit what the model holds (ending the open round `finalRound` with it, when given). */
export async function commitModel(img: SessionWriter, model: Model, threads: ThreadState[] = [], finalRound?: number): Promise<void> {
  const d = model.digest();
  const end = finalRound === undefined ? undefined : figures(finalRound);
  const res = await img.commit({ layout: model.layout, threads, imageDigest: d.digest, imagePages: d.pages, finalRound: end });
  if (!res.ok) throw new Error(`commit refused: ${res.message}`);
}

/** x86_64 user_regs_struct with the given registers set (others zero). */
export function x86Regs(set: Partial<Record<X86Reg, bigint>>): Buffer {
  const b = Buffer.alloc(X86_64_REGS_BYTES);
  X86_64_REG_NAMES.forEach((name, i) => b.writeBigUInt64LE(set[name] ?? 0n, i * 8));
  return b;
}
