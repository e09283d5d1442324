// The walk engine: a plan (one item per VMA of the table, vma-table.ts) turned into native walk
// calls (Tracker.walk: every PAGEMAP_SCAN of a batch in one call) and the regions they report
// turned into RunBatches.
//
// Ways to lose writes that the walk closes (docs/design.md, Kernel facts):
// - one failing call must not span pages we need: every range covers one VMA; a VMA that vanished
//   during its scan is skipped (the next refresh sees the new state), never fatal, and the regions
//   reported before the failure are used first (WP matching protected them again);
// - unpopulated pages carry markers once armed ("SWAPPED"): the populated set is taken in the arming
//   call itself; at freeze, markers are told from data through /proc/PID/pagemap (pte-markers.ts)
//   or by what the receiver holds.

import { logger } from '../../common/log';
import { vmaRangeName } from '../../common/vma';
import type { HeldPages } from '../../common/page-runs';
import { NativeError, setWalkRange, WalkCursorField, WalkMetaField, WalkRangeField, type Tracker } from '../../native';
import { checkAlive, stillMapped, type TrackingStats, type VmaEntry } from './vma-table';
import { RunBatcher, type RunBatch } from './run-batch';
import { PagemapReader } from './pte-markers';
import { holdsImagePages, isPresent, isZeroPage, needsFileCategory, scanMasks, type ScanMode } from './scan-modes';

const log = logger('track');

/** Regions one native walk call can return (2 x 64 KiB of arrays). A dirty batch holds at most max_pages
 *  pages, hence as many regions: with the default max_pages (4096) one call fills a batch. The
 *  kernel still gets at most 512 regions an ioctl (native/pagemap_scan.cc: walk_end). */
const OUT_REGIONS = 4096;
/** Walk calls with more address space than this left run on the native walk thread: the kernel
 *  walks ~0.5 ms per GiB even where nothing is populated (64 GiB sparse: 35 ms). Below it the JS
 *  thread is held ~1 ms at most, and a round over 1 GiB saves a thread start. */
const ASYNC_WALK_BYTES = 2 * 2 ** 30;
/** errno codes a scan or register of a VMA that vanished meanwhile may give. */
const VANISHED_CODES = new Set(['EINVAL', 'ENOENT', 'ENOMEM', 'EFAULT']);

/** How SWAPPED-but-not-PRESENT regions of a populated scan are judged (markers or data):
 *  'data'    never armed, no markers: swapped or migrating pages, all kept;
 *  'pagemap' armed private memory: a marker holds nothing (anonymous: zeros; private file: the
 *            file again), told apart through /proc/PID/pagemap;
 *  'shmem'   armed shared memory: a marker may sit over a shmem page that still holds data, kept. */
type SwapPolicy = 'data' | 'pagemap' | 'shmem';

export interface WalkItem {
  entry: VmaEntry;
  mode: ScanMode;
  /** Every page of the VMA is an image page (orphan private file mappings): after the scan's
   *  side effect (arming), the whole range is returned. */
  whole: boolean;
  swap: SwapPolicy;
  /** Ask for PAGE_IS_PFNZERO (zero hints: those pages are not read when staged). */
  zeroHints: boolean;
}

/** A round's plan: fresh VMAs wholly (arming the tracked ones), tracked VMAs what was written
 *  since the last scan, untracked VMAs all populated pages; reserved VMAs not at all once seen. */
export function dirtyPlan(entries: readonly VmaEntry[]): WalkItem[] {
  const plan: WalkItem[] = [];
  for (const entry of entries) {
    const whole = entry.kind === 'orphan-private';
    if (entry.track === 'tracked') plan.push({ entry, mode: entry.fresh ? 'arm' : 'dirty', whole: whole && entry.fresh, swap: 'data', zeroHints: true });
    else if (entry.fresh || entry.track === 'untracked') plan.push({ entry, mode: 'populated', whole, swap: 'data', zeroHints: true });
  }
  return plan;
}

