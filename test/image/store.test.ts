// The image store on real files: pages in any order, overwritten across rounds, layout edits
// (mmap, munmap, mremap, mprotect splits), zero pages, discards, durability between handles,
// commit with digest check, verify fix-up rounds after a commit, and ownership rules.

import test from 'ava';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { ImageStore, StoreError, type SessionReader, type StoreErrorCode } from '../../image/image-store';
import { exportRaw } from '../../receiver/export/raw-export';
import { vmaRangeName, type Vma } from '../../common/vma';
import { Model, PS, chunked, figures, meta, pageBytes, pagesOf, sendBatch, shuffled, tempDir, vma } from './store-helpers';

const A = 0x7f0000000000;
/** 16 pages below a 1 GiB window boundary: VMAs here span two chunk files. */
const B = 0x7f0040000000 - 16 * PS;
const C = 0x555555554000;
const D = 0x7f1000000000;
const E = 0x7f2000000000;

async function exportAndCompare(t: import('ava').ExecutionContext, img: SessionReader, model: Model): Promise<void> {
  const out = path.join(tempDir(t, 'precopy-export-'), 'raw');
  await exportRaw(img, out);
  const names = (await fsp.readdir(out)).sort();
  const want = [...model.layout.map((v) => `${vmaRangeName(v.start, v.end)}.bin`), 'manifest.json'].sort();
  t.deepEqual(names, want);
  for (const v of model.layout) {
    const got = await fsp.readFile(path.join(out, `${vmaRangeName(v.start, v.end)}.bin`));
    t.true(got.equals(model.vmaBytes(v)), `content of ${vmaRangeName(v.start, v.end)}`);
  }
}

async function stateOnDisk(store: ImageStore, id: string): Promise<string> {
  const img = await store.open(id);
  await img.close();
  return img.state;
}

async function expectStoreError(t: import('ava').ExecutionContext, p: Promise<unknown>, code: StoreErrorCode, match?: RegExp): Promise<void> {
  const err = await t.throwsAsync(p);
  t.true(err instanceof StoreError, `expected StoreError, got ${String(err)}`);
  t.is((err as StoreError).code, code, err?.message);
  if (match) t.regex(err!.message, match);
}

test('pages in any order, overwritten across rounds with mmap/munmap/mremap/mprotect layout edits, export equals the model', async (t) => {
  const store = new ImageStore(tempDir(t));
  const img = await store.create(meta('s1'));
  const model = new Model();

  // Round 0: three VMAs, one spanning a 1 GiB window boundary; every page, shuffled batches, some zero pages.
  const l0 = [vma(C, 16), vma(A, 64), vma(B, 32)].sort((a, b) => a.start - b.start);
  await img.beginRound(0, 'PRECOPY', l0);
  model.setLayout(l0);
  const all0 = [...pagesOf(A, 64), ...pagesOf(B, 32), ...pagesOf(C, 16)];
  const zeros0 = new Set([A + 3 * PS, A + 4 * PS, B + 15 * PS, B + 16 * PS, C]);
  for (const batch of chunked(shuffled(all0), 10)) await sendBatch(img, model, batch, 0, zeros0);
  const r0 = await img.endRound(figures(0));
  t.deepEqual(r0, { round: 0, pagesStored: 112, durableBytes: (112 - 5) * PS });

  // Round 1: munmap C; mprotect splits A in three; mremap B to D (re-sent there); mmap E; some
  // pages rewritten, a zero page becomes data, a data page becomes zero; a discard (dontneed).
  const l1 = [vma(A, 16), vma(A + 16 * PS, 16, { perms: 'r--p' }), vma(A + 32 * PS, 32), vma(D, 32), vma(E, 8, { perms: 'rw-s' })];
  await img.beginRound(1, 'PRECOPY', l1);
  model.setLayout(l1);
  await sendBatch(img, model, pagesOf(D, 32), 1, new Set([D + 15 * PS]));
  await sendBatch(img, model, [E + 2 * PS, E + 5 * PS], 1);
  await sendBatch(img, model, [A + 40 * PS, A + 3 * PS, A + 41 * PS, A + 5 * PS], 2, new Set([A + 5 * PS]));
  await img.discard([A + 60 * PS, 2]);
  model.discard(A + 60 * PS, 2);
  await img.endRound(figures(1));

  // Round 2 (frozen): a page sent twice in the round (second wins), another zero page.
  await img.beginRound(2, 'STOP_AND_COPY', l1);
  await sendBatch(img, model, [A, A + 1 * PS], 3);
  await sendBatch(img, model, [A + 1 * PS, A + 2 * PS], 4, new Set([A + 2 * PS]));
  const r2 = await img.endRound(figures(2));
  t.is(r2.pagesStored, model.pages.size);

  const want = model.digest();
  t.deepEqual(await img.digest(), want);
  const res = await img.commit({ layout: l1, threads: [], imageDigest: want.digest, imagePages: want.pages });
  t.true(res.ok, res.message);
  t.is(img.state, 'committed');
  t.is(img.rounds().length, 3);
  await img.close();

  const ro = await store.open('s1');
  t.true((await ro.verify()).ok);
  await exportAndCompare(t, ro, model);
  const [s] = await store.list();
  t.like(s, { state: 'committed', rounds: 3, imagePages: model.pages.size, imageBytes: model.pages.size * PS });
  await ro.close();
});

