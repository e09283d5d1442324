// Lanes on the wire, without a sender: a control stream and lanes of one session sent by hand
// to a real `receiver serve` (docs/design.md, Lanes). Batches on lanes land in the image, the round
// ends only once every lane delivered what its RoundEnd says, and a lane that lies, has no key,
// or breaks gets a clear status without harming what the session holds.

import * as path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import * as grpc from '@grpc/grpc-js';
import { LinkError, MigrationLink } from '../../../sender/transfer/migration-link';
import { encodeLaneCounts } from '../../../proto/lanes';
import { startReceiver } from '../../helpers/receiver';
import { assertImageEquals, commitOf, pageBatch, roundEnd, sessionStart, sessionState } from './server-client';
import { Model, PS, pagesOf, tempDir, vma } from '../../image/store-helpers';

const A = 0x7f1300000000;

async function setup(t: ExecutionContext) {
  const dir = tempDir(t, 'precopy-lanes-');
  const images = path.join(dir, 'images');
  const receiver = await startReceiver({ images });
  t.teardown(() => receiver.stop());
  const links: MigrationLink[] = [];
  const connect = async () => {
    const l = await MigrationLink.connect(receiver.address);
    links.push(l);
    return l;
  };
  t.teardown(async () => Promise.all(links.map((l) => l.close())));
  return { dir, images, receiver, connect };
}

test('batches on two lanes and the control stream; lanes may run ahead of RoundStart; the image equals what was sent', async (t) => {
  const { dir, images, connect } = await setup(t);
  const control = await connect();
  const accepted = await control.start(sessionStart('lanes-1'));
  t.is(accepted.laneKey?.length, 16);
  const lanes = [await connect(), await connect()];
  await lanes[0].startLane({ sessionId: 'lanes-1', lane: 1, laneKey: accepted.laneKey! });
  await lanes[1].startLane({ sessionId: 'lanes-1', lane: 2, laneKey: accepted.laneKey! });
  const model = new Model();
  const layout = [vma(A, 48)];
  model.setLayout(layout);
  // Lane batches first: they wait for the round to open.
  const early = lanes[0].send({ pages: pageBatch(model, pagesOf(A + 16 * PS, 16), 1) });
  await new Promise((r) => setTimeout(r, 100));
  await control.send({ roundStart: { round: 0, phase: 'PRECOPY', layout } });
  await early;
  await lanes[1].send({ pages: pageBatch(model, pagesOf(A + 32 * PS, 16), 1, { encoding: 'LZ4' }) });
  await control.send({ pages: pageBatch(model, pagesOf(A, 16), 1) });
  const ack = await control.endRound({ ...roundEnd(0), laneBatches: encodeLaneCounts([1, 1]) });
  t.is(ack.pagesStored, 48);
  // The final round ended by the commit, a page re-sent on its lane.
  await control.send({ roundStart: { round: 1, phase: 'STOP_AND_COPY', layout } });
  await lanes[0].send({ pages: pageBatch(model, [A + 20 * PS], 2) });
  const result = await control.commit({ ...commitOf(model), finalRound: { ...roundEnd(1), laneBatches: encodeLaneCounts([1, 0]) } });
  t.true(result.ok, result.message);
  await control.report({ result: 'committed', downtimeSeconds: 0.01, verify: 'skipped' });
  for (const l of lanes) await l.close();
  await control.close();
  t.is(await sessionState(images, 'lanes-1'), 'committed');
  await assertImageEquals(t, images, 'lanes-1', model, path.join(dir, 'export'));
});