/** The freeze's plan (no WP): every VMA's populated pages, pte markers judged per SwapPolicy. */
export function populatedPlan(entries: readonly VmaEntry[]): WalkItem[] {
  return entries.map((entry) => {
    let swap: SwapPolicy = 'data';
    if (entry.track === 'tracked' && !entry.fresh) swap = entry.kind === 'shared-anon' ? 'shmem' : 'pagemap';
    // Run lists only (nothing is staged from them at the freeze): no zero hints, whose
    // PAGE_IS_PFNZERO costs downtime; a verify pass reads those pages instead (zeros).
    return { entry, mode: 'populated', whole: entry.kind === 'orphan-private', swap, zeroHints: false };
  });
}

/** Where a walk stands in its plan: items before `at` are finished; `vanished` was skipped. */
interface Pass {
  at: number;
  vanished: number;
}

export class WalkEngine {
  private readonly pagemap: PagemapReader;
  private walkBuffers: WalkBuffers | null = null;

  constructor(
    readonly pid: number,
    readonly pageSize: number,
    private readonly tracker: Tracker,
    private readonly stats: TrackingStats,
  ) {
    this.pagemap = new PagemapReader(pid, pageSize);
  }

  close(): void {
    this.pagemap.close();
  }

  /**
   * The whole plan in native walk calls (one per batch: Tracker.walk chains the ioctls of every
   * VMA), regions read out of a Float64Array. Dirty ranges get max_pages = the batch's room.
   * Regions go into the batch in a plain function (addRegions): the generator only steps in for
   * what may yield (a full batch, the next plan item, pages behind a marker). `marksWalked`: the
   * walk's items are no longer fresh once walked. `held`: see TrackedProcess.populatedRuns.
   */
  async *walk(makePlan: () => WalkItem[], maxPages: number, marksWalked: boolean, held?: HeldPages): AsyncGenerator<RunBatch> {
    // The plan is made on the first next(), as the walk starts (the public methods return this
    // generator itself: one async generator a batch goes through, not a chain of them).
    const plan = makePlan();
    // The arrays of the last walk, unless another walk holds them (one at a time in practice).
    const bufs = this.walkBuffers ?? new WalkBuffers();
    this.walkBuffers = null;
    const { cursor, runs, meta } = bufs;
    const b = bufs.batcher(maxPages, this.pageSize);
    const ps = this.pageSize;
    const { ranges, bytes, wholeItems } = walkRanges(plan);
    // Whole items are added as the walk passes them, in address order: region by region then.
    const asTheyAre = !wholeItems;
    cursor.fill(0);
    const pass: Pass = { at: -1, vanished: -1 };
    while (cursor[WalkCursorField.Range] < plan.length) {
      if (b.full()) yield b.take();
      cursor[WalkCursorField.Ioctls] = 0;
      let n: number;
      let failure: unknown = null;
      try {
        n =
          bytes > ASYNC_WALK_BYTES && remainingBytes(ranges, cursor) > ASYNC_WALK_BYTES
            ? await this.tracker.walkAsync(ranges, cursor, runs, meta, b.room())
            : this.tracker.walk(ranges, cursor, runs, meta, b.room());
      } catch (err) {
        // What was reported before the failure was write-protected again: it is used first.
        failure = err;
        n = cursor[WalkCursorField.Regions];
      }
      this.stats.scans += cursor[WalkCursorField.Ioctls];
      let r = 0;
      if (asTheyAre && failure === null && n > 0 && cursor[WalkCursorField.UnlimitedRegions] === 0) {
        // Only dirty regions (limited ranges, the common round): all kept, no zero hints, and
        // their pages fit (at most the budget, the batch's room). Copied as they are.
        this.passItems(plan, pass, meta[WalkMetaField.Range], b, marksWalked);
        b.addRuns(runs, n, cursor[WalkCursorField.LimitedPages]);
        r = n;
      }
      while (r < n) {
        const idx = meta[WalkMetaField.Length * r + WalkMetaField.Range];
        if (idx !== pass.at) {
          // for-of, not yield*: yield* of a sync generator in an async one costs a microtask a step.
          const w = this.passItems(plan, pass, idx, b, marksWalked);
          if (w >= 0) for (const x of this.wholeItems(plan, pass, w, idx, b, marksWalked)) yield x;
        }
        const item = plan[idx];
        r = addRegions(item, idx, runs, meta, r, n, b);
        if (b.full()) yield b.take();
        else if (r < n && meta[WalkMetaField.Length * r + WalkMetaField.Range] === idx) {
          // Stopped at a SWAPPED region of a populated walk: markers or data? Only pages the
          // receiver holds can matter when `held` is given (every page that held data since arming
          // was reported written and sent). Rare and small.
          const start = runs[2 * r];
          const data = this.swappedData(item.swap, start, start + runs[2 * r + 1] * ps, held);
          r++;
          for (let k = 0; k < data.length; k += 2) for (const x of fill(b, data[k], data[k + 1], false)) yield x;
        }
      }
      if (failure !== null) this.skipVanished(plan, cursor, pass, failure);
      const at = cursor[WalkCursorField.Range];
      const w = this.passItems(plan, pass, at, b, marksWalked);
      if (w >= 0) for (const x of this.wholeItems(plan, pass, w, at, b, marksWalked)) yield x;
    }
    if (b.pages > 0) yield b.take();
    this.stats.lastWalkPages = b.taken;
    this.walkBuffers = bufs;
  }

