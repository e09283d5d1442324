// The receiver's gRPC server end to end, without a sender: a real `receiver serve` process on
// port 0, a test client (proto/client.ts MigrationLink) sending layouts and pages, and what the
// receiver stored read back through the real raw export.

import * as path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import * as grpc from '@grpc/grpc-js';
import { LinkError, MigrationLink } from '../../../sender/transfer/migration-link';
import type { SessionAccepted } from '../../../proto/messages';
import { startReceiver } from '../../helpers/receiver';
import { assertImageEquals, commitOf, pageBatch, roundEnd, sessionStart, sessionState } from './server-client';
import { Model, PS, chunked, pagesOf, shuffled, tempDir, vma } from '../../image/store-helpers';

const A = 0x7f1200000000;
const B = 0x7f1200100000;
const C = 0x7f1200200000;

async function setup(t: ExecutionContext) {
  const dir = tempDir(t, 'precopy-server-');
  const images = path.join(dir, 'images');
  const receiver = await startReceiver({ images });
  t.teardown(() => receiver.stop());
  return { dir, images, receiver };
}

test('round trip: raw, lz4 and zero pages, layout changes, discard; the export equals what was sent', async (t) => {
  const { dir, images, receiver } = await setup(t);
  const link = await MigrationLink.connect(receiver.address);
  t.teardown(() => link.close());
  const model = new Model();

  t.like(await link.start(sessionStart('rt-1')), { sessionId: 'rt-1', resumed: false, lastDurableRound: -1 });

  // Round 0: A raw in batches of 16 pages (shuffled: any order), B in one lz4 batch with zero pages.
  const layout0 = [vma(A, 64), vma(B, 32)];
  model.setLayout(layout0);
  await link.send({ roundStart: { round: 0, phase: 'PRECOPY', layout: layout0 } });
  for (const chunk of chunked(shuffled(pagesOf(A, 64)), 16)) await link.send({ pages: pageBatch(model, chunk, 1) });
  const bPages = pagesOf(B, 32);
  const bZeros = new Set(bPages.filter((_, i) => i % 3 === 0));
  await link.send({ pages: pageBatch(model, bPages, 1, { encoding: 'LZ4', zeros: bZeros }) });
  const ack0 = await link.endRound(roundEnd(0));
  t.deepEqual(ack0, { round: 0, pagesStored: 96, durableBytes: (96 - bZeros.size) * PS });

  // Round 1: B unmapped, C mapped (all zero pages: no payload at all), part of A re-sent, a discard.
  const layout1 = [vma(A, 64), vma(C, 16)];
  model.setLayout(layout1);
  await link.send({ roundStart: { round: 1, phase: 'PRECOPY', layout: layout1 } });
  await link.send({ pages: pageBatch(model, pagesOf(A + 8 * PS, 8), 2, { encoding: 'LZ4' }) });
  await link.send({ discard: { runs: [A + 32 * PS, 4] } });
  model.discard(A + 32 * PS, 4);
  const cPages = pagesOf(C, 16);
  await link.send({ pages: pageBatch(model, cPages, 2, { zeros: new Set(cPages) }) });
  const ack1 = await link.endRound(roundEnd(1));
  t.is(ack1.pagesStored, model.pages.size);

  // Round 2, frozen: the last dirty pages, then commit with the digest of what was sent.
  await link.send({ roundStart: { round: 2, phase: 'STOP_AND_COPY', layout: layout1 } });
  await link.send({ pages: pageBatch(model, [A, A + 63 * PS, C + 5 * PS], 3, { encoding: 'LZ4' }) });
  await link.endRound(roundEnd(2));
  const commit = commitOf(model);
  const result = await link.commit(commit);
  t.true(result.ok, result.message);
  t.is(result.imagePages, model.pages.size);
  t.true(result.imageDigest.equals(commit.imageDigest!));
  await link.report({ result: 'committed', downtimeSeconds: 0.05, verify: 'ok' });
  await link.close();

  t.is(await sessionState(images, 'rt-1'), 'committed');
  await assertImageEquals(t, images, 'rt-1', model, path.join(dir, 'export'));
});

