// RunBatcher.addRuns/clear/taken: how the sender's walk copies a native walk call's dirty regions
// into a batch as they are (pure logic).

import test from 'ava';
import { RunBatcher } from '../../../sender/tracking/run-batch';

const P = 4096;

test('RunBatcher.addRuns: runs copied as they are, only the first may extend the last run; room enforced', (t) => {
  const b = new RunBatcher(10, P);
  b.boundary(0x10000);
  t.is(b.add(0x10000, 2), 2);
  // A native walk call resumed inside the same VMA: its first region continues the last run.
  b.addRuns(Float64Array.from([0x12000, 1, 0x20000, 3, 0x30000, 1, 99, 99]), 3, 5);
  t.is(b.pages, 7);
  t.is(b.room(), 3);
  t.throws(() => b.addRuns(Float64Array.from([0x40000, 4]), 1, 4), { instanceOf: RangeError, message: /do not fit/ });
  b.addRuns(new Float64Array(0), 0, 0);
  const batch = b.take();
  t.deepEqual([...batch.runs], [0x10000, 3, 0x20000, 3, 0x30000, 1], 'the unused tail of src is not copied');
  t.is(batch.pages, 7);
  t.is(batch.zeroHint, undefined);
  t.is(b.taken, 7);

  b.boundary(0x50000);
  b.addRuns(Float64Array.from([0x50000, 2]), 1, 2);
  b.clear();
  t.is(b.pages, 0);
  t.is(b.taken, 0);
  b.add(0x60000, 1);
  t.deepEqual([...b.take().runs], [0x60000, 1], 'clear() dropped what the batch held');
});