  /** The pages of a SWAPPED-only region [start, end) that hold data (see SwapPolicy). */
  private swappedData(policy: SwapPolicy, start: number, end: number, held?: HeldPages): ArrayLike<number> {
    const candidates = held ? held.heldRunsIn(start, end) : [start, (end - start) / this.pageSize];
    if (policy !== 'pagemap') return candidates;
    const out: number[] = [];
    for (let r = 0; r < candidates.length; r += 2) {
      const runs = this.pagemap.dataRuns(candidates[r], candidates[r] + candidates[r + 1] * this.pageSize);
      for (const x of runs) out.push(x);
    }
    return out;
  }

  /** A walk failed at the cursor's plan item: if its VMA vanished meanwhile, go on after it (the
   *  next refresh sees the new state); anything else is thrown. */
  private skipVanished(plan: WalkItem[], cursor: Float64Array, pass: Pass, err: unknown): void {
    const at = cursor[WalkCursorField.Range];
    const { vma } = plan[at].entry;
    checkAlive(this.pid, err);
    if (!(err instanceof NativeError && VANISHED_CODES.has(err.code) && !stillMapped(this.pid, vma))) throw err;
    this.stats.vanished++;
    log.debug(`${vmaRangeName(vma.start, vma.end)} vanished during its scan (${err.code})`);
    pass.vanished = at;
    cursor[WalkCursorField.Range] = at + 1;
    cursor[WalkCursorField.Position] = 0;
  }

  /**
   * Finish the plan items from pass.at up to `to` (walked items are no longer fresh) and begin item
   * `to`. A whole item's pages are added as it is finished (after its arming scan, in address
   * order): passItems then returns it, for wholeItems to add, which calls it again; -1 when done.
   * A plain method, not a generator: it runs at every VMA of every round.
   */
  private passItems(plan: WalkItem[], pass: Pass, to: number, b: RunBatcher, marksWalked: boolean): number {
    while (pass.at < to) {
      const i = pass.at++;
      if (pass.at < plan.length) b.boundary(plan[pass.at].entry.vma.start);
      if (i < 0) continue;
      const { whole, entry } = plan[i];
      if (marksWalked) entry.fresh = false;
      if (whole && i !== pass.vanished) return i;
    }
    return -1;
  }

  /** passItems stopped at whole item w: add its pages (a run list of its own VMA), go on to `to`. */
  private *wholeItems(plan: WalkItem[], pass: Pass, w: number, to: number, b: RunBatcher, marksWalked: boolean): Generator<RunBatch> {
    for (; w >= 0; w = this.passItems(plan, pass, to, b, marksWalked)) {
      const { vma } = plan[w].entry;
      b.boundary(vma.start);
      yield* fill(b, vma.start, (vma.end - vma.start) / this.pageSize, false);
      if (pass.at < plan.length) b.boundary(plan[pass.at].entry.vma.start);
    }
  }
}

