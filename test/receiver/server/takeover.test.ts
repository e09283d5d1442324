// Session takeover: a sender that reconnects after a network cut resumes its session while the
// receiver still holds the old stream (it has not noticed the cut yet). The resume takes the
// session over: the old stream ends (ABORTED), its session is released as on a broken stream
// (durable at its last acknowledged round, the half-sent round forgotten), the new stream carries
// on and commits an exact image. A session held by another receiver process is still refused.

import * as path from 'node:path';
import test from 'ava';
import * as grpc from '@grpc/grpc-js';
import { LinkError, MigrationLink } from '../../../sender/transfer/migration-link';
import { startReceiver } from '../../helpers/receiver';
import { assertImageEquals, commitOf, pageBatch, roundEnd, roundUnderWay, sessionStart, sessionState, sessionWithRoundZero } from './server-client';
import { Model, PS, pagesOf, tempDir, vma } from '../../image/store-helpers';

const A = 0x7f5500000000;
const LAYOUT = [vma(A, 32)];

test('a resume takes over a session still held by a stale stream of this receiver, even at --max-sessions 1', async (t) => {
  const dir = tempDir(t, 'precopy-takeover-');
  const images = path.join(dir, 'images');
  // One session slot: the takeover must pass the slot on, not need a second one.
  const receiver = await startReceiver({ images, args: ['--max-sessions', '1'] });
  t.teardown(() => receiver.stop());

  // The first stream: round 0 durable, round 1 half sent, then silence (never closed).
  const { link: stale, model } = await sessionWithRoundZero(receiver.address, 'tk-1', LAYOUT);
  t.teardown(() => stale.close());
  await roundUnderWay(stale, 1, LAYOUT, pagesOf(A, 8), 2);

  const fresh = await MigrationLink.connect(receiver.address);
  t.teardown(() => fresh.close());
  const accepted = await fresh.start(sessionStart('tk-1', { resume: true }));
  t.like(accepted, { sessionId: 'tk-1', resumed: true, lastDurableRound: 0 });

  // The old stream was ended with a status naming what happened (not retryable: no ping-pong).
  const err = await stale.whenEnded();
  t.is(err?.code, grpc.status.ABORTED, err?.message);
  t.regex(err!.message, /session tk-1 was taken over by a resume from /);
  t.false(err!.retryable);
  const warning = /session tk-1: a resume from (\S+) takes it over from the stream of (\S+), which still held it/.exec(receiver.stderr());
  t.truthy(warning, receiver.stderr());
  t.not(warning![1], warning![2], 'both peers are named');
  t.log(warning![0]);

  // The new stream re-sends round 1 and commits; the image is exact.
  await fresh.send({ roundStart: { round: 1, phase: 'PRECOPY', layout: LAYOUT } });
  await fresh.send({ pages: pageBatch(model, pagesOf(A, 8), 2) });
  await fresh.send({ pages: pageBatch(model, pagesOf(A + 20 * PS, 4), 2, { encoding: 'LZ4' }) });
  await fresh.endRound(roundEnd(1));
  const result = await fresh.commit(commitOf(model));
  t.true(result.ok, result.message);
  await fresh.close();
  t.is(await sessionState(images, 'tk-1'), 'committed');
  await assertImageEquals(t, images, 'tk-1', model, path.join(dir, 'export'));
});

test('a takeover waits for the stale stream to settle; the old stream can no longer write', async (t) => {
  const dir = tempDir(t, 'precopy-takeover-');
  const images = path.join(dir, 'images');
  const receiver = await startReceiver({ images });
  t.teardown(() => receiver.stop());

  const { link: stale, model } = await sessionWithRoundZero(receiver.address, 'tk-2', LAYOUT);
  t.teardown(() => stale.close());
  const fresh = await MigrationLink.connect(receiver.address);
  t.teardown(() => fresh.close());
  t.is((await fresh.start(sessionStart('tk-2', { resume: true }))).lastDurableRound, 0);

  // Whatever the stale sender still sends lands nowhere.
  await stale.send({ roundStart: { round: 1, phase: 'PRECOPY', layout: LAYOUT } }).catch(() => undefined);
  await stale.send({ pages: pageBatch(new Model(), pagesOf(A, 4), 9) }).catch(() => undefined);
  t.is((await stale.whenEnded())?.code, grpc.status.ABORTED);

  await fresh.send({ roundStart: { round: 1, phase: 'STOP_AND_COPY', layout: LAYOUT } });
  await fresh.send({ pages: pageBatch(model, pagesOf(A + 30 * PS, 2), 3) });
  await fresh.endRound(roundEnd(1));
  t.true((await fresh.commit(commitOf(model))).ok);
  await fresh.close();
  await assertImageEquals(t, images, 'tk-2', model, path.join(dir, 'export'));
});

test('a session held by another receiver process is not taken over', async (t) => {
  const images = path.join(tempDir(t, 'precopy-takeover-'), 'images');
  const owner = await startReceiver({ images });
  t.teardown(() => owner.stop());
  const other = await startReceiver({ images });
  t.teardown(() => other.stop());

  const { link, model } = await sessionWithRoundZero(owner.address, 'tk-3', LAYOUT);
  t.teardown(() => link.close());
  const thief = await MigrationLink.connect(other.address);
  t.teardown(() => thief.close());
  const err = await t.throwsAsync(thief.start(sessionStart('tk-3', { resume: true })), { instanceOf: LinkError });
  t.is(err?.code, grpc.status.FAILED_PRECONDITION, err?.message);
  t.regex(err!.message, new RegExp(`session tk-3 is in use by process ${owner.pid}`));

  // The owner's stream carries on and commits.
  await link.send({ roundStart: { round: 1, phase: 'STOP_AND_COPY', layout: LAYOUT } });
  await link.send({ pages: pageBatch(model, pagesOf(A, 2), 2) });
  await link.endRound(roundEnd(1));
  t.true((await link.commit(commitOf(model))).ok);
});
