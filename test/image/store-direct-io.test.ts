// Page data written with O_DIRECT (large runs, through the aligned staging buffers) and with
// buffered writes (short runs) lands in the same chunk files, over the same pages, across rounds:
// every read, the commit digest and the verify pass from disk must see the last bytes sent. On a
// file system that refuses O_DIRECT (ramfs) the store falls back to buffered writes and loses
// nothing.

import test, { type ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { STAGING_BYTES } from '../../image/aligned-staging';
import { ImageStore } from '../../image/image-store';
import { storeCounters } from '../../image/store-counters';
import { Model, PS, commitModel, figures, meta, pagesOf, sendBatch, tempDir, vma } from './store-helpers';

const A = 0x7f0000000000;
/** More than one staging buffer's worth, so that one run is written in several pieces. */
const PAGES = (STAGING_BYTES / PS) * 2 + 64;

async function mixedRounds(t: ExecutionContext, images: string): Promise<{ direct: number; total: number }> {
  const store = new ImageStore(images);
  const img = await store.create(meta('mix'));
  const m = new Model();
  m.setLayout([vma(A, PAGES)]);
  const direct0 = storeCounters.bytesWrittenDirect;
  const total0 = storeCounters.bytesWritten;

  // Round 0: everything in one batch (one long run), then single pages rewritten (short runs).
  await img.beginRound(0, 'PRECOPY', m.layout);
  await sendBatch(img, m, pagesOf(A, PAGES), 0);
  for (const i of [0, 1, 777, PAGES - 1]) await sendBatch(img, m, [A + i * PS], 1);
  await img.endRound(figures(0));

  // Round 1: a long run over pages rewritten short in round 0, then short writes into it again,
  // and zero pages in the middle of what was data.
  await img.beginRound(1, 'PRECOPY', m.layout);
  await sendBatch(img, m, pagesOf(A, 512), 2);
  for (const i of [1, 300]) await sendBatch(img, m, [A + i * PS], 3);
  await sendBatch(img, m, pagesOf(A + 600 * PS, 100), 4, new Set(pagesOf(A + 620 * PS, 20)));
  await img.endRound(figures(1));

  const into = Buffer.alloc(PAGES * PS);
  const presence = new Uint8Array(PAGES);
  await img.readPages(A, PAGES, into, presence);
  t.true(into.equals(m.vmaBytes(m.layout[0])), 'pages read back differ from the last ones sent');
  await commitModel(img, m);
  await img.close();
  const ro = await store.open('mix');
  const v = await ro.verify();
  t.deepEqual(v.problems, []);
  await ro.close();
  return { direct: storeCounters.bytesWrittenDirect - direct0, total: storeCounters.bytesWritten - total0 };
}

test.serial('direct and buffered writes of the same pages stay coherent across rounds', async (t) => {
  const w = await mixedRounds(t, path.join(tempDir(t), 'images'));
  t.log(`${w.total} page bytes written, ${w.direct} of them with O_DIRECT`);
  // The long runs went direct (this test's file system, ext4 under /tmp, takes O_DIRECT).
  t.true(w.direct >= PAGES * PS, `only ${w.direct} bytes went through O_DIRECT`);
  t.true(w.direct < w.total, 'the short runs should have been buffered writes');
});

test.serial('a file system that refuses O_DIRECT (ramfs) gets buffered writes and loses nothing', async (t) => {
  const mnt = tempDir(t, 'precopy-ramfs-');
  execFileSync('mount', ['-t', 'ramfs', 'precopy-test', mnt]);
  t.teardown(() => execFileSync('umount', ['-l', mnt]));
  const w = await mixedRounds(t, path.join(mnt, 'images'));
  t.log(`${w.total} page bytes written, ${w.direct} of them with O_DIRECT`);
  t.is(w.direct, 0);
  t.true(w.total >= PAGES * PS);
});