test('readPages reports data, zero and absent pages; a new handle sees only durable rounds', async (t) => {
  const store = new ImageStore(tempDir(t));
  const img = await store.create(meta('s2'));
  const model = new Model();
  const layout = [vma(A, 8)];
  await img.beginRound(0, 'PRECOPY', layout);
  await sendBatch(img, model, [A, A + PS, A + 3 * PS], 0, new Set([A + PS]));
  await img.endRound(figures(0));
  await img.beginRound(1, 'PRECOPY', layout);
  await sendBatch(img, model, [A + 5 * PS], 1);

  const into = Buffer.alloc(8 * PS, 0xee);
  const presence = new Uint8Array(8);
  await img.readPages(A, 8, into, presence);
  t.deepEqual([...presence], [1, 2, 0, 1, 0, 1, 0, 0]);
  t.true(into.subarray(0, PS).equals(pageBytes(A, 0)));
  t.true(into.subarray(PS, 3 * PS).equals(Buffer.alloc(2 * PS)));
  t.true(into.subarray(5 * PS, 6 * PS).equals(pageBytes(A + 5 * PS, 1)));

  // The open round is not durable: another handle sees round 0 only.
  const ro = await store.open('s2');
  t.is(ro.lastDurableRound, 0);
  await ro.readPages(A, 8, into, presence);
  t.deepEqual([...presence], [1, 2, 0, 1, 0, 0, 0, 0]);
  // @ts-expect-error a reader cannot start a round: only create/resume give a writer
  t.is(ro.beginRound, undefined);
  await ro.close();
  await img.endRound(figures(1));
  const ro2 = await store.open('s2');
  t.is(ro2.lastDurableRound, 1);
  await ro2.readPages(A, 8, into, presence);
  t.deepEqual([...presence], [1, 2, 0, 1, 0, 1, 0, 0]);
  t.false((await ro2.verify()).ok, 'a receiving image never verifies');
  await ro2.close();
  await img.close();
});

test('digest mismatch is refused and the session stays receiving; a verify fix-up after commit reopens it', async (t) => {
  const store = new ImageStore(tempDir(t));
  const img = await store.create(meta('s3'));
  const model = new Model();
  const layout = [vma(A, 4)];
  model.setLayout(layout);
  await img.beginRound(0, 'STOP_AND_COPY', layout);
  await sendBatch(img, model, pagesOf(A, 4), 0);
  await img.endRound(figures(0));

  const want = model.digest();
  const bad = await img.commit({ layout, threads: [], imageDigest: want.digest ^ 1n, imagePages: want.pages });
  t.false(bad.ok);
  t.regex(bad.message, /digest mismatch/);
  t.is(bad.imageDigest, want.digest);
  t.is(img.state, 'receiving');
  t.is(await stateOnDisk(store, 's3'), 'receiving');
  const wrongCount = await img.commit({ layout, threads: [], imageDigest: want.digest, imagePages: 3 });
  t.false(wrongCount.ok);

  t.true((await img.commit({ layout, threads: [], imageDigest: want.digest, imagePages: want.pages })).ok);
  await expectStoreError(t, img.commit({ layout, threads: [], imageDigest: want.digest, imagePages: want.pages }), 'BAD_STATE');

  // Verify fix-up: the sender found page 2 different and re-sends it.
  await img.beginRound(1, 'VERIFY_FIX', layout);
  t.is(await stateOnDisk(store, 's3'), 'receiving', 'the committed image is no longer claimed while it changes');
  await sendBatch(img, model, [A + 2 * PS], 9);
  await img.endRound(figures(1));
  const fixed = model.digest();
  t.true((await img.commit({ layout, threads: [], imageDigest: fixed.digest, imagePages: fixed.pages })).ok);
  await img.close();
  const ro = await store.open('s3');
  const v = await ro.verify();
  t.true(v.ok, v.problems.join('; '));
  await exportAndCompare(t, ro, model);
  await ro.close();
});

