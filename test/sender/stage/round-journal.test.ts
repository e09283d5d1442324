// Unit tests of what a resume re-sends (sender/stage/round-journal.ts). The run-list operations a
// resume uses: run-lists.test.ts; the reconnect loop: reconnect.test.ts.

import test from 'ava';
import { RoundJournal } from '../../../sender/stage/round-journal';
import { checkRuns } from '../../../image/input-checks';
import type { RunBatch } from '../../../sender/tracking/run-batch';

const P = 4096;
const B = 0x7f0000000000;
const at = (page: number) => B + page * P;
/** Runs given as [firstPage, pages] pairs of page numbers. */
const runs = (...pairs: [number, number][]) => pairs.flatMap(([p, n]) => [at(p), n]);
test('rounds not acknowledged are replayed: pages and discards merged once, sorted', (t) => {
  const j = new RoundJournal(P);
  j.pages(0, runs([0, 10]));
  j.pages(1, runs([5, 10], [40, 2]));
  j.discards(1, runs([100, 4]));
  j.pages(2, runs([14, 2], [30, 1]));
  j.discards(2, runs([200, 1]));
  const all = j.since(-1);
  t.deepEqual(all.pages, runs([0, 16], [30, 1], [40, 2]));
  t.is(all.pageCount, 19);
  t.deepEqual(all.discards, runs([100, 4], [200, 1]));
  const after1 = j.since(1);
  t.deepEqual(after1.pages, runs([14, 2], [30, 1]));
  t.deepEqual(after1.discards, runs([200, 1]));
});

// The receiver refuses a Discard whose runs are not sorted and disjoint (image/input-checks.ts
// checkRuns), as it refuses a PageBatch. One round journals discards from two sources, each sorted
// on its own: the layout's refresh (what left the layout, e.g. the old place of a VMA moved by
// mremap, at a high address) and then the pages held under VMAs first seen now (e.g. a new VMA
// at a lower address over pages sent earlier); a later round may discard some of them again.
// Concatenated, they made the replayed Discard out of order (CI: "run 12 at ... overlaps or is
// out of order" after a second resume, the first replaying round to journal discards).
test('replayed discards from refreshes and held pages, across rounds, come out sorted and disjoint', (t) => {
  const j = new RoundJournal(P);
  j.pages(0, runs([0, 600]));
  j.discards(1, runs([500, 32], [560, 8])); // gone from the layout: a VMA moved away, and another
  j.discards(1, runs([100, 16], [130, 4])); // held under a VMA first seen now, lower down
  j.discards(2, runs([110, 30], [505, 2])); // again, overlapping round 1's
  j.discards(2, runs([50, 1]));
  const all = j.since(-1);
  t.notThrows(() => checkRuns(all.discards, P, null), 'the receiver takes the replayed Discard');
  t.deepEqual(all.discards, runs([50, 1], [100, 40], [500, 32], [560, 8]));
  t.deepEqual(j.since(1).discards, runs([50, 1], [110, 30], [505, 2]));
});

test('an acknowledged round and every earlier one are dropped', (t) => {
  const j = new RoundJournal(P);
  for (let r = 0; r < 4; r++) j.pages(r, runs([r * 10, 1]));
  j.durable(1);
  t.deepEqual(j.openRounds, [2, 3]);
  // A receiver that reports an older durable round than what we dropped still gets what we have.
  t.deepEqual(j.since(-1).pages, runs([20, 1], [30, 1]));
  j.durable(3);
  t.deepEqual(j.openRounds, []);
  t.deepEqual(j.since(-1), { pages: [], discards: [], pageCount: 0 });
});

test('track() journals every batch as it is handed out, copying the runs', async (t) => {
  const j = new RoundJournal(P);
  const shared = new Float64Array(runs([0, 3]));
  const source: RunBatch[] = [
    { runs: shared, pages: 3 },
    { runs: new Float64Array(runs([50, 2])), pages: 2 },
  ];
  const got: number[] = [];
  for await (const b of j.track(7, source)) {
    got.push(b.pages);
    // A stopped consumer (a broken link) still leaves the handed-out batch journaled.
    break;
  }
  t.deepEqual(got, [3]);
  shared[0] = at(999); // the scan may reuse its buffer
  t.deepEqual(j.since(6).pages, runs([0, 3]));
  t.deepEqual(j.openRounds, [7]);
});
