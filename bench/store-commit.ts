// The image store's share of a migration's downtime: `node dist/bench/store-commit.js [--gib N]
// [--final-pages N] [--runs N] [--zero-every K] [--dir DIR]`. Round 0 writes N GiB (every K-th
// page a zero page) and ends; the session is closed and resumed (what a receiver does after a
// crash or a broken stream; its running digest is rebuilt from disk). Then, --runs times: a final round of --final-pages scattered pages
// (one batch, 1 in 8 a zero page) and the commit that ends it — the store's work between the
// sender freezing the target and the commit ack. Prints median (min-max) milliseconds.

import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseFlags, parseIntFlag } from '../common/cli';
import { runMain } from '../common/errors';
import type { Vma } from '../common/vma';
import { ImageStore, type RoundEnd, type SessionWriter } from '../image/image-store';
import { stat, type Stat } from './lib/stats';
import { Model, batchOf, prng } from '../test/image/store-helpers';

const USAGE = 'usage: node dist/bench/store-commit.js [--gib N] [--final-pages N] [--runs N] [--zero-every K] [--dir DIR]';
const OPTIONS = {
  gib: { type: 'string' },
  'final-pages': { type: 'string' },
  runs: { type: 'string' },
  'zero-every': { type: 'string' },
  dir: { type: 'string' },
} as const;

const PS = 4096; // = store-helpers' PS, the page size batchOf builds
const BASE = 0x7f0000000000;
const ROUND0_BATCH = 256;

const figures = (round: number, pages: number): RoundEnd => ({
  round,
  dirtyPages: pages,
  zeroPages: 0,
  rawBytes: pages * PS,
  wireBytes: pages * PS,
  durationSeconds: 0,
  dirtyRateBytesPerSecond: 0,
  transferRateBytesPerSecond: 0,
  expectedDowntimeSeconds: 0,
  remainingBytes: 0,
  throttlePercent: 0,
  batches: 1,
});

/** One batch of `count` distinct random pages of [0, pages), 1 in 8 a zero page (test helpers' batchOf). */
function scatteredBatch(rand: () => number, pages: number, count: number, gen: number): { runs: number[]; zeroMap: Buffer | null; data: Buffer } {
  const picked = new Set<number>();
  while (picked.size < count) picked.add(BASE + Math.floor(rand() * pages) * PS);
  const addrs = [...picked];
  return batchOf(new Model(), addrs, gen, new Set(addrs.filter(() => rand() < 1 / 8)));
}

async function writeRound0(img: SessionWriter, pages: number, zeroEvery: number): Promise<void> {
  const zeroMap = Buffer.alloc(ROUND0_BATCH / 8);
  let zeros = 0;
  if (zeroEvery > 0) {
    for (let i = zeroEvery - 1; i < ROUND0_BATCH; i += zeroEvery, zeros++) zeroMap[i >> 3] |= 1 << (i & 7);
  }
  const buf = Buffer.alloc(ROUND0_BATCH * PS, 0x5a);
  const inflight = new Set<Promise<void>>();
  for (let first = 0; first < pages; first += ROUND0_BATCH) {
    const data = Buffer.from(buf.subarray(0, (ROUND0_BATCH - zeros) * PS));
    for (let i = 0; i < ROUND0_BATCH - zeros; i++) data.writeUInt32LE(first + i + 1, i * PS);
    const p: Promise<void> = img.writePages([BASE + first * PS, ROUND0_BATCH], zeros > 0 ? zeroMap : null, data).then(() => {
      inflight.delete(p);
    });
    inflight.add(p);
    if (inflight.size >= 8) await Promise.race(inflight);
  }
  await Promise.all(inflight);
}

const ms = (a: bigint, b: bigint) => Number(b - a) / 1e6;
const show = (s: Stat) => `${s.median.toFixed(1)} ms (${s.min.toFixed(1)}-${s.max.toFixed(1)})`;

runMain('store-commit', async () => {
  const { values } = parseFlags(process.argv.slice(2), OPTIONS, USAGE);
  const gib = parseIntFlag(values.gib, '--gib', 1, 1, 64);
  const finalPages = parseIntFlag(values['final-pages'], '--final-pages', 1000, 1, 65536);
  const runs = parseIntFlag(values.runs, '--runs', 7, 1, 100);
  const zeroEvery = parseIntFlag(values['zero-every'], '--zero-every', 8, 0, ROUND0_BATCH);
  const root = mkdtempSync(path.join(values.dir ?? os.tmpdir(), 'precopy-bench-'));
  try {
    const store = new ImageStore(root);
    const pages = (gib * 2 ** 30) / PS;
    const layout: Vma[] = [{ start: BASE, end: BASE + pages * PS, perms: 'rw-p', offset: 0, path: '', fileBacked: false, inode: 0, dev: '00:00' }];
    let img = await store.create({
      sessionId: 'bench',
      sourceHost: 'bench',
      pid: 1,
      pageSize: PS,
      kernel: os.release(),
      command: 'bench',
      memoryBytes: pages * PS,
      createdAt: new Date().toISOString(),
    });
    await img.beginRound(0, 'PRECOPY', layout);
    const w0 = process.hrtime.bigint();
    await writeRound0(img, pages, zeroEvery);
    const w1 = process.hrtime.bigint();
    await img.endRound(figures(0, pages));
    await img.close();
    const r0 = process.hrtime.bigint();
    img = await store.resume('bench');
    await img.heldDigest(); // the running digest, rebuilt from disk once per reopened writer
    const r1 = process.hrtime.bigint();

    const rand = prng(42);
    const commits: number[] = [];
    const writes: number[] = [];
    for (let k = 1; k <= runs; k++) {
      await img.beginRound(k, k === 1 ? 'STOP_AND_COPY' : 'VERIFY_FIX', layout);
      const b = scatteredBatch(rand, pages, finalPages, k);
      const t0 = process.hrtime.bigint();
      await img.writePages(b.runs, b.zeroMap, b.data);
      const t1 = process.hrtime.bigint();
      const want = await img.heldDigest(); // the sender's digest (what was sent; not timed)
      const t2 = process.hrtime.bigint();
      // As the sender does: the commit ends the final round (one set of fsyncs for both).
      const res = await img.commit({ layout, threads: [], imageDigest: want.digest, imagePages: want.pages, finalRound: figures(k, finalPages) });
      const t3 = process.hrtime.bigint();
      if (!res.ok) throw new Error(`commit refused: ${res.message}`);
      writes.push(ms(t0, t1));
      commits.push(ms(t2, t3));
    }
    await img.close();
    const total = commits.map((c, i) => c + writes[i]);
    process.stdout.write(
      `store-commit: ${gib} GiB held (zero every ${zeroEvery || '-'}), final rounds of ${finalPages} scattered pages, ${runs} runs, on ${root}\n` +
        `  round 0 writes:      ${(ms(w0, w1) / 1000).toFixed(3)} s  ${((pages * PS) / (ms(w0, w1) / 1000) / 1e9).toFixed(2)} GB/s into the page cache\n` +
        `  resume + rebuild:    ${ms(r0, r1).toFixed(1)} ms (reopen, running digest rebuilt from disk)\n` +
        `  final writePages:    ${show(stat(writes))}\n` +
        `  commit (ends round): ${show(stat(commits))}\n` +
        `  writes + commit:     ${show(stat(total))}\n`,
    );
    return 0;
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
