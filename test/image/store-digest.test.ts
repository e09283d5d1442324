// The running image digest (receiver/store/running-digest.ts): kept as pages arrive, it must equal
// the digest a model computes independently and the digest recomputed from disk, whatever the
// sequence of writes, overwrites, zero pages, discards and layout changes, and across a writer
// closing mid-round and another resuming (the digest is then rebuilt from the pages on disk). A
// seeded PRNG makes "whatever" the same sequence every run.

import test from 'ava';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { Vma } from '../../common/vma';
import { ImageStore, storeCounters, type SessionWriter } from '../../image/image-store';
import { Model, PS, figures, meta, prng, sendBatch, tempDir, vma } from './store-helpers';

/** The address ranges pages may live in: across a 1 GiB window boundary, over several 2 MiB
 *  hash-table chunks, and in a window of their own. */
const UNIVERSE: Vma[] = [vma(0x555555554000, 16), vma(0x7f0000000000, 40), vma(0x7f0040000000 - 20 * PS, 48), vma(0x7f1000000000 - 7 * PS, 1100)];

interface Run {
  rand: () => number;
  int: (n: number) => number;
}

function runOf(seed: number): Run {
  const rand = prng(seed);
  return { rand, int: (n) => Math.floor(rand() * n) };
}

/** A layout of some of the universe's VMAs, each possibly shortened (a shrink or partial munmap). */
function randomLayout(r: Run): Vma[] {
  const out = UNIVERSE.filter(() => r.rand() < 0.8).map((v) => {
    const pages = (v.end - v.start) / PS;
    return r.rand() < 0.5 ? v : vma(v.start, 1 + r.int(pages));
  });
  return out.length > 0 ? out : [UNIVERSE[1]];
}

/** A few random runs of pages inside one VMA of the layout. */
function randomPages(r: Run, layout: Vma[]): number[] {
  const v = layout[r.int(layout.length)];
  const pages = (v.end - v.start) / PS;
  const addrs = new Set<number>();
  for (let k = 1 + r.int(4); k > 0; k--) {
    const first = r.int(pages);
    const n = 1 + r.int(Math.min(80, pages - first));
    for (let i = 0; i < n; i++) addrs.add(v.start + (first + i) * PS);
  }
  return [...addrs];
}

/** What the store holds after a writer stopped mid-round: the durable pages, data pages with the
 *  last bytes written at their address (pages are written in place, even in a round never ended). */
function diskModel(durable: Map<number, Buffer | 'zero'>, layout: Vma[], lastData: Map<number, Buffer>): Model {
  const m = new Model();
  m.layout = layout;
  for (const [a, c] of durable) m.pages.set(a, c === 'zero' ? 'zero' : lastData.get(a)!);
  return m;
}

test('running digest = model digest = digest from disk, through random writes, zero pages, discards, layout shrinks and resumes (seeded)', async (t) => {
  const r = runOf(20240611);
  const store = new ImageStore(tempDir(t));
  let img: SessionWriter = await store.create(meta('prop'));
  let model = new Model();
  const lastData = new Map<number, Buffer>();
  let durable = new Map<number, Buffer | 'zero'>();
  let durableLayout: Vma[] = [];
  let round = 0;
  const counts = { writes: 0, discards: 0, rounds: 0, resumes: 0, zeroPages: 0, overwrites: 0, dropped: 0 };

  const begin = async (layout: Vma[]) => {
    const heldBefore = model.pages.size;
    await img.beginRound(round, 'PRECOPY', layout);
    model.setLayout(layout);
    counts.dropped += heldBefore - model.pages.size;
  };
  await begin(randomLayout(r));

  for (let step = 0; step < 400; step++) {
    const op = r.rand();
    if (op < 0.65) {
      const addrs = randomPages(r, model.layout);
      const zeroShare = r.rand() < 0.2 ? 1 : 0.3;
      const zeros = new Set(addrs.filter(() => r.rand() < zeroShare));
      counts.overwrites += addrs.filter((a) => model.pages.has(a)).length;
      counts.zeroPages += zeros.size;
      await sendBatch(img, model, addrs, step, zeros);
      for (const a of addrs) if (!zeros.has(a)) lastData.set(a, model.pages.get(a) as Buffer);
      counts.writes++;
    } else if (op < 0.8) {
      const v = model.layout[r.int(model.layout.length)];
      const pages = (v.end - v.start) / PS;
      const first = r.int(pages);
      const n = 1 + r.int(pages - first);
      await img.discard([v.start + first * PS, n]);
      model.discard(v.start + first * PS, n);
      counts.discards++;
    } else if (op < 0.95) {
      await img.endRound(figures(round));
      durable = new Map(model.pages);
      durableLayout = model.layout;
      round++;
      counts.rounds++;
      await begin(randomLayout(r));
    } else {
      // The writer goes away mid-round; another resumes at the last durable round.
      await img.close();
      img = await store.resume('prop');
      model = diskModel(durable, durableLayout, lastData);
      t.deepEqual(await img.heldDigest(), model.digest(), `step ${step}: digest rebuilt on resume`);
      round = img.lastDurableRound + 1;
      counts.resumes++;
      await begin(durableLayout.length > 0 && r.rand() < 0.5 ? durableLayout : randomLayout(r));
    }
    t.deepEqual(await img.heldDigest(), model.digest(), `step ${step}: running digest`);
    t.is(img.imagePages, model.pages.size);
    if (step % 40 === 39) t.deepEqual(await img.digest(), model.digest(), `step ${step}: digest from disk`);
  }
  t.log(JSON.stringify(counts));
  t.true(counts.resumes >= 3 && counts.rounds >= 20 && counts.dropped > 0 && counts.zeroPages > 0 && counts.overwrites > 0, JSON.stringify(counts));

  // Commit with a smaller final layout: refused with a wrong digest, accepted with the model's.
  await img.endRound(figures(round));
  const final = model.layout.slice(0, Math.max(1, model.layout.length - 1));
  model.setLayout(final);
  const want = model.digest();
  const bad = await img.commit({ layout: final, threads: [], imageDigest: want.digest ^ 0x10n, imagePages: want.pages });
  t.false(bad.ok);
  t.regex(bad.message, /digest mismatch/);
  t.deepEqual({ digest: bad.imageDigest, pages: bad.imagePages }, want, 'a refused commit reports what the receiver holds');
  const ok = await img.commit({ layout: final, threads: [], imageDigest: want.digest, imagePages: want.pages });
  t.true(ok.ok, ok.message);
  await img.close();
  const ro = await store.open('prop');
  const v = await ro.verify();
  t.true(v.ok, v.problems.join('; '));
  t.is(v.digest, want.digest);
  await ro.close();
});

