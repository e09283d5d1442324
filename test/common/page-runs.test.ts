// Unit tests of the run-list operations the orchestration relies on (common/page-runs.ts,
// sender/tracking/run-batch.ts): what a layout change drops, what the receiver holds beyond the
// populated set, cutting into batches.

import test from 'ava';
import type { Vma } from '../../common/vma';
import { heldOutside, runsNotHeld, runsOutside, runsWithin, splitRuns, sumPages, unionRuns } from '../../common/page-runs';
import { runsToBatches, splitRunBatch } from '../../sender/tracking/run-batch';

const P = 4096;
const B = 0x7f0000000000;
const at = (page: number) => B + page * P;
const vma = (first: number, pages: number): Vma => ({
  start: at(first),
  end: at(first + pages),
  perms: 'rw-p',
  offset: 0,
  path: '',
  fileBacked: false,
  inode: 0,
  dev: '00:00',
});

/** A HeldPages over a plain set of page numbers. */
const heldSet = (pages: number[]) => ({
  heldRunsIn(start: number, end: number): number[] {
    const out: number[] = [];
    for (const p of [...pages].sort((a, b) => a - b)) {
      const addr = at(p);
      if (addr < start || addr >= end) continue;
      const n = out.length;
      if (n > 0 && out[n - 2] + out[n - 1] * P === addr) out[n - 1]++;
      else out.push(addr, 1);
    }
    return out;
  },
});

test('runsOutside: what a new layout no longer covers', (t) => {
  const before = [vma(0, 10), vma(20, 10)];
  t.deepEqual(runsOutside(before, before, P), []);
  // the first VMA shrank to 4 pages, the second vanished, a new one appeared elsewhere
  t.deepEqual(runsOutside(before, [vma(0, 4), vma(40, 5)], P), [at(4), 6, at(20), 10]);
  // a split (mprotect) covers the same range: nothing dropped
  t.deepEqual(runsOutside(before, [vma(0, 3), vma(3, 7), vma(20, 10)], P), []);
});

test('heldOutside: held pages outside the populated runs, whatever the gaps', (t) => {
  const held = heldSet([0, 1, 2, 5, 6, 100, 101, 5000]);
  t.deepEqual(heldOutside(held, [at(0), 3, at(5), 2, at(100), 2, at(5000), 1], P), []);
  t.deepEqual(heldOutside(held, [at(0), 2, at(6), 1], P), [at(2), 1, at(5), 1, at(100), 2, at(5000), 1]);
  t.deepEqual(heldOutside(held, [], P), [at(0), 3, at(5), 2, at(100), 2, at(5000), 1]);
  // unsorted and overlapping populated runs are merged first
  t.deepEqual(heldOutside(held, [at(100), 2, at(0), 7, at(3), 2], P), [at(5000), 1]);
});

test('runsToBatches: at most maxPages pages each, long runs split, order kept', (t) => {
  const runs = [at(0), 5, at(10), 1, at(20), 7];
  const batches = [...runsToBatches(runs, 4, P)];
  t.deepEqual(
    batches.map((b) => [...b.runs]),
    [
      [at(0), 4],
      [at(4), 1, at(10), 1, at(20), 2],
      [at(22), 4],
      [at(26), 1],
    ],
  );
  t.deepEqual(
    batches.map((b) => b.pages),
    [4, 4, 4, 1],
  );
  t.is(sumPages(runs), 13);
  t.deepEqual([...runsToBatches([], 4, P)], []);
});

test('splitRunBatch: pieces keep their share of the zero hints', (t) => {
  const batch = { runs: Float64Array.from([at(0), 6, at(10), 2]), pages: 8, zeroHint: Float64Array.from([at(2), 3, at(11), 1]) };
  t.is(splitRunBatch(batch, 8, P)[0], batch, 'small enough: unchanged');
  const pieces = splitRunBatch(batch, 3, P);
  t.deepEqual(
    pieces.map((b) => [...b.runs]),
    [
      [at(0), 3],
      [at(3), 3],
      [at(10), 2],
    ],
  );
  t.deepEqual(
    pieces.map((b) => (b.zeroHint ? [...b.zeroHint] : null)),
    [
      [at(2), 1],
      [at(3), 2],
      [at(11), 1],
    ],
  );
});

