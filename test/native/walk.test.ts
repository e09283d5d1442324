// Tracker.walk: a whole round of PAGEMAP_SCAN calls (every range, each resumed from walk_end) in one
// native call, regions written into Float64Arrays (runs: start, pages; meta: categories, range). Against a real target: the dirty pages of several
// VMAs come back exactly, within the page budget and the out array, resumed from the cursor; what
// was reported before a failing range is kept (it was write-protected again).

import test from 'ava';
import {
  arm,
  NativeError,
  PAGE_IS_WRITTEN,
  PM_SCAN_CHECK_WPASYNC,
  PM_SCAN_WP_MATCHING,
  setWalkRange,
  WALK_CURSOR_FIELDS,
  WALK_RANGE_FIELDS,
  type ScanArgs,
  type Tracker,
} from '../../native';
import { withTarget, type Target } from '../helpers/target';
import { minus, POPULATED, randomPages, runs, walk, WP_SCAN } from './native-helpers';

const PAGE = 4096;
const DIRTY = { flags: PM_SCAN_WP_MATCHING, categoryMask: PAGE_IS_WRITTEN, returnMask: PAGE_IS_WRITTEN };

interface WalkRegion {
  start: number;
  pages: number;
  categories: number;
  index: number;
}

/** Room for `regions` regions. */
function outOf(regions: number): { runs: Float64Array; meta: Float64Array } {
  return { runs: new Float64Array(2 * regions), meta: new Float64Array(2 * regions) };
}

function regionsOf(out: { runs: Float64Array; meta: Float64Array }, n: number): WalkRegion[] {
  const r: WalkRegion[] = [];
  for (let i = 0; i < n; i++) r.push({ start: out.runs[2 * i], pages: out.runs[2 * i + 1], categories: out.meta[2 * i], index: out.meta[2 * i + 1] });
  return r;
}

function plan(areas: Array<{ args: ScanArgs; limited: boolean }>): Float64Array {
  const ranges = new Float64Array(areas.length * WALK_RANGE_FIELDS);
  areas.forEach((a, i) => setWalkRange(ranges, i, a.args, a.limited));
  return ranges;
}

/** Absolute page addresses covered by regions. */
function addresses(regions: WalkRegion[]): Set<number> {
  const s = new Set<number>();
  for (const r of regions) for (let i = 0; i < r.pages; i++) s.add(r.start + i * PAGE);
  return s;
}

/** Register and arm [start, start + pages) (every page protected). */
function armArea(tr: Tracker, start: number, pages: number): void {
  tr.register(start, start + pages * PAGE);
  walk(tr, { start, end: start + pages * PAGE, flags: WP_SCAN, categoryMask: PAGE_IS_WRITTEN, returnMask: POPULATED });
}

/** Write `pages` (indexes) of the main area, and return their addresses. */
async function writeMain(tg: Target, pages: Set<number>): Promise<Set<number>> {
  for (const [first, count] of runs(pages)) await tg.write(first, count);
  return new Set([...pages].map((p) => tg.base + p * PAGE));
}

test.serial('walk: dirty pages of several VMAs exact, within the page budget and out size, resumed from the cursor', (t) =>
  withTarget({ mib: 16, seed: 31 }, async (tg) => {
    const extraPages = 64;
    const extra = await tg.mmap(extraPages);
    const tr = arm(tg.pid);
    try {
      armArea(tr, tg.base, tg.pages);
      armArea(tr, extra, extraPages);
      const written = await writeMain(tg, randomPages(77, tg.pages, 300));
      await tg.writep(extra + 3 * PAGE, 5);
      await tg.writep(extra + 40 * PAGE, 1);
      for (let p = 3; p < 8; p++) written.add(extra + p * PAGE);
      written.add(extra + 40 * PAGE);

      const areas = [
        { start: tg.base, end: tg.base + tg.pages * PAGE },
        { start: extra, end: extra + extraPages * PAGE },
      ].sort((a, b) => a.start - b.start);
      const ranges = plan(areas.map((a) => ({ args: { ...a, ...DIRTY }, limited: true })));
      const cursor = new Float64Array(WALK_CURSOR_FIELDS);
      const out = outOf(8);
      const seen: WalkRegion[] = [];
      let walks = 0;
      while (cursor[0] < areas.length) {
        const n = tr.walk(ranges, cursor, out.runs, out.meta, 16);
        walks++;
        t.is(n, cursor[2]);
        t.true(n <= 8, `${n} regions in an out of 8`);
        const got = regionsOf(out, n);
        const pages = got.reduce((a, r) => a + r.pages, 0);
        t.true(pages <= 16, `a call with budget 16 reported ${pages} pages`);
        t.is(cursor[4], pages, 'cursor[4] counts the pages of limited ranges');
        t.is(cursor[5], 0, 'no region from an unlimited range');
        seen.push(...got);
      }
      t.log(`${walks} walk calls, ${cursor[3]} ioctls, ${seen.length} regions, ${written.size} pages written`);
      t.true(walks > 300 / 16, 'the budget split the round');
      for (const r of seen) {
        const a = areas[r.index];
        t.true(r.start >= a.start && r.start + r.pages * PAGE <= a.end, `region ${r.start.toString(16)} outside its range ${r.index}`);
        t.is(r.categories, PAGE_IS_WRITTEN);
      }
      t.true(
        seen.every((r, i) => i === 0 || r.start >= seen[i - 1].start + seen[i - 1].pages * PAGE),
        'regions in address order, never twice',
      );
      const reported = addresses(seen);
      t.deepEqual(minus(written, reported), [], 'written pages not reported (lost writes)');
      t.deepEqual(minus(reported, written), [], 'pages reported but never written');

      // Everything was protected again: one walk over both, with room for all, finds nothing.
      cursor.fill(0);
      const big = outOf(4096);
      t.is(tr.walk(ranges, cursor, big.runs, big.meta, 1 << 20), 0);
      t.is(cursor[0], areas.length);
    } finally {
      tr.close();
    }
  }),
);

