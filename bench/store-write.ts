// Image store write throughput: `node dist/bench/store-write.js [--gib N] [--batch-pages N]
// [--depth N] [--dir DIR]`. Writes N GiB of non-zero pages through SessionWriter.writePages in
// batches (as the server does, up to --depth batches in flight), then ends the round (fdatasync
// of the chunk files) and commits (digest recomputed from disk). Prints GB/s into the page cache,
// with fsync, and of the digest pass.

import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseFlags, parseIntFlag } from '../common/cli';
import { runMain } from '../common/errors';
import { ImageStore } from '../image/image-store';

const USAGE = 'usage: node dist/bench/store-write.js [--gib N] [--batch-pages N] [--depth N] [--zero-every K] [--dir DIR]';
const OPTIONS = {
  gib: { type: 'string' },
  'batch-pages': { type: 'string' },
  depth: { type: 'string' },
  dir: { type: 'string' },
  'zero-every': { type: 'string' },
} as const;

const PS = 4096;
const BASE = 0x7f0000000000;

runMain('store-write', async () => {
  const { values } = parseFlags(process.argv.slice(2), OPTIONS, USAGE);
  const gib = parseIntFlag(values.gib, '--gib', 2, 1, 64);
  const batchPages = parseIntFlag(values['batch-pages'], '--batch-pages', 256, 1, 65536);
  const depth = parseIntFlag(values.depth, '--depth', 8, 1, 256);
  // Every K-th page of a batch is a zero page (0 = none): many short runs instead of one.
  const zeroEvery = parseIntFlag(values['zero-every'], '--zero-every', 0, 0, 65536);
  const root = mkdtempSync(path.join(values.dir ?? os.tmpdir(), 'precopy-bench-'));
  try {
    const store = new ImageStore(root);
    const img = await store.create({
      sessionId: 'bench',
      sourceHost: 'bench',
      pid: 1,
      pageSize: PS,
      kernel: os.release(),
      command: 'bench',
      memoryBytes: gib * 2 ** 30,
      createdAt: new Date().toISOString(),
    });
    const pages = (gib * 2 ** 30) / PS;
    const layout = [{ start: BASE, end: BASE + pages * PS, perms: 'rw-p', offset: 0, path: '', fileBacked: false, inode: 0, dev: '00:00' }];
    await img.beginRound(0, 'PRECOPY', layout);
    // Distinct buffers per in-flight slot, each page stamped so the digest pass hashes real data.
    const bufs = Array.from({ length: depth }, (_, k) => {
      const b = Buffer.alloc(batchPages * PS, 0x5a);
      for (let i = 0; i < batchPages; i++) b.writeUInt32LE(k * batchPages + i + 1, i * PS);
      return b;
    });
    const zeroMap = Buffer.alloc(Math.ceil(batchPages / 8));
    let zerosPerBatch = 0;
    if (zeroEvery > 0) {
      for (let i = zeroEvery - 1; i < batchPages; i += zeroEvery) {
        zeroMap[i >> 3] |= 1 << (i & 7);
        zerosPerBatch++;
      }
    }
    const inflight = new Set<Promise<void>>();
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    let slot = 0;
    for (let first = 0; first < pages; first += batchPages) {
      const n = Math.min(batchPages, pages - first);
      const buf = bufs[slot++ % depth];
      const full = n === batchPages && zerosPerBatch > 0;
      const write = full
        ? img.writePages([BASE + first * PS, n], zeroMap, buf.subarray(0, (n - zerosPerBatch) * PS))
        : img.writePages([BASE + first * PS, n], null, buf.subarray(0, n * PS));
      const p: Promise<void> = write.then(() => {
        inflight.delete(p);
      });
      inflight.add(p);
      if (inflight.size >= depth) await Promise.race(inflight);
    }
    await Promise.all(inflight);
    const t1 = process.hrtime.bigint();
    await img.endRound({
      round: 0,
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
      batches: 0,
    });
    const t2 = process.hrtime.bigint();
    const cpu = process.cpuUsage(c0);
    const d = await img.digest();
    const t3 = process.hrtime.bigint();
    await img.close();
    const bytes = pages * PS;
    const s = (a: bigint, b: bigint) => Number(b - a) / 1e9;
    const gbps = (sec: number) => (bytes / sec / 1e9).toFixed(2);
    process.stdout.write(
      `store-write: ${gib} GiB in batches of ${batchPages} pages, depth ${depth}, zero every ${zeroEvery || '-'}, on ${root}\n` +
        `  into page cache:   ${s(t0, t1).toFixed(3)} s  ${gbps(s(t0, t1))} GB/s\n` +
        `  endRound (fsync):  ${s(t1, t2).toFixed(3)} s\n` +
        `  write + fsync:     ${s(t0, t2).toFixed(3)} s  ${gbps(s(t0, t2))} GB/s, CPU user ${(cpu.user / 1e6).toFixed(2)} s + system ${(cpu.system / 1e6).toFixed(2)} s\n` +
        `  digest from disk:  ${s(t2, t3).toFixed(3)} s  ${gbps(s(t2, t3))} GB/s (${d.pages} pages)\n`,
    );
    return 0;
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
