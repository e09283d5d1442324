// Batched process_vm_readv: bytes land back to back; exactly the ranges that cannot be read
// (unmapped meanwhile, or PROT_NONE) are reported and zero-filled; the batch goes on past them,
// across IOV_MAX-sized calls.

import test from 'ava';
import { NativeError, readPages, readPagesAsync, type ReadResult } from '../../native';
import { readMem } from '../helpers/procmem';
import { withTarget } from '../helpers/target';

const PAGE = 4096;

function ranges(pairs: Array<[number, number]>): Float64Array {
  return new Float64Array(pairs.flat());
}

const variants: Array<[string, (pid: number, r: Float64Array, into: Buffer) => Promise<ReadResult>]> = [
  ['readPages', async (pid, r, into) => readPages(pid, r, into)],
  ['readPagesAsync', readPagesAsync],
];

for (const [name, read] of variants) {
  test.serial(`${name} reports exactly the ranges unmapped meanwhile, across IOV_MAX batches`, (t) =>
    withTarget({ mib: 4 }, async (tg) => {
      const n = 3000; // three calls of IOV_MAX (1024) ranges
      const area = await tg.mmap(n);
      const expected = readMem(tg.pid, area, n * PAGE);
      const gone = [0, 5, 1023, 1024, 1500, 2047, 2999]; // first and last of calls, middle, the very last
      for (const p of gone) await tg.munmap(area + p * PAGE, 1);

      const into = Buffer.alloc(n * PAGE, 0xaa);
      const r = await read(tg.pid, ranges(Array.from({ length: n }, (_, i): [number, number] => [area + i * PAGE, PAGE])), into);
      t.deepEqual(r.failed, gone);
      t.is(r.bytesRead, (n - gone.length) * PAGE);
      let wrong = -1;
      for (let i = 0; i < n && wrong < 0; i++) {
        const want = gone.includes(i) ? Buffer.alloc(PAGE) : expected.subarray(i * PAGE, (i + 1) * PAGE);
        if (!into.subarray(i * PAGE, (i + 1) * PAGE).equals(want)) wrong = i;
      }
      t.is(wrong, -1, `range ${wrong}: wrong bytes (or a failed range not zero-filled)`);
    }),
  );
}

test.serial('readPages: multi-page ranges partly unmapped or PROT_NONE fail whole; others land in place', (t) =>
  withTarget({ mib: 4 }, async (tg) => {
    const a = await tg.mmap(16);
    const b = await tg.mmap(16);
    const c = await tg.mmap(16, 'none');
    const memA = readMem(tg.pid, a, 16 * PAGE);
    const memB = readMem(tg.pid, b, 16 * PAGE);
    await tg.munmap(a + 8 * PAGE, 8); // second half of a gone
    const into = Buffer.alloc(64 * PAGE, 0xaa);
    const r = readPages(
      tg.pid,
      ranges([
        [a, 4 * PAGE], // 0: fine
        [a + 6 * PAGE, 4 * PAGE], // 1: runs into the hole
        [b, 16 * PAGE], // 2: fine
        [c, 2 * PAGE], // 3: PROT_NONE: process_vm_readv cannot read it
        [b + 100, 0], // 4: empty
        [b + 3 * PAGE + 10, 100], // 5: unaligned, fine
      ]),
      into,
    );
    t.deepEqual(r.failed, [1, 3]);
    t.is(r.bytesRead, 4 * PAGE + 16 * PAGE + 100);
    t.true(into.subarray(0, 4 * PAGE).equals(memA.subarray(0, 4 * PAGE)));
    t.true(into.subarray(4 * PAGE, 8 * PAGE).equals(Buffer.alloc(4 * PAGE)), 'failed range zero-filled, partial bytes dropped');
    t.true(into.subarray(8 * PAGE, 24 * PAGE).equals(memB));
    t.true(into.subarray(24 * PAGE, 26 * PAGE).equals(Buffer.alloc(2 * PAGE)));
    t.true(into.subarray(26 * PAGE, 26 * PAGE + 100).equals(memB.subarray(3 * PAGE + 10, 3 * PAGE + 110)));
    t.is(into[26 * PAGE + 100], 0xaa, 'nothing written past the ranges');
  }),
);

test.serial('readPages errors: dead pid, buffer too small, bad ranges', async (t) => {
  let pid = 0;
  await withTarget({ mib: 1 }, async (tg) => {
    pid = tg.pid;
  });
  const err = t.throws(() => readPages(pid, ranges([[0x10000, PAGE]]), Buffer.alloc(PAGE)), { instanceOf: NativeError });
  t.is(err?.code, 'ESRCH');
  t.is(err?.message, `no such process ${pid}`);
  const aerr = await t.throwsAsync(readPagesAsync(pid, ranges([[0x10000, PAGE]]), Buffer.alloc(PAGE)), { instanceOf: NativeError });
  t.is(aerr?.code, 'ESRCH');
  t.throws(() => readPages(process.pid, ranges([[0x10000, 2 * PAGE]]), Buffer.alloc(PAGE)), { instanceOf: RangeError });
  t.throws(() => readPages(process.pid, new Float64Array([1, 2, 3]), Buffer.alloc(PAGE)), { instanceOf: TypeError });
});
