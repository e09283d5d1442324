// The staging layer (sender/stage/): batches staged from real target processes decode to exactly
// the target's bytes; zero pages are bits, not bytes; what vanished between scan and read is
// dropped and reported; SentPages keeps its digest equal to a recomputation from scratch.

import test from 'ava';
import { randomFillSync } from 'node:crypto';
import { closeSync, openSync, writeSync } from 'node:fs';
import { digestOf, zeroPageHash } from '../../../common/image-digest';
import { hashPages } from '../../../native';
import { BatchStager, FROZEN_LZ4_SAMPLE_RATIO, type StagedBatch } from '../../../sender/stage/batch-stager';
import { SentPages } from '../../../sender/stage/sent-pages';
import { decodeLz4Block } from '../../../common/lz4-block';
import { verifyFrozen } from '../../../sender/verify';
import { TrackedProcess } from '../../../sender/tracking/tracked-process';
import type { RunBatch } from '../../../sender/tracking/run-batch';
import { readMem } from '../../helpers/procmem';
import { withTarget, type Target } from '../../helpers/target';
import { drain, indexesIn, PAGE, range } from '../tracking/scan-helpers';

/** The page bytes a staged batch carries, one Buffer per page in run order (zeros for zero bits). */
function decode(b: StagedBatch): { addr: number; bytes: Buffer; zero: boolean }[] {
  let raw = b.payload;
  if (b.encoding === 'LZ4') raw = decodeLz4Block(b.payload, b.rawLength);
  if (raw.length !== b.rawLength) throw new Error(`payload holds ${raw.length} bytes, raw_length ${b.rawLength}`);
  const out: { addr: number; bytes: Buffer; zero: boolean }[] = [];
  let i = 0;
  let off = 0;
  for (let r = 0; r < b.runs.length; r += 2) {
    for (let k = 0; k < b.runs[r + 1]; k++, i++) {
      const zero = b.zeroMap !== null && (b.zeroMap[i >> 3] & (1 << (i & 7))) !== 0;
      out.push({ addr: b.runs[r] + k * PAGE, zero, bytes: zero ? Buffer.alloc(PAGE) : raw.subarray(off, (off += PAGE)) });
    }
  }
  if (off !== raw.length) throw new Error(`payload has ${raw.length - off} bytes more than the non-zero pages`);
  if (i !== b.pages) throw new Error(`runs hold ${i} pages, batch says ${b.pages}`);
  return out;
}

/** Stage every batch of src; check each page against the target's memory read via /proc/PID/mem. */
async function stageAndCheck(t: { fail(m: string): void }, tg: Target, stager: BatchStager, src: AsyncIterable<RunBatch>) {
  const staged: StagedBatch[] = [];
  for await (const batch of src) staged.push(await stager.stage(batch));
  let wrong = 0;
  for (const b of staged) {
    for (const p of decode(b)) {
      if (!p.bytes.equals(readMem(tg.pid, p.addr, PAGE)) && wrong++ < 5) t.fail(`page 0x${p.addr.toString(16)} differs from the target`);
    }
  }
  return { staged, wrong };
}

/** A tracked target with a stager and its SentPages; both closed afterwards. */
async function staging<T>(
  tg: Target,
  opts: { compress: 'lz4' | 'none'; maxPages: number },
  fn: (tp: TrackedProcess, stager: BatchStager, sent: SentPages) => Promise<T>,
): Promise<T> {
  const tp = TrackedProcess.attach(tg.pid);
  const sent = new SentPages(PAGE);
  const stager = new BatchStager(tg.pid, PAGE, { compress: opts.compress, maxBatchBytes: opts.maxPages * PAGE }, sent);
  try {
    return await fn(tp, stager, sent);
  } finally {
    stager.close();
    tp.close();
  }
}

const pagesOfRuns = (runs: ArrayLike<number>): Set<number> => {
  const s = new Set<number>();
  for (let i = 0; i < runs.length; i += 2) for (let k = 0; k < runs[i + 1]; k++) s.add(runs[i] + k * PAGE);
  return s;
};

