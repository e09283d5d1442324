// Crash safety through the server: a receiver process killed with SIGKILL between rounds, inside
// a round's fsync sequence and inside the commit (the store's PRECOPY_FAULT_STORE_CRASH_AT points),
// restarted on the same images directory. After the restart an image is either committed and
// verifies, or is not committed, does not verify, and is resumed by a new stream (SessionStart
// resume=true → its last durable round) and finished with a correct image.

import * as path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { MigrationLink } from '../../../sender/transfer/migration-link';
import { ImageStore } from '../../../image/image-store';
import { startReceiver } from '../../helpers/receiver';
import { assertImageEquals, commitOf, pageBatch, roundEnd, roundUnderWay, sessionStart, sessionState, sessionWithRoundZero } from './server-client';
import { Model, pagesOf, tempDir, vma } from '../../image/store-helpers';

const A = 0x7f5600000000;
const LAYOUT = [vma(A, 32)];

/** Round 1 of the scenario: pages 0-7 re-sent at generation 2 (the model after it is final). A
 *  resuming sender re-sends every page dirtied since the last durable round, so this is also what
 *  follows a resume, whatever part of round 1 reached the receiver before the crash. */
async function sendRound1(link: MigrationLink, model: Model): Promise<void> {
  await link.send({ roundStart: { round: 1, phase: 'STOP_AND_COPY', layout: LAYOUT } });
  await link.send({ pages: pageBatch(model, pagesOf(A, 8), 2, { encoding: 'LZ4' }) });
  await link.endRound(roundEnd(1));
}

async function verifyOk(images: string, id: string): Promise<boolean> {
  const img = await new ImageStore(images).open(id);
  try {
    return (await img.verify()).ok;
  } finally {
    await img.close();
  }
}

test('kill -9 between rounds: restart, resume at the last durable round, finish', async (t) => {
  const dir = tempDir(t, 'precopy-crash-');
  const images = path.join(dir, 'images');
  const first = await startReceiver({ images });
  const { link, model } = await sessionWithRoundZero(first.address, 'c-between', LAYOUT);
  // Round 1 under way, not acknowledged, when the receiver dies.
  await roundUnderWay(link, 1, LAYOUT, pagesOf(A, 4), 2);
  t.like(await first.kill(), { signal: 'SIGKILL' });
  t.true((await link.whenEnded())?.retryable);
  await link.close();

  const second = await startReceiver({ images });
  t.teardown(() => second.stop());
  t.is(await sessionState(images, 'c-between'), 'receiving');
  t.false(await verifyOk(images, 'c-between'));
  const again = await MigrationLink.connect(second.address);
  t.teardown(() => again.close());
  t.like(await again.start(sessionStart('c-between', { resume: true })), { sessionId: 'c-between', resumed: true, lastDurableRound: 0 });
  await sendRound1(again, model);
  t.true((await again.commit(commitOf(model))).ok);
  await again.close();
  await assertImageEquals(t, images, 'c-between', model, path.join(dir, 'export'));
});

// Crash points of receiver/store/crash-hook.ts, each reached while round 1 ends or the commit runs.
const CRASHES: Record<string, string> = {
  'while writing round 1 pages': 'write-pages@2',
  'after round 1 data is synced': 'round-data-synced@2',
  'after round 1 bitmaps are written': 'round-bitmaps-written@2',
  'right after round 1 is durable': 'round-durable@2',
  'after the commit digest check': 'commit-digest-checked',
  'with the temporary manifest written': 'commit-manifest-tmp',
  'right after the manifest rename': 'commit-manifest-renamed',
  'at the end of the commit': 'commit-done',
};

async function crashAt(t: ExecutionContext, point: string): Promise<void> {
  const dir = tempDir(t, 'precopy-crash-');
  const images = path.join(dir, 'images');
  const id = 'c-point';
  const model = new Model();
  model.setLayout(LAYOUT);

  const first = await startReceiver({ images, env: { PRECOPY_FAULT_STORE_CRASH_AT: point } });
  const link = await MigrationLink.connect(first.address);
  const scenario = (async () => {
    await link.start(sessionStart(id));
    await link.send({ roundStart: { round: 0, phase: 'PRECOPY', layout: LAYOUT } });
    await link.send({ pages: pageBatch(model, pagesOf(A, 32), 1) });
    await link.endRound(roundEnd(0));
    await sendRound1(link, model);
    return link.commit(commitOf(model));
  })();
  const [outcome, exit] = await Promise.all([
    scenario.then(
      () => 'finished',
      () => 'cut',
    ),
    first.exited,
  ]);
  await link.close();
  t.is(exit.signal, 'SIGKILL', `the receiver must have crashed at ${point}: ${first.stderr()}`);
  t.is(outcome, 'cut');

  const second = await startReceiver({ images });
  t.teardown(() => second.stop());
  const state = await sessionState(images, id);
  if (state === 'committed') {
    // The crash came after the commit became durable: the image is complete and valid.
    t.true(await verifyOk(images, id));
  } else {
    t.is(state, 'receiving');
    t.false(await verifyOk(images, id), 'verify must not say ok for an image that is not committed');
    const again = await MigrationLink.connect(second.address);
    t.teardown(() => again.close());
    const accepted = await again.start(sessionStart(id, { resume: true }));
    t.true(accepted.resumed);
    if (accepted.lastDurableRound < 1) {
      t.is(accepted.lastDurableRound, 0);
      await sendRound1(again, model);
    }
    const result = await again.commit(commitOf(model));
    t.true(result.ok, result.message);
    await again.close();
  }
  await assertImageEquals(t, images, id, model, path.join(dir, 'export'));
}

for (const [name, point] of Object.entries(CRASHES)) test(`kill -9 ${name} (${point})`, crashAt, point);
