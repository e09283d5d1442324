// A commit that ends the open round (Commit.final_round, docs/design.md, Wire protocol): the
// round becomes durable with the image in one set of fsyncs, or alone when the commit is refused;
// a commit naming another round changes nothing. Crashes in between: store-crash.test.ts.

import test from 'ava';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { ImageStore } from '../../image/image-store';
import { JOURNAL_MAX_BYTES } from '../../image/page-journal';
import { Model, PS, commitModel, figures, meta, pagesOf, sendBatch, tempDir, vma } from './store-helpers';

const A = 0x7f0000000000;

test('a commit that ends the open round makes the round durable with the image; refused, it makes the round durable alone', async (t) => {
  const store = new ImageStore(tempDir(t));
  const img = await store.create(meta('final-round'));
  const model = new Model();
  const layout = [vma(A, 8)];
  model.setLayout(layout);
  await img.beginRound(0, 'PRECOPY', layout);
  await sendBatch(img, model, pagesOf(A, 8), 0, new Set());
  await img.endRound(figures(0));
  await img.beginRound(1, 'STOP_AND_COPY', layout);
  await sendBatch(img, model, [A + PS, A + 2 * PS], 1, new Set([A + 2 * PS]));

  // Refused (wrong digest): round 1 is durable on its own, the session stays receiving.
  const d = model.digest();
  const refused = await img.commit({ layout, threads: [], imageDigest: d.digest ^ 1n, imagePages: d.pages, finalRound: figures(1) });
  t.false(refused.ok);
  t.is(img.state, 'receiving');
  t.is(img.lastDurableRound, 1);
  t.is(img.openRound, undefined);

  // A fix-up round ended by an accepted commit.
  await img.beginRound(2, 'VERIFY_FIX', layout);
  await sendBatch(img, model, [A + 3 * PS], 2, new Set());
  await commitModel(img, model, [], 2);
  t.is(img.state, 'committed');
  t.is(img.lastDurableRound, 2);
  await img.close();

  const ro = await store.open('final-round');
  t.is(ro.state, 'committed');
  t.deepEqual(
    ro.rounds().map((r) => r.round),
    [0, 1, 2],
  );
  t.true((await ro.verify()).ok);
  await ro.close();
});

test('a commit naming a round that is not the open one is refused and changes nothing', async (t) => {
  const store = new ImageStore(tempDir(t));
  const img = await store.create(meta('final-wrong'));
  const model = new Model();
  const layout = [vma(A, 2)];
  model.setLayout(layout);
  await img.beginRound(0, 'PRECOPY', layout);
  await sendBatch(img, model, pagesOf(A, 2), 0, new Set());
  const d = model.digest();
  await t.throwsAsync(img.commit({ layout, threads: [], imageDigest: d.digest, imagePages: d.pages, finalRound: figures(3) }), { message: /round 0 is open/ });
  t.is(img.openRound, 0);
  t.is(img.lastDurableRound, -1);
  await img.close();
});

// The final-round journal (image/page-journal.ts): the commit that ends a small last round names
// its journal (the chunk files are synced after the answer); a last round larger than the journal
// takes is synced in the chunk files at the commit, as before. Read right after the commit: the
// retire that follows needs a sync before it changes the state.
for (const big of [false, true]) {
  test(`a ${big ? 'last round over JOURNAL_MAX_BYTES is synced in the chunk files' : 'small last round is journaled'}; the image verifies and the journal ends up empty`, async (t) => {
    const store = new ImageStore(tempDir(t));
    const img = await store.create(meta(big ? 'big-last' : 'small-last'));
    const model = new Model();
    const pages = big ? JOURNAL_MAX_BYTES / PS + 64 : 64;
    const layout = [vma(A, pages)];
    model.setLayout(layout);
    await img.beginRound(0, 'PRECOPY', layout);
    await sendBatch(img, model, [A], 0, new Set());
    await img.endRound(figures(0));
    await img.beginRound(1, 'STOP_AND_COPY', layout);
    const all = pagesOf(A, pages);
    for (let i = 0; i < all.length; i += 1024) await sendBatch(img, model, all.slice(i, i + 1024), 1, new Set());
    await commitModel(img, model, [], 1);
    t.is(img.journaledRound, big ? undefined : 1);
    await img.close();
    const ro = await store.open(big ? 'big-last' : 'small-last');
    t.true((await ro.verify()).ok);
    t.is((await fsp.stat(path.join(ro.dir, 'journal.jnl'))).size, 0);
    await ro.close();
  });
}