test('commit drops pages outside the final layout and stores thread registers', async (t) => {
  const store = new ImageStore(tempDir(t));
  const img = await store.create(meta('s4'));
  const model = new Model();
  await img.beginRound(0, 'STOP_AND_COPY', [vma(C, 2), vma(A, 8)]);
  await sendBatch(img, model, [...pagesOf(A, 8), ...pagesOf(C, 2)], 0);
  await img.endRound(figures(0));
  const final = [vma(A, 4)];
  model.setLayout(final);
  const want = model.digest();
  const regs = Buffer.alloc(216, 7);
  const res = await img.commit({
    layout: final,
    threads: [{ tid: 4242, regs, fpregs: Buffer.alloc(512, 1) }],
    imageDigest: want.digest,
    imagePages: want.pages,
  });
  t.true(res.ok, res.message);
  t.is(res.imagePages, 4);
  const m = await img.committedManifest();
  t.deepEqual(m.layout, final);
  t.is(m.threads.length, 1);
  t.true(m.threads[0].regs.equals(regs));
  await img.recordReport({ result: 'committed', downtime_seconds: 0.01 });
  await img.close();
  const ro = await store.open('s4');
  t.deepEqual(ro.report(), { result: 'committed', downtime_seconds: 0.01 });
  t.true((await ro.verify()).ok);
  await ro.close();
});

test('bad input is refused before anything is written', async (t) => {
  const store = new ImageStore(tempDir(t));
  const img = await store.create(meta('s5'));
  const model = new Model();
  const layout = [vma(A, 8), vma(A + 16 * PS, 8)];
  await expectStoreError(t, img.writePages([A, 1], null, pageBytes(A, 0)), 'BAD_STATE', /outside a round/);
  await expectStoreError(t, img.endRound(figures(0)), 'BAD_STATE');
  await img.beginRound(0, 'PRECOPY', layout);
  await sendBatch(img, model, pagesOf(A, 8), 0);
  const before = await img.digest();
  const page = pageBytes(A, 5);
  const cases: [string, () => Promise<unknown>, StoreErrorCode][] = [
    ['misaligned run', () => img.writePages([A + 1, 1], null, page), 'INVALID'],
    ['outside layout', () => img.writePages([A + 8 * PS, 1], null, page), 'INVALID'],
    ['run across two VMAs', () => img.writePages([A + 7 * PS, 10], null, Buffer.alloc(10 * PS)), 'INVALID'],
    ['data too short', () => img.writePages([A, 2], null, page), 'INVALID'],
    ['data too long', () => img.writePages([A, 1], null, Buffer.concat([page, page])), 'INVALID'],
    ['odd runs', () => img.writePages([A], null, page), 'INVALID'],
    ['zero count', () => img.writePages([A, 0], null, Buffer.alloc(0)), 'INVALID'],
    ['negative count', () => img.writePages([A, -1], null, Buffer.alloc(0)), 'INVALID'],
    ['overlapping runs', () => img.writePages([A, 2, A + PS, 1], null, Buffer.alloc(3 * PS)), 'INVALID'],
    ['descending runs', () => img.writePages([A + 2 * PS, 1, A, 1], null, Buffer.alloc(2 * PS)), 'INVALID'],
    ['zero map wrong length', () => img.writePages([A, 1], Buffer.alloc(2), page), 'INVALID'],
    ['zero map bits past the end', () => img.writePages([A, 1], Buffer.from([0x02]), page), 'INVALID'],
    ['huge count', () => img.writePages([A, 2 ** 52], null, page), 'INVALID'],
    ['unsafe address', () => img.writePages([2 ** 60, 1], null, page), 'INVALID'],
    ['round already open', () => img.beginRound(1, 'PRECOPY', layout), 'BAD_STATE'],
    ['end of another round', () => img.endRound(figures(3)), 'BAD_STATE'],
    ['commit during a round', () => img.commit({ layout, threads: [], imageDigest: 0n, imagePages: 0 }), 'BAD_STATE'],
    ['bad figures', () => img.endRound({ ...figures(0), wireBytes: NaN }), 'INVALID'],
  ];
  for (const [name, call, code] of cases) {
    const err = await t.throwsAsync(call(), undefined, name);
    t.is((err as StoreError).code, code, `${name}: ${err?.message}`);
  }
  t.deepEqual(await img.digest(), before, 'nothing changed');
  await img.endRound(figures(0));

  const badLayouts: [string, Vma[]][] = [
    ['unsorted', [vma(A + 16 * PS, 1), vma(A, 1)]],
    ['overlapping', [vma(A, 4), vma(A + 2 * PS, 4)]],
    ['misaligned', [{ ...vma(A, 1), end: A + 100 }]],
    ['empty', [{ ...vma(A, 1), end: A }]],
    ['bad perms', [vma(A, 1, { perms: 'rwxq' })]],
    ['file-backed without path', [vma(A, 1, { fileBacked: true })]],
  ];
  for (const [name, l] of badLayouts) {
    const err = await t.throwsAsync(img.beginRound(1, 'PRECOPY', l), undefined, name);
    t.is((err as StoreError).code, 'INVALID', name);
  }
  await expectStoreError(t, img.beginRound(0, 'PRECOPY', layout), 'BAD_STATE', /does not come after/);
  await expectStoreError(t, img.beginRound(1, 'SOMETIME' as 'PRECOPY', layout), 'INVALID');
  await img.close();
});

