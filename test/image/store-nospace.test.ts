// A full disk: on a real 8 MiB tmpfs, a session that runs out of space fails with NO_SPACE and
// is recorded failed, while another session in the same directory keeps its durable rounds and
// can still commit a valid image.

import test from 'ava';
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { ImageStore, StoreError } from '../../image/image-store';
import { Model, PS, chunked, commitModel, figures, meta, pagesOf, sendBatch, tempDir, vma } from './store-helpers';

const A = 0x7f0000000000;

test('disk full: NO_SPACE fails that session only', async (t) => {
  const mnt = tempDir(t, 'precopy-tmpfs-');
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'precopy-test', mnt]);
  t.teardown(() => execFileSync('umount', ['-l', mnt]));
  const store = new ImageStore(path.join(mnt, 'images'));

  // Session "small": 1 MiB, durable.
  const small = await store.create(meta('small'));
  const sm = new Model();
  sm.setLayout([vma(A, 256)]);
  await small.beginRound(0, 'PRECOPY', sm.layout);
  await sendBatch(small, sm, pagesOf(A, 256), 0);
  await small.endRound(figures(0));

  // Session "big": 12 MiB into what is left of 8 MiB.
  const big = await store.create(meta('big'));
  const bm = new Model();
  bm.setLayout([vma(A, 3072)]);
  await big.beginRound(0, 'PRECOPY', bm.layout);
  let failure: unknown;
  try {
    for (const batch of chunked(pagesOf(A, 3072), 256)) await sendBatch(big, bm, batch, 0);
    await big.endRound(figures(0));
  } catch (err) {
    failure = err;
  }
  t.true(failure instanceof StoreError, String(failure));
  t.is((failure as StoreError).code, 'NO_SPACE');
  t.regex((failure as Error).message, /no space left/);
  // Later calls get the same error; the failure is recorded on disk.
  const again = await t.throwsAsync(big.beginRound(1, 'PRECOPY', bm.layout));
  t.is((again as StoreError).code, 'NO_SPACE');
  await big.close();
  const bigOnDisk = await store.open('big');
  t.is(bigOnDisk.state, 'failed');
  t.regex(bigOnDisk.reason ?? '', /no space/);
  await bigOnDisk.close();

  // "small" is untouched: its durable round reads back and it commits a valid image.
  const into = Buffer.alloc(256 * PS);
  const presence = new Uint8Array(256);
  await small.readPages(A, 256, into, presence);
  t.true(presence.every((p) => p === 1));
  t.true(into.equals(sm.vmaBytes(sm.layout[0])));
  await commitModel(small, sm);
  await small.close();
  const ro = await store.open('small');
  t.true((await ro.verify()).ok);
  await ro.close();
  t.deepEqual(
    (await store.list()).map((s) => [s.meta.sessionId, s.state]),
    [
      ['small', 'committed'],
      ['big', 'failed'],
    ],
  );
});