test.serial('staged batches decode (lz4 or raw) to exactly the target bytes; zero pages are bits, not payload', (t) =>
  withTarget({ mib: 16, seed: 21 }, async (tg) => {
    await tg.dontneed(10, 10);
    readMem(tg.pid, tg.pageAddr(10), 10 * PAGE); // maps the shared zero page there: PFNZERO
    await tg.stack(256); // patterned stack pages: compressible
    await staging(tg, { compress: 'lz4', maxPages: 1024 }, async (tp, stager, sent) => {
      const r0 = await stageAndCheck(t, tg, stager, tp.initialRuns(1024));
      t.is(r0.wrong, 0);
      const encodings = new Set(r0.staged.map((b) => b.encoding));
      t.deepEqual([...encodings].sort(), ['LZ4', 'RAW'], 'both encodings exercised (PRNG pages do not compress, the stack does)');
      const zeroRound0 = r0.staged.flatMap((b) =>
        decode(b)
          .filter((p) => p.zero)
          .map((p) => p.addr),
      );
      t.deepEqual(indexesIn(new Set(zeroRound0.filter((a) => a >= tg.base && a < tg.pageAddr(tg.pages))), tg.base, tg.pages), range(10, 20));
      t.true(stager.stats.zeroPages >= 10);

      // Zero pages found by content: dropped after arming, reported written, read as zeros.
      await tg.dontneed(30, 5);
      await tg.write(40, 3);
      tp.refresh();
      const r1 = await stageAndCheck(t, tg, stager, tp.dirtyRuns(1024));
      t.is(r1.wrong, 0);
      const main = r1.staged.flatMap((b) => decode(b)).filter((p) => p.addr >= tg.base && p.addr < tg.pageAddr(tg.pages));
      t.deepEqual(
        main.filter((p) => p.zero).map((p) => (p.addr - tg.base) / PAGE),
        range(30, 35),
      );
      t.deepEqual(
        main.filter((p) => !p.zero).map((p) => (p.addr - tg.base) / PAGE),
        [40, 41, 42],
      );
      for (const b of [...r0.staged, ...r1.staged]) {
        t.is(b.rawLength, (b.pages - b.zeroPages) * PAGE, 'raw_length = non-zero pages only');
        if (b.zeroPages === 0) t.is(b.zeroMap, null);
      }
      // SentPages holds the hash of every page staged, as the target's memory hashes now.
      const zero = zeroPageHash(PAGE);
      t.is(sent.hashAt(tg.pageAddr(31)), zero);
      const h = new BigUint64Array(1);
      hashPages(readMem(tg.pid, tg.pageAddr(41), PAGE), PAGE, h);
      t.is(sent.hashAt(tg.pageAddr(41)), h[0]);
    });
  }),
);

test.serial('compress none: RAW payload of the non-zero pages, byte for byte', (t) =>
  withTarget({ mib: 4, seed: 22 }, async (tg) => {
    await staging(tg, { compress: 'none', maxPages: 256 }, async (tp, stager) => {
      const r = await stageAndCheck(t, tg, stager, tp.initialRuns(256));
      t.is(r.wrong, 0);
      t.true(r.staged.every((b) => b.encoding === 'RAW'));
      t.true(r.staged.length >= 4, `${r.staged.length} batches`);
    });
  }),
);