test('session ids are checked and nothing is created outside the store directory', async (t) => {
  const parent = tempDir(t);
  const store = new ImageStore(path.join(parent, 'images'));
  for (const id of ['../x', '', '.hidden', 'a'.repeat(65), 'a/b', '..', 'x\0y', 'a b']) {
    await expectStoreError(t, store.create(meta(id)), 'BAD_ID');
    await expectStoreError(t, store.open(id), 'BAD_ID');
    await expectStoreError(t, store.resume(id), 'BAD_ID');
    t.false(ImageStore.validSessionId(id), id);
  }
  t.deepEqual(await fsp.readdir(parent), ['images']);
  t.deepEqual(await fsp.readdir(path.join(parent, 'images')), []);
  for (const id of ['a'.repeat(64), 'x', 'run-1.2_b', '-dash']) t.true(ImageStore.validSessionId(id), id);
  await (await store.create(meta('a'.repeat(64)))).close();
  await expectStoreError(t, store.create(meta('a'.repeat(64))), 'EXISTS');
  await expectStoreError(t, store.open('nope'), 'NOT_FOUND');
  await expectStoreError(t, store.create(meta('ok', { pageSize: 1000 })), 'INVALID');
  await expectStoreError(t, store.create(meta('ok', { createdAt: 'yesterday' })), 'INVALID');

  // A symlink planted under DIR is not followed.
  await fsp.symlink(parent, path.join(store.dir, 'planted'));
  await expectStoreError(t, store.open('planted'), 'NOT_FOUND');
});

test('one writer per session; resume continues at the last durable round; fail and abort', async (t) => {
  const store = new ImageStore(tempDir(t));
  const img = await store.create(meta('s6'));
  await expectStoreError(t, store.resume('s6'), 'BAD_STATE', /in use/);
  const model = new Model();
  await img.beginRound(0, 'PRECOPY', [vma(A, 4)]);
  await sendBatch(img, model, pagesOf(A, 4), 0);
  await img.endRound(figures(0));
  await img.beginRound(1, 'PRECOPY', [vma(A, 4)]);
  await sendBatch(img, model, [A], 1);
  await img.close(); // round 1 never ended: not durable

  const again = await store.resume('s6');
  t.is(again.lastDurableRound, 0);
  t.is(again.openRound, undefined);
  await expectStoreError(t, again.beginRound(0, 'PRECOPY', [vma(A, 4)]), 'BAD_STATE');
  await again.beginRound(1, 'PRECOPY', [vma(A, 4)]);
  await sendBatch(again, model, [A], 1);
  await again.endRound(figures(1));
  await again.abort('user pressed ^C');
  t.is(again.state, 'aborted');
  await expectStoreError(t, again.beginRound(2, 'PRECOPY', [vma(A, 4)]), 'BAD_STATE', /aborted/);
  await again.close();
  await expectStoreError(t, store.resume('s6'), 'BAD_STATE', /aborted/);
  const [s] = await store.list();
  t.like(s, { state: 'aborted', reason: 'user pressed ^C', rounds: 2 });

  // A committed image stays committed whatever its writer is told afterwards.
  const c = await store.create(meta('s7'));
  await c.beginRound(0, 'STOP_AND_COPY', [vma(A, 1)]);
  const m7 = new Model();
  await sendBatch(c, m7, [A], 0);
  await c.endRound(figures(0));
  const d = m7.digest();
  t.true((await c.commit({ layout: [vma(A, 1)], threads: [], imageDigest: d.digest, imagePages: d.pages })).ok);
  await c.fail('stream broke after commit');
  t.is(c.state, 'committed');
  await c.close();
  const ro = await store.open('s7');
  t.true((await ro.verify()).ok);
  await ro.close();
});