/** The walk plan as Tracker.walk ranges (dirty scans limited by the batch's room), the address
 *  space they cover, and whether the plan has whole items. One pass: it runs every round. */
function walkRanges(plan: WalkItem[]): { ranges: Float64Array; bytes: number; wholeItems: boolean } {
  const ranges = new Float64Array(plan.length * WalkRangeField.Length);
  let bytes = 0;
  let wholeItems = false;
  for (let i = 0; i < plan.length; i++) {
    const { entry, mode, whole, zeroHints } = plan[i];
    setWalkRange(ranges, i, scanMasks(mode, { file: needsFileCategory(entry.kind), zeroPages: zeroHints }), mode === 'dirty');
    // A whole-VMA populated walk needs no scan at all: an empty range keeps its place.
    const start = whole && mode === 'populated' ? entry.vma.end : entry.vma.start;
    const o = i * WalkRangeField.Length;
    ranges[o + WalkRangeField.Start] = start;
    ranges[o + WalkRangeField.End] = entry.vma.end;
    bytes += entry.vma.end - start;
    wholeItems ||= whole;
  }
  return { ranges, bytes, wholeItems };
}

/**
 * Adds the walk's regions from r on that belong to plan item idx, until one is left that needs
 * the caller: the batch is full (a region partly added keeps its rest in `runs`), a region of
 * another item, or a SWAPPED region to judge (populated walks with a SwapPolicy). Returns the
 * first region not done. A plain function: the per-region loop.
 */
function addRegions(item: WalkItem, idx: number, runs: Float64Array, meta: Float64Array, r: number, n: number, b: RunBatcher): number {
  const ps = b.pageSize;
  const filters = item.mode !== 'dirty'; // dirty regions are all kept: a written page is always sent
  const judgesSwap = item.mode === 'populated' && item.swap !== 'data';
  for (; r < n; r++) {
    const m = WalkMetaField.Length * r;
    if (meta[m + WalkMetaField.Range] !== idx) return r;
    if (item.whole) continue; // its whole range is added when the item is finished
    const cat = meta[m + WalkMetaField.Categories];
    if (filters) {
      if (!holdsImagePages(item.entry.kind, cat)) continue;
      if (judgesSwap && !isPresent(cat)) return r;
    }
    const count = runs[2 * r + 1];
    const took = b.add(runs[2 * r], count, isZeroPage(cat));
    if (took < count) {
      runs[2 * r] += took * ps;
      runs[2 * r + 1] = count - took;
      return r;
    }
    if (b.full()) return r + 1;
  }
  return r;
}

/** The arrays a walk fills, kept for the next walk (a round allocates none). */
class WalkBuffers {
  readonly cursor = new Float64Array(WalkCursorField.Length);
  readonly runs = new Float64Array(2 * OUT_REGIONS);
  readonly meta = new Float64Array(WalkMetaField.Length * OUT_REGIONS);
  private runBatcher: RunBatcher | null = null;

  /** An empty batcher of that size. */
  batcher(maxPages: number, pageSize: number): RunBatcher {
    const b = this.runBatcher;
    if (b === null || b.maxPages !== maxPages || b.pageSize !== pageSize) this.runBatcher = new RunBatcher(maxPages, pageSize);
    else b.clear();
    return this.runBatcher!;
  }
}

/** Address space left to walk from the cursor. */
function remainingBytes(ranges: Float64Array, cursor: Float64Array): number {
  const at = cursor[WalkCursorField.Range];
  let bytes = 0;
  for (let i = at; i < ranges.length / WalkRangeField.Length; i++) {
    const o = i * WalkRangeField.Length;
    const start = ranges[o + WalkRangeField.Start];
    bytes += ranges[o + WalkRangeField.End] - (i === at ? Math.max(start, cursor[WalkCursorField.Position]) : start);
  }
  return bytes;
}

/** Add [start, start + count pages) to b, yielding each batch that fills. */
function* fill(b: RunBatcher, start: number, count: number, zero: boolean): Generator<RunBatch> {
  while (count > 0) {
    const took = b.add(start, count, zero);
    start += took * b.pageSize;
    count -= took;
    if (b.full()) yield b.take();
  }
}