test.serial('a range unmapped between scan and read is dropped from the batch and reported; PROT_NONE data is read', (t) =>
  withTarget({ mib: 4, seed: 23 }, async (tg) => {
    await staging(tg, { compress: 'lz4', maxPages: 4096 }, async (tp, stager, sent) => {
      await drain(tp.initialRuns(4096));
      const gone = await tg.mmap(16);
      const hidden = await tg.mmap(8, 'none'); // data behind PROT_NONE: process_vm_readv refuses it
      await tg.write(7, 2);
      tp.refresh();
      const batches = (await drain(tp.dirtyRuns(4096))).batches;
      t.is(batches.length, 1);
      const scanned = pagesOfRuns(batches[0].runs);
      t.true(scanned.has(gone) && scanned.has(hidden) && scanned.has(tg.pageAddr(7)), 'precondition: all three in the batch');
      await tg.munmap(gone, 16);
      const b = await stager.stage(batches[0]);
      t.deepEqual(b.unreadable, [gone, 16], 'exactly the unmapped run is reported');
      const kept = pagesOfRuns(b.runs);
      t.false(
        [...kept].some((a) => a >= gone && a < gone + 16 * PAGE),
        'and is not in the batch',
      );
      t.is(b.pages, batches[0].pages - 16);
      t.false(sent.has(gone), 'nor recorded as sent');
      for (const p of decode(b)) if (!p.bytes.equals(readMem(tg.pid, p.addr, PAGE))) t.fail(`page 0x${p.addr.toString(16)} differs`);
      t.true(kept.has(hidden) && kept.has(hidden + 7 * PAGE), 'PROT_NONE pages staged');
      t.is(stager.stats.procMemPages, 8, 'through /proc/PID/mem');
      t.false(readMem(tg.pid, hidden, 8 * PAGE).equals(Buffer.alloc(8 * PAGE)), 'precondition: they hold data');
    });
  }),
);

test.serial('verify: verifyFrozen() finds exactly the pages written since they were staged (PROT_NONE data included)', (t) =>
  withTarget({ mib: 8, seed: 24 }, async (tg) => {
    const hidden = await tg.mmap(4, 'none');
    await staging(tg, { compress: 'lz4', maxPages: 512 }, async (tp, stager, sent) => {
      for await (const b of tp.initialRuns(512)) await stager.stage(b);
      await tg.write(5, 2); // not staged: the image is behind for these two pages
      const populated = await drain(tp.populatedRuns(sent, 512));
      t.true(populated.pages.has(hidden), 'precondition: the PROT_NONE data is in the populated set');
      const runs = populated.batches.flatMap((b) => Array.from(b.runs));
      const { differ, unreadable } = await verifyFrozen(tg.pid, PAGE, runs, sent, 512);
      const main = indexesIn(pagesOfRuns(differ), tg.base, tg.pages);
      t.deepEqual(main, [5, 6], 'the two pages written after staging, in main');
      t.deepEqual(unreadable, []);
    });
  }),
);

test('SentPages: digest equals a recomputation from scratch after overwrites and forgets', (t) => {
  const sent = new SentPages(PAGE);
  const model = new Map<number, bigint>();
  let seed = 12345;
  const rnd = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % n;
  };
  const base = 0x7f0000000000;
  const span = 3000; // pages: several 2 MiB chunks
  for (let step = 0; step < 300; step++) {
    const runs: number[] = [];
    let at = rnd(span);
    for (let k = 0; k < 1 + rnd(5) && at < span; k++) {
      const n = Math.min(1 + rnd(40), span - at);
      runs.push(base + at * PAGE, n);
      at += n + 1 + rnd(30);
    }
    if (rnd(4) === 0) {
      const held = sent.forget(runs);
      const expect: number[] = [];
      for (let r = 0; r < runs.length; r += 2) {
        for (let k = 0; k < runs[r + 1]; k++) {
          const a = runs[r] + k * PAGE;
          if (model.delete(a)) {
            const n = expect.length;
            if (n > 0 && expect[n - 2] + expect[n - 1] * PAGE === a) expect[n - 1]++;
            else expect.push(a, 1);
          }
        }
      }
      t.deepEqual(held, expect, 'forget returns exactly the held runs');
    } else {
      const total = runs.filter((_, i) => i % 2 === 1).reduce((a, b) => a + b, 0);
      const hashes = new BigUint64Array(total);
      let p = 0;
      for (let r = 0; r < runs.length; r += 2) {
        for (let k = 0; k < runs[r + 1]; k++, p++) {
          hashes[p] = BigInt(rnd(1 << 30)) * 0x9e3779b9n + BigInt(step);
          model.set(runs[r] + k * PAGE, hashes[p]);
        }
      }
      sent.record(runs, hashes);
    }
  }
  const addrs = Float64Array.from([...model.keys()]);
  const hashes = BigUint64Array.from([...model.values()]);
  t.is(sent.pages(), model.size);
  t.is(sent.digest(), digestOf(addrs, hashes, addrs.length), 'incremental digest = digest from scratch');
  const all = [...pagesOfRuns(sent.runs())].sort((a, b) => a - b);
  t.deepEqual(
    all,
    [...model.keys()].sort((a, b) => a - b),
    'runs() lists exactly the held pages',
  );
  for (const [a, h] of model) if (sent.hashAt(a) !== h) t.fail(`hash of 0x${a.toString(16)}`);
  const lo = base + 1000 * PAGE;
  const hi = base + 2100 * PAGE;
  t.deepEqual(
    [...pagesOfRuns(sent.heldRunsIn(lo, hi))].sort((a, b) => a - b),
    all.filter((a) => a >= lo && a < hi),
  );
  t.deepEqual(sent.heldRunsIn(base + 1e6 * PAGE, base + 2e6 * PAGE), [], 'a far sparse range holds nothing');
  sent.forget([base, span]);
  t.is(sent.pages(), 0);
  t.is(sent.digest(), 0n, 'empty image: digest 0');
});