test('a refused commit leaves the session receiving; a fix-up round and a VERIFY_FIX after the commit work', async (t) => {
  const { dir, images, receiver } = await setup(t);
  const link = await MigrationLink.connect(receiver.address);
  t.teardown(() => link.close());
  const model = new Model();
  await link.start(sessionStart('fix-1'));
  const layout = [vma(A, 16)];
  model.setLayout(layout);
  await link.send({ roundStart: { round: 0, phase: 'PRECOPY', layout } });
  await link.send({ pages: pageBatch(model, pagesOf(A, 16), 1) });
  await link.endRound(roundEnd(0));

  // The sender believes page 3 holds generation 9: the receiver's digest differs, commit refused.
  const wrong = new Model();
  wrong.setLayout(layout);
  for (const [a, p] of model.pages) wrong.pages.set(a, p);
  pageBatch(wrong, [A + 3 * PS], 9);
  const refused = await link.commit(commitOf(wrong));
  t.false(refused.ok);
  t.regex(refused.message, /digest mismatch/);
  t.is(await sessionState(images, 'fix-1'), 'receiving');

  // Fix-up round: page 3 re-sent; then the commit goes through.
  await link.send({ roundStart: { round: 1, phase: 'STOP_AND_COPY', layout } });
  await link.send({ pages: pageBatch(model, [A + 3 * PS], 9) });
  await link.endRound(roundEnd(1));
  t.true((await link.commit(commitOf(model))).ok);

  // After the commit, a verify pass found a page different: VERIFY_FIX round, commit again.
  await link.send({ roundStart: { round: 2, phase: 'VERIFY_FIX', layout } });
  await link.send({ pages: pageBatch(model, [A + 7 * PS], 10, { encoding: 'LZ4' }) });
  await link.endRound(roundEnd(2));
  const again = await link.commit(commitOf(model));
  t.true(again.ok, again.message);
  await link.close();
  await assertImageEquals(t, images, 'fix-1', model, path.join(dir, 'export'));
});

test('a stream closed or cancelled mid-round leaves the session resumable at its last durable round', async (t) => {
  const { dir, images, receiver } = await setup(t);
  const model = new Model();
  const layout = [vma(A, 32)];
  model.setLayout(layout);

  const first = await MigrationLink.connect(receiver.address);
  await first.start(sessionStart('res-1'));
  await first.send({ roundStart: { round: 0, phase: 'PRECOPY', layout } });
  await first.send({ pages: pageBatch(model, pagesOf(A, 32), 1) });
  await first.endRound(roundEnd(0));
  // Round 1 half sent, then the sender goes away without a word.
  await first.send({ roundStart: { round: 1, phase: 'PRECOPY', layout } });
  await first.send({ pages: pageBatch(new Model(), pagesOf(A, 4), 2) });
  await first.close();

  // The stream ended (half-close before the commit): the session is free again at once.
  const second = await MigrationLink.connect(receiver.address);
  t.teardown(() => second.close());
  const accepted = await second.start(sessionStart('res-1', { resume: true }));
  t.like(accepted, { sessionId: 'res-1', resumed: true, lastDurableRound: 0 });
  await second.send({ roundStart: { round: 1, phase: 'PRECOPY', layout } });
  await second.send({ pages: pageBatch(model, pagesOf(A, 4), 2) });
  await second.endRound(roundEnd(1));
  t.is(await sessionState(images, 'res-1'), 'receiving');

  // A second break, this time a cancelled stream (a sender process that died); resume again.
  await second.send({ roundStart: { round: 2, phase: 'PRECOPY', layout } });
  await second.send({ pages: pageBatch(new Model(), pagesOf(A + 10 * PS, 2), 3) });
  (second as unknown as { call: grpc.ClientDuplexStream<unknown, unknown> }).call.cancel();
  const { link: third, accepted: again } = await resumeWhenFree(receiver.address, 'res-1');
  t.teardown(() => third.close());
  t.is(again.lastDurableRound, 1);
  await third.send({ roundStart: { round: 2, phase: 'STOP_AND_COPY', layout } });
  await third.send({ pages: pageBatch(model, pagesOf(A + 10 * PS, 2), 3) });
  await third.endRound(roundEnd(2));
  t.true((await third.commit(commitOf(model))).ok);
  await third.close();
  await assertImageEquals(t, images, 'res-1', model, path.join(dir, 'export'));
});