test('a zero page overwriting a data page, and a data page overwriting a zero page, swap their digest terms', async (t) => {
  const store = new ImageStore(tempDir(t));
  const img = await store.create(meta('swap'));
  const model = new Model();
  const A = 0x7f0000000000;
  model.setLayout([vma(A, 4)]);
  await img.beginRound(0, 'PRECOPY', model.layout);
  await sendBatch(img, model, [A, A + PS, A + 2 * PS], 0, new Set([A + PS]));
  t.deepEqual(await img.heldDigest(), model.digest());
  await sendBatch(img, model, [A, A + PS], 1, new Set([A]));
  t.deepEqual(await img.heldDigest(), model.digest());
  await sendBatch(img, model, [A + PS], 2, new Set([A + PS]));
  t.deepEqual(await img.heldDigest(), model.digest(), 'a zero page sent again as zero');
  await img.discard([A, 4]);
  model.discard(A, 4);
  t.deepEqual(await img.heldDigest(), { digest: 0n, pages: 0 }, 'nothing held: digest 0');
  await img.endRound(figures(0));
  t.deepEqual(await img.digest(), { digest: 0n, pages: 0 });
  await img.close();
});

// Serial: storeCounters is process-wide, and the other tests of this file read pages concurrently.
test.serial(
  'a read-only handle has no running digest; resuming only to abort reads nothing; a session whose data is missing on disk cannot go on',
  async (t) => {
    const dir = tempDir(t);
    const store = new ImageStore(dir);
    const A = 0x7f0000000000;
    for (const id of ['gone', 'idle']) {
      const img = await store.create(meta(id));
      const model = new Model();
      model.setLayout([vma(A, 8)]);
      await img.beginRound(0, 'PRECOPY', model.layout);
      await sendBatch(img, model, [A, A + 7 * PS], 0);
      await img.endRound(figures(0));
      await img.close();
    }

    const ro = await store.open('gone');
    // @ts-expect-error a reader keeps no running digest: heldDigest is a writer's
    t.is(ro.heldDigest, undefined);
    await ro.close();

    // The digest is rebuilt at the first round or commit, not at resume (which may be to abort).
    const readBefore = storeCounters.bytesRead;
    const idle = await store.resume('idle');
    await idle.abort('nobody came back');
    await idle.close();
    t.is(storeCounters.bytesRead, readBefore, 'no page read to abort');

    // The chunk file loses its last page (storage damage): the running digest cannot be rebuilt, so
    // the session takes no round and no commit (it used to be refused at every commit).
    const chunks = path.join(dir, 'gone', 'chunks');
    const [name] = await fsp.readdir(chunks);
    await fsp.truncate(path.join(chunks, name), 7 * PS);
    const img = await store.resume('gone');
    const damaged = /session gone is damaged: data of page 0x7f0000007000 is missing from its chunk file/;
    await t.throwsAsync(img.beginRound(1, 'PRECOPY', [vma(A, 8)]), { message: damaged });
    await t.throwsAsync(img.commit({ layout: [vma(A, 8)], threads: [], imageDigest: 0n, imagePages: 2 }), { message: damaged });
    t.is(img.state, 'receiving');
    await img.close();
  },
);
