// The destination process a handover builds round by round (receiver/restore/process-builder.ts)
// against a model of the image store: the store keeps pages by address while they stay inside the
// layout, so after any sequence of layouts, page batches and discards, a built process finished
// with the pages it marked stale must hold, byte for byte, what a restore of the final image
// writes: the held pages, zeros for anonymous pages not held, the file for file pages not held.
// A real stub, real injected syscalls, its memory read back with process_vm_readv.

import test from 'ava';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ProcessBuilder } from '../../../receiver/restore/process-builder';
import { layoutVmaByPath } from '../../../image/image-memory';
import type { MemorySource } from '../../../image/memory-source';
import type { Vma } from '../../../common/vma';

const P = 4096;
const fail = (m: string): never => {
  throw new Error(m);
};

/** A page whose every byte says which write made it. */
const page = (tag: number): Buffer => Buffer.alloc(P, tag & 0xff);

class StoreModel {
  readonly held = new Map<number, Buffer>();
  layout: Vma[] = [];

  constructor(private readonly b: ProcessBuilder) {}

  setLayout(layout: Vma[]): void {
    this.layout = layout;
    for (const a of [...this.held.keys()]) if (!layout.some((v) => v.start <= a && a < v.end)) this.held.delete(a);
    this.b.applyLayout(
      layout.map((v) => layoutVmaByPath(v, [])),
      { everyWritable: true },
    );
  }

  /** One batch: pages by address (null: a zero page), in address order. */
  write(pages: Array<[number, Buffer | null]>): void {
    const runs: number[] = [];
    const zeroMap = Buffer.alloc(Math.ceil(pages.length / 8));
    const data: Buffer[] = [];
    pages.forEach(([a, buf], i) => {
      const n = runs.length;
      if (n > 0 && runs[n - 2] + runs[n - 1] * P === a) runs[n - 1]++;
      else runs.push(a, 1);
      if (buf) data.push(buf);
      else zeroMap[i >> 3] |= 1 << (i & 7);
      this.held.set(a, buf ?? Buffer.alloc(P));
    });
    this.b.writePages(runs, zeroMap, Buffer.concat(data), P);
  }

  discard(a: number, n: number): void {
    for (let i = 0; i < n; i++) this.held.delete(a + i * P);
    this.b.discard([a, n], P);
  }

  /** The final image as a restore reads it. */
  memory(): MemorySource {
    const vmas = this.layout.map((v) => {
      const runs: Array<[number, number]> = [];
      for (let a = v.start; a < v.end; a += P) {
        if (!this.held.has(a)) continue;
        const last = runs[runs.length - 1];
        if (last && last[1] === a) last[1] = a + P;
        else runs.push([a, a + P]);
      }
      return layoutVmaByPath(v, runs);
    });
    return {
      vmas,
      read: (addr: number, len: number, into: Buffer): void => {
        for (let o = 0; o < len; o += P) (this.held.get(addr + o) ?? Buffer.alloc(P)).copy(into, o);
      },
    };
  }
}

const anon = (start: number, pages: number, perms = 'rw-p'): Vma => ({
  start,
  end: start + pages * P,
  perms,
  offset: 0,
  path: '',
  fileBacked: false,
  inode: 0,
  dev: '00:00',
});
const shm = (start: number, pages: number): Vma => ({ ...anon(start, pages, 'rw-s'), path: '/dev/zero (deleted)' });

test('a process built through layout changes, page batches and discards equals a restore of the final image', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'precopy-builder-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'mapped');
  fs.writeFileSync(file, Buffer.concat(Array.from({ length: 8 }, (_, i) => page(0xf0 + i))));
  const ino = fs.statSync(file).ino;
  const filePriv = (start: number, pages: number): Vma => ({
    start,
    end: start + pages * P,
    perms: 'rw-p',
    offset: 0,
    path: file,
    fileBacked: true,
    inode: ino,
    dev: '00:00',
  });

  const b = ProcessBuilder.spawn(0, fail);
  t.teardown(() => b.kill());
  const m = new StoreModel(b);
  const X = 0x10000000000; // 1 TiB: away from the stub's own vDSO and the scratch area
  const F = X + 0x100000;
  const G = X + 0x200000;
  const S = X + 0x300000;
  const N = X + 0x400000;
  const M = X - 0x100000;

  // Round 0: anonymous, two private file mappings, shared anonymous.
  const r0 = [anon(X, 16), filePriv(F, 8), filePriv(G, 8), shm(S, 8)];
  b.clearStub(r0.map((v) => layoutVmaByPath(v, [])));
  m.setLayout(r0);
  m.write(Array.from({ length: 16 }, (_, i) => [X + i * P, i === 3 ? null : page(i + 1)]));
  m.write([
    [F + 2 * P, page(0x21)],
    [G + 5 * P, page(0x25)],
  ]);
  m.write(Array.from({ length: 8 }, (_, i) => [S + i * P, page(0x40 + i)]));

  // Round 1: X grows; F's range becomes anonymous memory (its written page stays held at that
  // address); a new mapping N; a page of X rewritten; discards in X and S.
  m.setLayout([anon(X, 24), anon(F, 8), filePriv(G, 8), shm(S, 8), anon(N, 4)]);
  m.write(Array.from({ length: 8 }, (_, i) => [X + (16 + i) * P, page(0x60 + i)]));
  m.write([[X + 5 * P, page(0x77)], ...Array.from({ length: 4 }, (_, i): [number, Buffer] => [N + i * P, page(0x80 + i)])]);
  m.discard(X + 7 * P, 1);
  m.discard(S + P, 2);

  // Round 2: X moved below (mremap) and re-sent there; G now read-only.
  const last = [anon(M, 24), anon(F, 8), { ...filePriv(G, 8), perms: 'r--p' }, shm(S, 8), anon(N, 4)];
  m.setLayout(last);
  m.write(Array.from({ length: 24 }, (_, i) => [M + i * P, page(0x90 + i)]));

  // The end of a handover: the final layout over what is there, the stale pages from the image.
  const memory = m.memory();
  b.applyLayout(memory.vmas, { everyWritable: true });
  t.true(b.staleRanges.length > 0, "F's range was replaced: its held page is stale");
  await b.fill(memory, b.staleRanges);
  b.protect(memory.vmas);

  const fileBytes = fs.readFileSync(file);
  let pages = 0;
  for (const v of last) {
    for (let a = v.start; a < v.end; a += P) {
      const got = Buffer.alloc(P);
      b.stub.readMemory(a, got);
      const want = m.held.get(a) ?? (v.fileBacked ? fileBytes.subarray(a - v.start, a - v.start + P) : Buffer.alloc(P));
      if (!got.equals(want)) t.fail(`page ${a.toString(16)} of ${v.start.toString(16)} (${v.perms} ${v.path}): ${got[0]} instead of ${want[0]}`);
      pages++;
    }
  }
  t.is(pages, 24 + 8 + 8 + 8 + 4);
  // Nothing of the old X is left mapped, G is read-only.
  const maps = fs.readFileSync(`/proc/${b.pid}/maps`, 'utf8');
  t.false(maps.includes(`${X.toString(16)}-`), 'the moved-away range is unmapped');
  t.regex(maps, new RegExp(`^${G.toString(16)}-\\S+ r--p`, 'm'));
});
