// A sender whose Commit's answer was lost (the connection died; the Commit may still have been
// delivered) resumes with reopen_committed: a session that Commit committed is reopened and the
// migration goes on; without the flag, or once a handover of it was asked for, it is refused.

import * as path from 'node:path';
import * as fs from 'node:fs';
import test, { type ExecutionContext } from 'ava';
import * as grpc from '@grpc/grpc-js';
import { LinkError, MigrationLink } from '../../../sender/transfer/migration-link';
import { startReceiver } from '../../helpers/receiver';
import { assertImageEquals, commitOf, pageBatch, roundEnd, sessionStart, sessionState } from './server-client';
import { Model, PS, pagesOf, tempDir, vma } from '../../image/store-helpers';

const A = 0x7f1400000000;

async function committedSession(t: ExecutionContext, id: string) {
  const dir = tempDir(t, 'precopy-reopen-');
  const images = path.join(dir, 'images');
  const receiver = await startReceiver({ images });
  t.teardown(() => receiver.stop());
  const model = new Model();
  const layout = [vma(A, 8)];
  model.setLayout(layout);
  const first = await MigrationLink.connect(receiver.address);
  await first.start(sessionStart(id));
  await first.send({ roundStart: { round: 0, phase: 'PRECOPY', layout } });
  await first.send({ pages: pageBatch(model, pagesOf(A, 8), 1) });
  t.true((await first.commit({ ...commitOf(model), finalRound: roundEnd(0) })).ok);
  first.cut('test: the commit answer is lost'); // the sender never saw it
  await new Promise((r) => setTimeout(r, 300)); // the receiver sees that stream end
  return { dir, images, receiver, model, layout };
}

test('resume with reopen_committed: the committed session is reopened at its last round and committed again with newer pages', async (t) => {
  const { dir, images, receiver, model, layout } = await committedSession(t, 'reopen-1');
  const again = await MigrationLink.connect(receiver.address);
  t.teardown(() => again.close());
  const accepted = await again.start(sessionStart('reopen-1', { resume: true, reopenCommitted: true }));
  t.like(accepted, { resumed: true, lastDurableRound: 0 });
  await again.send({ roundStart: { round: 1, phase: 'PRECOPY', layout } });
  await again.send({ pages: pageBatch(model, [A + 2 * PS], 2) });
  await again.endRound(roundEnd(1));
  t.is(await sessionState(images, 'reopen-1'), 'receiving', 'reopened on disk by its next round');
  await again.send({ roundStart: { round: 2, phase: 'STOP_AND_COPY', layout } });
  t.true((await again.commit({ ...commitOf(model), finalRound: roundEnd(2) })).ok);
  await again.report({ result: 'committed', downtimeSeconds: 0.01, verify: 'skipped' });
  await again.close();
  t.is(await sessionState(images, 'reopen-1'), 'committed');
  await assertImageEquals(t, images, 'reopen-1', model, path.join(dir, 'export'));
});

test('without reopen_committed, or once a handover of it was asked for, a committed session is not resumed', async (t) => {
  const { images, receiver } = await committedSession(t, 'reopen-2');
  const refuse = async (start: ReturnType<typeof sessionStart>) => {
    const l = await MigrationLink.connect(receiver.address);
    t.teardown(() => l.close());
    const err = await t.throwsAsync(l.start(start));
    t.regex(err!.message, /session reopen-2 is committed; only a receiving session can be resumed/);
    t.is((err as LinkError).code, grpc.status.FAILED_PRECONDITION);
  };
  await refuse(sessionStart('reopen-2', { resume: true }));
  // A handover decision record: the image may run somewhere; it must stay as it is.
  fs.writeFileSync(
    path.join(images, 'reopen-2', 'handover.json'),
    JSON.stringify({ state: 'rolled-back', pid: 0, reason: 'test', expectedPid: 0, exePath: '' }),
  );
  await refuse(sessionStart('reopen-2', { resume: true, reopenCommitted: true }));
  t.is(await sessionState(images, 'reopen-2'), 'committed');
});