test.serial('released batches give their payload buffers back: no new buffer per batch; held ones stay intact', (t) =>
  withTarget({ mib: 16, seed: 25 }, async (tg) => {
    await staging(tg, { compress: 'lz4', maxPages: 256 }, async (tp, stager) => {
      const held = await stageAndCheck(
        t,
        tg,
        stager,
        (async function* () {
          let n = 0;
          for await (const b of tp.initialRuns(256)) if (n++ < 2) yield b;
        })(),
      );
      t.is(held.wrong, 0);
      const heldBytes = held.staged.map((b) => Buffer.from(b.payload));
      let batches = 0;
      await tg.write(0, 4096);
      tp.refresh();
      for await (const b of tp.dirtyRuns(256)) {
        const s = await stager.stage(b);
        for (const p of decode(s)) if (!p.bytes.equals(readMem(tg.pid, p.addr, PAGE))) t.fail(`page 0x${p.addr.toString(16)} differs`);
        s.release();
        batches++;
      }
      t.true(batches >= 16, `${batches} batches`);
      t.is(stager.payloadSlotsMade, 3, 'the two held batches and one reused for every released batch');
      // the held batches were not overwritten by the later ones
      t.is(held.staged.length, 2);
      held.staged.forEach((b, i) => t.true(b.payload.equals(heldBytes[i]), `held batch ${i} unchanged`));
    });
  }),
);

test.serial('lz4 gate: pages that shrink to ~0.65 are compressed while the target runs, sent RAW while it is frozen', (t) =>
  withTarget({ mib: 4, seed: 24 }, async (tg) => {
    // 64 pages (enough for the sample to be taken): 2600 random bytes, then zeros, each.
    const n = 64;
    const bytes = Buffer.alloc(n * PAGE);
    for (let i = 0; i < n; i++) randomFillSync(bytes, i * PAGE, 2600);
    const fd = openSync(`/proc/${tg.pid}/mem`, 'r+');
    try {
      writeSync(fd, bytes, 0, bytes.length, tg.pageAddr(0));
    } finally {
      closeSync(fd);
    }
    await staging(tg, { compress: 'lz4', maxPages: n }, async (_tp, stager) => {
      const batch: RunBatch = { runs: new Float64Array([tg.pageAddr(0), n]), pages: n };
      const running = await stager.stage(batch);
      t.is(running.encoding, 'LZ4');
      t.true(running.payload.length < 0.8 * bytes.length && running.payload.length > 0.5 * bytes.length, `${running.payload.length} of ${bytes.length}`);
      t.true(decodeLz4Block(running.payload, running.rawLength).equals(bytes));
      running.release();
      stager.frozen = true;
      const frozen = await stager.stage(batch);
      t.is(frozen.encoding, 'RAW', `gate ${FROZEN_LZ4_SAMPLE_RATIO}: not worth a pass in the freeze`);
      t.true(frozen.payload.equals(bytes));
      frozen.release();
      stager.frozen = false;
      const again = await stager.stage(batch);
      t.is(again.encoding, 'LZ4');
      again.release();
    });
  }),
);