test('gc removes old failed and aborted sessions only, committed ones only when asked', async (t) => {
  const store = new ImageStore(tempDir(t));
  const mk = async (id: string, end: 'fail' | 'abort' | 'commit' | 'none') => {
    const img = await store.create(meta(id));
    if (end === 'fail') await img.fail('broken');
    if (end === 'abort') await img.abort('stopped');
    if (end === 'commit') t.true((await img.commit({ layout: [], threads: [], imageDigest: 0n, imagePages: 0 })).ok);
    await img.close();
  };
  await mk('f', 'fail');
  await mk('a', 'abort');
  await mk('c', 'commit');
  await mk('r', 'none');
  const held = await store.create(meta('held'));
  await held.fail('x'); // failed but still open by a writer: kept
  t.deepEqual(await store.gc({ olderThanMs: 3600_000 }), [], 'nothing old enough');
  t.deepEqual((await store.gc({ olderThanMs: 0 })).sort(), ['a', 'f']);
  t.deepEqual((await store.list()).map((s) => s.meta.sessionId).sort(), ['c', 'held', 'r']);
  await held.close();
  t.deepEqual(await store.gc({ olderThanMs: 0, states: ['committed'] }), ['c']);
  t.deepEqual((await store.list()).map((s) => s.meta.sessionId).sort(), ['held', 'r']);
  await expectStoreError(t, store.gc({ olderThanMs: 0, states: ['bogus' as 'failed'] }), 'INVALID');
});

test('pages spread over too many address windows are refused (bitmap memory is bounded)', async (t) => {
  const store = new ImageStore(tempDir(t));
  const img = await store.create(meta('wide'));
  const GiB = 2 ** 30;
  const base = 0x100000000000;
  await img.beginRound(0, 'PRECOPY', [vma(base, (4097 * GiB) / PS)]);
  const runs = Array.from({ length: 4097 }, (_, i) => [base + i * GiB, 1]).flat();
  const allZero = Buffer.alloc(Math.ceil(4097 / 8), 0xff);
  allZero[allZero.length - 1] = 0x01; // bits past the last page stay clear
  await expectStoreError(t, img.writePages(runs, allZero, Buffer.alloc(0)), 'INVALID', /more than 4096 address windows/);
  t.is(img.imagePages, 0, 'nothing marked');
  await img.writePages(runs.slice(0, 2 * 4096), Buffer.alloc(512, 0xff), Buffer.alloc(0));
  t.is(img.imagePages, 4096);
  await img.close();
});

test('overlapping writePages calls (not awaited one by one) apply in call order', async (t) => {
  const store = new ImageStore(tempDir(t));
  const img = await store.create(meta('pipe'));
  const model = new Model();
  model.setLayout([vma(A, 512)]);
  await img.beginRound(0, 'PRECOPY', model.layout);
  // 24 batches in flight at once; the same pages are re-sent by later batches with newer content.
  const calls: Promise<void>[] = [];
  for (let gen = 0; gen < 24; gen++) {
    const first = (gen * 37) % 384;
    calls.push(sendBatch(img, model, pagesOf(A + first * PS, 128), gen, new Set([A + (first + gen) * PS])));
  }
  await Promise.all(calls);
  await img.endRound(figures(0));
  t.deepEqual(await img.digest(), model.digest());
  const into = Buffer.alloc(512 * PS);
  await img.readPages(A, 512, into, new Uint8Array(512));
  t.true(into.equals(model.vmaBytes(model.layout[0])));
  await img.close();
});
