// Abandonment: a session whose stream went away stays receiving (resumable) for --abandon-after,
// then is marked aborted, including sessions an earlier receiver process left behind; a session
// that was resumed in time is not touched.

import * as path from 'node:path';
import test from 'ava';
import { MigrationLink } from '../../../sender/transfer/migration-link';
import type { SessionState } from '../../../image/image-store';
import { startReceiver } from '../../helpers/receiver';
import { commitOf, sessionStart, sessionState, sessionWithRoundZero } from './server-client';
import { tempDir, vma } from '../../image/store-helpers';

const A = 0x7f9a00000000;
const LAYOUT = [vma(A, 8)];

/** Poll the session's state until it is `want` (or give up after 20 s and return what it is). */
async function stateBecomes(images: string, id: string, want: SessionState): Promise<SessionState | undefined> {
  let state: SessionState | undefined;
  for (let i = 0; i < 200; i++) {
    state = await sessionState(images, id);
    if (state === want) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return state;
}

test('a session nobody resumes is aborted after --abandon-after; a resumed one is not', async (t) => {
  const images = path.join(tempDir(t, 'precopy-abandon-'), 'images');
  const receiver = await startReceiver({ images, args: ['--abandon-after', '1'] });
  t.teardown(() => receiver.stop());

  const left = await sessionWithRoundZero(receiver.address, 'ab-left', LAYOUT);
  await left.link.close();
  const kept = await sessionWithRoundZero(receiver.address, 'ab-kept', LAYOUT);
  await kept.link.close();
  const resumed = await MigrationLink.connect(receiver.address);
  t.teardown(() => resumed.close());
  t.is((await resumed.start(sessionStart('ab-kept', { resume: true }))).lastDurableRound, 0);

  t.is(await stateBecomes(images, 'ab-left', 'aborted'), 'aborted');
  t.is(await sessionState(images, 'ab-kept'), 'receiving');
  t.true((await resumed.commit(commitOf(kept.model))).ok);
});

test('sessions an earlier run left receiving are abandoned after a restart too', async (t) => {
  const images = path.join(tempDir(t, 'precopy-abandon-'), 'images');
  const first = await startReceiver({ images });
  const { link } = await sessionWithRoundZero(first.address, 'ab-crash', LAYOUT);
  await first.kill();
  await link.close();

  const second = await startReceiver({ images, args: ['--abandon-after', '1'] });
  t.teardown(() => second.stop());
  t.is(await stateBecomes(images, 'ab-crash', 'aborted'), 'aborted');
});