test('a lane with a wrong key, a lane number out of range, or for a session nobody holds is refused', async (t) => {
  const { connect } = await setup(t);
  const control = await connect();
  const accepted = await control.start(sessionStart('lanes-2'));
  const refusal = async (l: { sessionId: string; lane: number; laneKey: Buffer }, re: RegExp) => {
    const lane = await connect();
    const err = await t.throwsAsync(lane.startLane(l));
    t.regex(err!.message, re);
    t.is((err as LinkError).code, grpc.status.FAILED_PRECONDITION);
  };
  await refusal({ sessionId: 'lanes-2', lane: 1, laneKey: Buffer.alloc(16) }, /wrong lane key/);
  await refusal({ sessionId: 'lanes-2', lane: 0, laneKey: accepted.laneKey! }, /lane 0 is not between 1 and 15/);
  await refusal({ sessionId: 'nobody', lane: 1, laneKey: accepted.laneKey! }, /no stream of this receiver holds session nobody/);
  // The session is unharmed: a round still goes through.
  const model = new Model();
  const layout = [vma(A, 4)];
  model.setLayout(layout);
  await control.send({ roundStart: { round: 0, phase: 'PRECOPY', layout } });
  await control.send({ pages: pageBatch(model, pagesOf(A, 4), 1) });
  t.is((await control.endRound(roundEnd(0))).pagesStored, 4);
});

test('a lane that delivers more batches than its RoundEnd says fails the session; a lane carrying anything but pages is refused', async (t) => {
  const { images, connect } = await setup(t);
  const control = await connect();
  const accepted = await control.start(sessionStart('lanes-3'));
  const lane = await connect();
  await lane.startLane({ sessionId: 'lanes-3', lane: 1, laneKey: accepted.laneKey! });
  const model = new Model();
  const layout = [vma(A, 8)];
  model.setLayout(layout);
  await control.send({ roundStart: { round: 0, phase: 'PRECOPY', layout } });
  await lane.send({ pages: pageBatch(model, pagesOf(A, 4), 1) });
  await lane.send({ pages: pageBatch(model, pagesOf(A + 4 * PS, 4), 1) });
  await new Promise((r) => setTimeout(r, 200)); // both delivered
  const err = await t.throwsAsync(control.endRound({ ...roundEnd(0), laneBatches: encodeLaneCounts([1]) }));
  t.regex(err!.message, /lane 1 delivered 2 batches this round, the RoundEnd says 1/);
  t.is((err as LinkError).code, grpc.status.INVALID_ARGUMENT);
  t.is(await sessionState(images, 'lanes-3'), 'failed');

  const control2 = await connect();
  const acc2 = await control2.start(sessionStart('lanes-4'));
  const lane2 = await connect();
  await lane2.startLane({ sessionId: 'lanes-4', lane: 1, laneKey: acc2.laneKey! });
  await lane2.send({ roundStart: { round: 0, phase: 'PRECOPY', layout } }).catch(() => undefined);
  const why = await lane2.whenEnded();
  t.regex(why!.message, /a lane carries only page batches, not roundStart/);
});

test('a lane that breaks breaks the session link: the session stays resumable and resumes without lanes', async (t) => {
  const { images, connect } = await setup(t);
  const control = await connect();
  const accepted = await control.start(sessionStart('lanes-5'));
  const lane = await connect();
  await lane.startLane({ sessionId: 'lanes-5', lane: 1, laneKey: accepted.laneKey! });
  const model = new Model();
  const layout = [vma(A, 8)];
  model.setLayout(layout);
  await control.send({ roundStart: { round: 0, phase: 'PRECOPY', layout } });
  await control.send({ pages: pageBatch(model, pagesOf(A, 8), 1) });
  await control.endRound(roundEnd(0));
  lane.cut('test: lane connection lost');
  const why = await control.whenEnded();
  t.regex(why!.message, /lane 1 lost/);
  t.true(why!.retryable);
  t.is(await sessionState(images, 'lanes-5'), 'receiving');
  const again = await connect();
  const resumed = await again.start({ ...sessionStart('lanes-5'), resume: true });
  t.true(resumed.resumed);
  t.is(resumed.lastDurableRound, 0);
  const r = await again.commit(commitOf(model));
  t.true(r.ok, r.message);
});