test('a sender that gives up gets its session aborted; the id cannot be resumed', async (t) => {
  const { images, receiver } = await setup(t);
  const link = await MigrationLink.connect(receiver.address);
  await link.start(sessionStart('abort-1'));
  await link.send({ roundStart: { round: 0, phase: 'PRECOPY', layout: [vma(A, 4)] } });
  await link.abort('target exited');
  t.is(await sessionState(images, 'abort-1'), 'aborted');
  const again = await MigrationLink.connect(receiver.address);
  t.teardown(() => again.close());
  const err = await t.throwsAsync(again.start(sessionStart('abort-1', { resume: true })), { instanceOf: LinkError });
  t.is(err?.code, grpc.status.FAILED_PRECONDITION);
  t.regex(err!.message, /aborted/);
});

test('MigrationLink: an unreachable receiver is a clear, retryable error', async (t) => {
  const { receiver } = await setup(t);
  const port = receiver.port;
  await receiver.stop();
  const err = await t.throwsAsync(MigrationLink.connect(`127.0.0.1:${port}`, { connectTimeoutMs: 1000 }), { instanceOf: LinkError });
  t.is(err?.message, `cannot reach receiver at 127.0.0.1:${port}: connection refused`);
  t.true(err?.retryable);
});

/** Resume `id` on a new link; the receiver may still be releasing it from a stream that was cut. */
async function resumeWhenFree(address: string, id: string): Promise<{ link: MigrationLink; accepted: SessionAccepted }> {
  for (let attempt = 0; ; attempt++) {
    const link = await MigrationLink.connect(address);
    try {
      return { link, accepted: await link.start(sessionStart(id, { resume: true })) };
    } catch (err) {
      await link.close();
      if (!(err instanceof LinkError) || !/in use/.test(err.message) || attempt > 50) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

test('a Commit carrying the final RoundEnd ends the open round with the commit; one naming another round is refused', async (t) => {
  const { dir, images, receiver } = await setup(t);
  const link = await MigrationLink.connect(receiver.address);
  t.teardown(() => link.close());
  const model = new Model();
  await link.start(sessionStart('final-1'));
  const layout = [vma(A, 16)];
  model.setLayout(layout);
  await link.send({ roundStart: { round: 0, phase: 'PRECOPY', layout } });
  await link.send({ pages: pageBatch(model, pagesOf(A, 16), 1) });
  await link.endRound(roundEnd(0));
  await link.send({ roundStart: { round: 1, phase: 'STOP_AND_COPY', layout } });
  await link.send({ pages: pageBatch(model, [A + PS, A + 9 * PS], 2, { encoding: 'LZ4' }) });
  const result = await link.commit({ ...commitOf(model), finalRound: roundEnd(1) });
  t.true(result.ok, result.message);
  await link.report({ result: 'committed', downtimeSeconds: 0.02, verify: 'skipped' });
  await link.close();
  t.is(await sessionState(images, 'final-1'), 'committed');
  await assertImageEquals(t, images, 'final-1', model, path.join(dir, 'export'));

  const bad = await MigrationLink.connect(receiver.address);
  t.teardown(() => bad.close());
  await bad.start(sessionStart('final-2'));
  await bad.send({ roundStart: { round: 0, phase: 'PRECOPY', layout } });
  const err = await t.throwsAsync(bad.commit({ ...commitOf(new Model()), finalRound: roundEnd(4) }));
  t.regex(err!.message, /Commit ends round 4, but round 0 is open/);
  t.is((err as LinkError).code, grpc.status.INVALID_ARGUMENT);
});