// What a resume re-sends (sender/migrate.ts withReplay): the union of lost, written and never-sent
// pages, inside the layout, cut at VMA boundaries.
test('unionRuns merges overlapping and adjacent runs', (t) => {
  t.deepEqual(unionRuns([[at(10), 5, at(0), 2], [at(2), 3, at(12), 10], []], P), [at(0), 5, at(10), 12]);
  t.deepEqual(unionRuns([], P), []);
});

test('runsWithin keeps what lies in the layout, cut at VMA boundaries', (t) => {
  const layout = [vma(20, 10), vma(0, 10), vma(10, 5)]; // 0-10 and 10-15 touch
  t.deepEqual(runsWithin([at(5), 20], layout, P), [at(5), 5, at(10), 5, at(20), 5]);
  t.deepEqual(runsWithin([at(15), 5, at(40), 3], layout, P), []);
  t.deepEqual(runsWithin([at(28), 4], layout, P), [at(28), 2]);
});

test('runsNotHeld: the pages of runs the receiver does not hold', (t) => {
  const held = heldSet([2, 3, 4, 8]);
  t.deepEqual(runsNotHeld(held, [at(0), 10], P), [at(0), 2, at(5), 3, at(9), 1]);
  t.deepEqual(runsNotHeld(heldSet([]), [at(4), 2], P), [at(4), 2]);
  t.deepEqual(runsNotHeld(held, [at(2), 3, at(8), 1], P), []);
});

test('runsToBatches with a span: no batch holds pages of two spans; every page once, in order', (t) => {
  const span = 16 * P;
  const runs = [0, 40, 50 * P, 3, 62 * P, 5, 100 * P, 1];
  const batches = [...runsToBatches(runs, 8, P, span)];
  const pages: number[] = [];
  for (const b of batches) {
    t.true(b.pages <= 8);
    const spans = new Set<number>();
    for (let i = 0; i < b.runs.length; i += 2) for (let k = 0; k < b.runs[i + 1]; k++) spans.add(Math.floor((b.runs[i] + k * P) / span));
    t.is(spans.size, 1, `batch ${JSON.stringify([...b.runs])} spans ${[...spans]}`);
    for (let i = 0; i < b.runs.length; i += 2) for (let k = 0; k < b.runs[i + 1]; k++) pages.push(b.runs[i] + k * P);
  }
  const want: number[] = [];
  for (let i = 0; i < runs.length; i += 2) for (let k = 0; k < runs[i + 1]; k++) want.push(runs[i] + k * P);
  t.deepEqual(pages, want);
  const piece = splitRunBatch({ runs: Float64Array.from([14 * P, 4]), pages: 4 }, 8, P, span);
  t.deepEqual(
    piece.map((b) => [...b.runs]),
    [
      [14 * P, 2],
      [16 * P, 2],
    ],
    'a small batch across a span boundary is cut too',
  );
});

test('splitRuns: the pages inside byte areas and outside them, runs cut at the area edges', (t) => {
  const P = 4096;
  // runs: [0x10000, 8 pages] [0x40000, 2 pages]; areas: [0x12000, 0x14000) [0x40000, 0x50000)
  const { inside, outside } = splitRuns([0x10000, 8, 0x40000, 2], new Float64Array([0x12000, 0x14000, 0x40000, 0x50000]), P);
  t.deepEqual(inside, [0x12000, 2, 0x40000, 2]);
  t.deepEqual(outside, [0x10000, 2, 0x14000, 4]);
  t.is(sumPages(inside) + sumPages(outside), 10);
  t.deepEqual(splitRuns([0x10000, 8], new Float64Array(0), P), { inside: [], outside: [0x10000, 8] });
});
