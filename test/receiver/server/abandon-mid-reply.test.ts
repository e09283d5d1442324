// A sender that dies while the receiver is making its round durable: the connection is gone when
// the RoundAck is written. The receiver must still release the session and abandon it after
// --abandon-after. (Found by test/e2e/sender-kill.test.ts: grpc-js signals a dead client with
// 'cancelled' only, and a reply waiting for 'drain'/'close' hung the stream, so the session stayed
// `receiving` forever, its slot and lock held.) The link is cut at random moments around the
// RoundEnd, many times, so that some cuts land inside the round's durability work.

import * as path from 'node:path';
import test from 'ava';
import { MigrationLink } from '../../../sender/transfer/migration-link';
import { startReceiver } from '../../helpers/receiver';
import { pageBatch, roundEnd, sessionStart, sessionState } from './server-client';
import { Model, pagesOf, prng, tempDir, vma } from '../../image/store-helpers';

const A = 0x7f9b00000000;
const LAYOUT = [vma(A, 2048)];
const ATTEMPTS = 24;

test('a link cut while its round is made durable: every session is released and abandoned', async (t) => {
  const images = path.join(tempDir(t, 'precopy-abandon-reply-'), 'images');
  const receiver = await startReceiver({ images, args: ['--abandon-after', '1'] });
  t.teardown(() => receiver.stop());
  const rnd = prng(11);
  const ids: string[] = [];
  for (let i = 0; i < ATTEMPTS; i++) {
    const id = `cut-${i}`;
    ids.push(id);
    const model = new Model();
    model.setLayout(LAYOUT);
    const link = await MigrationLink.connect(receiver.address);
    await link.start(sessionStart(id));
    await link.send({ roundStart: { round: 0, phase: 'PRECOPY', layout: LAYOUT } });
    await link.send({ pages: pageBatch(model, pagesOf(A, 2048), 1) });
    await link.send({ roundEnd: roundEnd(0) });
    // Then cut, after 0-8 ms: before, during or after the receiver's fdatasync of 8 MiB.
    await new Promise((r) => setTimeout(r, rnd() * 8));
    link.cut('test: the sender died');
    await link.close();
  }
  const states = new Map<string, string | undefined>();
  for (let k = 0; k < 100; k++) {
    for (const id of ids) states.set(id, await sessionState(images, id));
    if ([...states.values()].every((s) => s !== 'receiving')) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  const stuck = ids.filter((id) => states.get(id) === 'receiving');
  t.deepEqual(stuck, [], `sessions never abandoned: ${stuck.join(', ')}`);
  t.true(
    ids.every((id) => states.get(id) === 'aborted'),
    JSON.stringify([...states]),
  );
  t.log(`${ATTEMPTS} links cut around their RoundEnd: ${[...states.values()].filter((s) => s === 'aborted').length} sessions aborted`);
});