test.serial('walk: regions reported before a failing range stay in out; the cursor names the failing range', (t) =>
  withTarget({ mib: 8, seed: 32 }, async (tg) => {
    const unregistered = await tg.mmap(16);
    const tr = arm(tg.pid);
    try {
      armArea(tr, tg.base, tg.pages);
      const written = await writeMain(tg, randomPages(78, tg.pages, 40));
      const main = { start: tg.base, end: tg.base + tg.pages * PAGE };
      const other = { start: unregistered, end: unregistered + 16 * PAGE };
      // CHECK_WPASYNC: an unregistered VMA fails the call with EPERM (docs/design.md, Kernel facts).
      const checked = { ...DIRTY, flags: PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC };
      const areas = [
        { args: { ...main, ...DIRTY }, limited: true },
        { args: { ...other, ...checked }, limited: true },
      ].sort((a, b) => a.args.start - b.args.start);
      const failing = areas.findIndex((a) => a.args.start === unregistered);
      const cursor = new Float64Array(WALK_CURSOR_FIELDS);
      const out = outOf(4096);
      const err = t.throws(() => tr.walk(plan(areas), cursor, out.runs, out.meta, 4096), { instanceOf: NativeError });
      t.is(err?.code, 'EPERM');
      t.is(cursor[0], failing, 'the cursor points at the failing range');
      t.is(cursor[1], unregistered);
      const before = regionsOf(out, cursor[2]);
      if (failing === 1) {
        t.deepEqual(minus(written, addresses(before)), [], 'the pages reported before the failure are in out');
        t.deepEqual(minus(addresses(before), written), []);
      } else {
        t.is(cursor[2], 0, 'nothing before the failing range');
      }
      // Skip the failing range (as the sender does with a vanished VMA) and go on.
      cursor[0] = failing + 1;
      cursor[1] = 0;
      const n = tr.walk(plan(areas), cursor, out.runs, out.meta, 4096);
      const after = failing === 1 ? [] : regionsOf(out, n);
      t.deepEqual(minus(written, addresses([...before, ...after])), [], 'no write lost around the failure');
      t.log(`failing range ${failing}: ${before.length} regions before it, ${after.length} after`);
    } finally {
      tr.close();
    }
  }),
);

test.serial('walkAsync reports what walk reports; bad arguments and a closed tracker fail clearly', (t) =>
  withTarget({ mib: 8, seed: 33 }, async (tg) => {
    const tr = arm(tg.pid);
    const main = { start: tg.base, end: tg.base + tg.pages * PAGE };
    const ranges = plan([{ args: { ...main, ...DIRTY }, limited: true }]);
    const cursor = new Float64Array(WALK_CURSOR_FIELDS);
    const { runs, meta } = outOf(1024);
    try {
      armArea(tr, tg.base, tg.pages);
      const written = await writeMain(tg, randomPages(79, tg.pages, 200));
      const n = await tr.walkAsync(ranges, cursor, runs, meta, 4096);
      t.is(cursor[0], 1);
      const got = addresses(regionsOf({ runs, meta }, n));
      t.deepEqual(minus(written, got), []);
      t.deepEqual(minus(got, written), []);

      t.throws(() => tr.walk(ranges, cursor, runs, meta, 0), { instanceOf: RangeError, message: /budget/ });
      t.throws(() => tr.walk(ranges, new Float64Array(3), runs, meta, 1), { instanceOf: TypeError, message: /cursor/ });
      t.throws(() => tr.walk(ranges, cursor, new Float64Array(3), new Float64Array(3), 1), { instanceOf: RangeError, message: /runs and meta/ });
      t.throws(() => tr.walk(ranges, cursor, runs, new Float64Array(2), 1), { instanceOf: RangeError, message: /runs and meta/ });
      t.throws(() => tr.walk(new Float64Array(7), cursor, runs, meta, 1), { instanceOf: TypeError, message: /ranges/ });
      const backwards = plan([{ args: { ...DIRTY, start: main.end, end: main.start }, limited: true }]);
      t.throws(() => tr.walk(backwards, cursor.fill(0), runs, meta, 1), { instanceOf: RangeError, message: /bad range 0/ });
      await t.throwsAsync(tr.walkAsync(ranges, cursor, runs, meta, -1), { instanceOf: RangeError });
    } finally {
      tr.close();
    }
    cursor.fill(0);
    const closed = t.throws(() => tr.walk(ranges, cursor, runs, meta, 16), { instanceOf: NativeError });
    t.is(closed?.code, 'EBADF');
    const closedAsync = await t.throwsAsync(tr.walkAsync(ranges, cursor, runs, meta, 16), { instanceOf: NativeError });
    t.is(closedAsync?.code, 'EBADF');
  }),
);
