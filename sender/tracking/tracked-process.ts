// The scanning layer: one target process under write tracking (userfaultfd WP-async + PAGEMAP_SCAN).
//
// Each VMA of the layout is in one of three states:
//   tracked    registered with our userfaultfd: round 0 (or, for a VMA first seen later, the round
//              after it appeared) write-protects it and returns its populated pages in the same
//              scan; later rounds return what was written since ('dirty' scan, WP matching);
//   reserved   PROT_NONE and never registered: it cannot be written until an mprotect, which
//              makes a new or changed VMA that the next refresh registers. Its populated pages
//              (data written before it was made PROT_NONE) are read once, when first seen, and
//              it is not scanned again (big PROT_NONE reservations cost 0.5 ms/GiB a scan);
//   untracked  the kernel refused to register it (EPERM: shared without write permission; EBUSY:
//              the target's own userfaultfd; EINVAL: e.g. VM_DROPPABLE): every round returns all
//              its populated pages.
// A VMA is "fresh" from the refresh that first sees it unregistered until a walk has scanned it:
// fresh VMAs come back wholly (every populated page), their range is reported in `discard` so
// that the receiver drops what it held there from an earlier object.
//
// Ways to lose writes and how this file closes them (kernel notes, items 5-9):
// - an unregistered VMA is silently skipped by PM_SCAN_WP_MATCHING: every refresh re-reads the maps
//   AND probes every VMA's registration (a VMA munmapped and mapped again identically looks the
//   same in the maps; mremap drops the registration too), registering before any scan;
// - one failing call must not span pages we need: every call covers one VMA; a VMA that vanished
//   meanwhile is dropped (the next refresh sees the new state), never fatal;
// - unpopulated pages carry markers once armed ("SWAPPED"): the populated set is taken in the arming
//   call itself; at freeze, markers are told from data through /proc/PID/pagemap (pte-markers.ts)
//   or by what the receiver holds.

import { logger } from '../../common/log';
import { UserError } from '../../common/errors';
import { vmaRangeName, type Vma } from '../../common/vma';
import {
  arm,
  NativeError,
  probeKernel,
  setWalkRange,
  WALK_CURSOR_FIELDS,
  WALK_RANGE_FIELDS,
  type KernelFeatures,
  type Tracker,
} from '../../native';
import { classifyVma, isMemoryToCopy, isProtNone, readMaps, toVma, type MapsEntry, type VmaKind } from './maps';
import { diffVmas, sameVma, type VmaDiff } from './vma-diff';
import { explainTargetError, isAlive } from '../target/target-process';
import { RunBatcher, type RunBatch } from './run-batch';
import { PagemapReader } from './pte-markers';
import { holdsImagePages, isPresent, isZeroPage, needsFileCategory, registrationProbeArgs, scanMasks, type ScanMode } from './scan-modes';

export type { RunBatch } from './run-batch';

const log = logger('track');

/** Regions one native walk call can return (2 x 64 KiB of arrays). A dirty batch holds at most max_pages
 *  pages, hence as many regions: with the default max_pages (4096) one call fills a batch. The
 *  kernel still gets at most 512 regions an ioctl (native/pagemap_scan.cc: walk_end). */
const OUT_REGIONS = 4096;
/** Walk calls with more address space than this left run on the native walk thread: the kernel
 *  walks ~0.5 ms per GiB even where nothing is populated (64 GiB sparse: 35 ms). Below it the JS
 *  thread is held ~1 ms at most, and a round over 1 GiB saves a thread start. */
const ASYNC_WALK_BYTES = 2 * 2 ** 30;
/** Default batch size of populatedRuns() (run lists only: nothing is read). */
const POPULATED_BATCH_PAGES = 1 << 16;
/** errno codes a scan or register of a VMA that vanished meanwhile may give. */
const VANISHED_CODES = new Set(['EINVAL', 'ENOENT', 'ENOMEM', 'EFAULT']);

type Track = 'tracked' | 'reserved' | 'untracked';

interface Entry {
  vma: Vma;
  kind: VmaKind;
  /** undefined until decided (registration attempted) by initialRuns/dirtyRuns/refresh. */
  track?: Track;
  fresh: boolean;
}

/** What the receiver holds, when known: lets the freeze-time populated set keep held pages that
 *  now show a pte marker (SentPages implements it). */
export interface HeldPages {
  heldRunsIn(start: number, end: number): ArrayLike<number>;
}

export interface RefreshResult {
  diff: VmaDiff;
  layout: Vma[];
  /** (start, pages) runs of fresh VMAs: whatever the receiver held there belonged to an earlier
   *  object; their populated pages come back in the next dirtyRuns(). */
  discard: number[];
}

/** How SWAPPED-but-not-PRESENT regions of a populated scan are judged (markers or data):
 *  'data'    never armed, no markers: swapped or migrating pages, all kept;
 *  'pagemap' armed private memory: a marker holds nothing (anonymous: zeros; private file: the
 *            file again), told apart through /proc/PID/pagemap;
 *  'shmem'   armed shared memory: a marker may sit over a shmem page that still holds data, kept. */
type SwapPolicy = 'data' | 'pagemap' | 'shmem';

interface WalkItem {
  entry: Entry;
  mode: ScanMode;
  /** Every page of the VMA is an image page (orphan private file mappings): after the scan's
   *  side effect (arming), the whole range is returned. */
  whole: boolean;
  swap: SwapPolicy;
  /** Ask for PAGE_IS_PFNZERO (zero hints: those pages are not read when staged). */
  zeroHints: boolean;
}

export interface TrackingStats {
  /** PAGEMAP_SCAN calls (registration probes included). */
  scans: number;
  registered: number;
  registerRefused: number;
  /** VMAs that vanished between the maps read and their register or scan. */
  vanished: number;
  freshVmas: number;
  refreshes: number;
  /** Pages returned by the last walk (initialRuns/dirtyRuns/populatedRuns). */
  lastWalkPages: number;
}

export class TrackedProcess {
  readonly stats: TrackingStats = { scans: 0, registered: 0, registerRefused: 0, vanished: 0, freshVmas: 0, refreshes: 0, lastWalkPages: 0 };
  private entries: Entry[];
  private closed = false;
  private readonly probeVec = new BigUint64Array(3);
  private readonly pagemap: PagemapReader;
  private walkBuffers: WalkBuffers | null = null;

  private constructor(
    readonly pid: number,
    readonly pageSize: number,
    private readonly tracker: Tracker,
    maps: MapsEntry[],
  ) {
    this.entries = maps.filter(isMemoryToCopy).map((m) => ({ vma: toVma(m), kind: classifyVma(m), fresh: true }));
    this.pagemap = new PagemapReader(pid, pageSize);
  }

  /** Probe the kernel (refusing clearly if it cannot track writes), read the maps, arm tracking. */
  static attach(pid: number, opts: { features?: KernelFeatures } = {}): TrackedProcess {
    const features = opts.features ?? probeKernel();
    if (features.missing.length > 0) {
      throw new UserError(`this kernel (${features.kernelRelease}) cannot track a process's writes: missing ${features.missing.join(', ')}`);
    }
    const maps = readMaps(pid);
    let tracker: Tracker;
    try {
      tracker = arm(pid);
    } catch (err) {
      throw explainTargetError(err, pid);
    }
    log.debug(`armed pid ${pid}: ${maps.length} VMAs`);
    return new TrackedProcess(pid, features.pageSize, tracker, maps);
  }

  /** Memory-to-copy VMAs as of the last refresh (or attach). */
  layout(): Vma[] {
    return this.entries.map((e) => e.vma);
  }

  /**
   * Round 0: register every VMA, write-protect everything and return the populated pages in the
   * same scans. Private file pages never written are not returned (they stay in the file).
   */
  initialRuns(maxPages: number): AsyncGenerator<RunBatch> {
    return this.dirtyRuns(maxPages);
  }

  /**
   * Rounds 1..n: re-read the maps, probe registrations, register new and changed-object VMAs
   * (fresh: returned wholly by the next dirtyRuns), drop what vanished.
   */
  refresh(): RefreshResult {
    this.assertOpen();
    this.stats.refreshes++;
    const maps = readMaps(this.pid).filter(isMemoryToCopy);
    const before = this.entries;
    const byStart = new Map(before.map((e) => [e.vma.start, e]));
    const freshBefore = before.filter((e) => e.fresh).map((e) => e.vma);
    const next: Entry[] = [];
    const discard: number[] = [];
    for (const m of maps) {
      const vma = toVma(m);
      const prev = byStart.get(vma.start);
      const same = prev !== undefined && sameVma(prev.vma, vma);
      // Not yet walked since it was first seen (even if split or grown since): still fresh.
      const wasFresh = freshBefore.some((f) => f.start < vma.end && vma.start < f.end);
      const entry: Entry = { vma, kind: classifyVma(m), fresh: wasFresh };
      if (this.isRegistered(vma)) {
        entry.track = 'tracked';
      } else if (isProtNone(vma)) {
        entry.track = 'reserved';
        entry.fresh ||= !(same && prev?.track === 'reserved');
      } else if (same && prev?.track === 'untracked') {
        entry.track = 'untracked';
      } else {
        const track = this.register(vma);
        if (track === null) continue;
        entry.track = track;
        entry.fresh = true;
      }
      if (entry.fresh && !(prev?.fresh && same)) discard.push(vma.start, (vma.end - vma.start) / this.pageSize);
      next.push(entry);
    }
    this.entries = next;
    const diff = diffVmas(
      before.map((e) => e.vma),
      next.map((e) => e.vma),
    );
    const fresh = next.filter((e) => e.fresh).length;
    this.stats.freshVmas += discard.length / 2;
    if (log.enabled('debug')) {
      log.debug(`refresh: ${next.length} VMAs, +${diff.added.length} -${diff.removed.length} ~${diff.changed.length}, ${fresh} fresh`);
    }
    return { diff, layout: this.layout(), discard };
  }

  /**
   * Pages to send this round, in batches of at most maxPages pages: fresh VMAs wholly (arming
   * them), tracked VMAs what was written since the last scan (resumed from walk_end), untracked
   * VMAs all populated pages.
   */
  dirtyRuns(maxPages: number): AsyncGenerator<RunBatch> {
    return this.walk(() => {
      const plan: WalkItem[] = [];
      for (const entry of this.entries) {
        const whole = entry.kind === 'orphan-private';
        if (entry.track === 'tracked') plan.push({ entry, mode: entry.fresh ? 'arm' : 'dirty', whole: whole && entry.fresh, swap: 'data', zeroHints: true });
        else if (entry.fresh || entry.track === 'untracked') plan.push({ entry, mode: 'populated', whole, swap: 'data', zeroHints: true });
      }
      return plan;
    }, maxPages, true);
  }

  /**
   * At freeze (no WP): the pages the image must hold now. Pages the receiver holds outside this
   * set are gone from the target (MADV_DONTNEED, a private file page back to the file) and become
   * holes. Pages showing a pte marker (PAGE_IS_SWAPPED) are told apart per SwapPolicy; `held`
   * (SentPages) narrows what needs telling apart to what the receiver holds, and keeps the
   * shmem pages it holds. Pass it only if the `discard` runs of every refresh were forgotten.
   */
  populatedRuns(held?: HeldPages, maxPages = POPULATED_BATCH_PAGES): AsyncGenerator<RunBatch> {
    return this.walk(
      () =>
        this.entries.map((entry) => {
          let swap: SwapPolicy = 'data';
          if (entry.track === 'tracked' && !entry.fresh) swap = entry.kind === 'shared-anon' ? 'shmem' : 'pagemap';
          // Run lists only (nothing is staged from them at the freeze): no zero hints, whose
          // PAGE_IS_PFNZERO costs downtime; a verify pass reads those pages instead (zeros).
          return { entry, mode: 'populated', whole: entry.kind === 'orphan-private', swap, zeroHints: false };
        }),
      maxPages,
      false,
      held,
    );
  }

  /** Drop tracking: the uffd is closed, the kernel unregisters every VMA, the target runs on. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.pagemap.close();
    this.tracker.close();
  }

  // ---------------------------------------------------------------- internals

  private assertOpen(): void {
    if (this.closed) throw new Error(`tracking of pid ${this.pid} is closed`);
  }

  /** Entries from attach that no refresh has looked at yet: register them (round 0). */
  private decideUndecided(): void {
    if (this.entries.every((e) => e.track !== undefined)) return;
    const keep: Entry[] = [];
    for (const e of this.entries) {
      if (e.track === undefined) {
        const track = isProtNone(e.vma) ? 'reserved' : this.register(e.vma);
        if (track === null) continue;
        e.track = track;
      }
      keep.push(e);
    }
    this.entries = keep;
  }

  private isRegistered(v: Vma): boolean {
    this.stats.scans++;
    try {
      return this.tracker.scan(registrationProbeArgs(v.start, this.pageSize), this.probeVec).count === 0;
    } catch (err) {
      this.checkAlive(err);
      return false; // vanished meanwhile: register() will tell
    }
  }

  /** UFFDIO_REGISTER; null when the VMA vanished meanwhile. */
  private register(v: Vma): Track | null {
    try {
      this.tracker.register(v.start, v.end);
      this.stats.registered++;
      return 'tracked';
    } catch (err) {
      this.checkAlive(err);
      if (!(err instanceof NativeError)) throw err;
      if (!this.stillMapped(v)) {
        this.stats.vanished++;
        log.debug(`${vmaRangeName(v.start, v.end)} vanished before it was registered`);
        return null;
      }
      this.stats.registerRefused++;
      log.warn(`cannot track writes to ${vmaRangeName(v.start, v.end)} ${v.perms} ${v.path} (${err.code}): its populated pages are sent in full every round`);
      return 'untracked';
    }
  }

  private stillMapped(v: Vma): boolean {
    return readMaps(this.pid).some((m) => sameVma(m, v));
  }

  /** Turn the target's death into the user's error; other errors return. */
  private checkAlive(err: unknown): void {
    if (!isAlive(this.pid)) {
      const e = explainTargetError(err, this.pid);
      throw e instanceof UserError ? e : new UserError(`process ${this.pid} exited during the migration`);
    }
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

  /**
   * The whole plan in native walk calls (one per batch: Tracker.walk chains the ioctls of every
   * VMA), regions read out of a Float64Array. Dirty ranges get max_pages = the batch's room.
   * Regions go into the batch in a plain function (addRegions): the generator only steps in for
   * what may yield (a full batch, the next plan item, pages behind a marker).
   */
  private async *walk(makePlan: () => WalkItem[], maxPages: number, marksWalked: boolean, held?: HeldPages): AsyncGenerator<RunBatch> {
    // The plan is made on the first next(), as the walk starts (the public methods return this
    // generator itself: one async generator a batch goes through, not a chain of them).
    this.assertOpen();
    this.decideUndecided();
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
    const pass = { at: -1, vanished: -1 }; // the item being walked: those before it are finished
    while (cursor[0] < plan.length) {
      if (b.full()) yield b.take();
      cursor[3] = 0;
      let n: number;
      let failure: unknown = null;
      try {
        n = bytes > ASYNC_WALK_BYTES && remainingBytes(ranges, cursor) > ASYNC_WALK_BYTES ? await this.tracker.walkAsync(ranges, cursor, runs, meta, b.room()) : this.tracker.walk(ranges, cursor, runs, meta, b.room());
      } catch (err) {
        // What was reported before the failure was write-protected again: it is used first.
        failure = err;
        n = cursor[2];
      }
      this.stats.scans += cursor[3];
      let r = 0;
      if (asTheyAre && failure === null && n > 0 && cursor[5] === 0) {
        // Only dirty regions (limited ranges, the common round): all kept, no zero hints, and
        // their pages fit (at most the budget, the batch's room). Copied as they are.
        this.passItems(plan, pass, meta[1], b, marksWalked);
        b.addRuns(runs, n, cursor[4]);
        r = n;
      }
      while (r < n) {
        const idx = meta[2 * r + 1];
        if (idx !== pass.at) {
          // for-of, not yield*: yield* of a sync generator in an async one costs a microtask a step.
          const w = this.passItems(plan, pass, idx, b, marksWalked);
          if (w >= 0) for (const x of this.wholeItems(plan, pass, w, idx, b, marksWalked)) yield x;
        }
        const item = plan[idx];
        r = addRegions(item, idx, runs, meta, r, n, b);
        if (b.full()) yield b.take();
        else if (r < n && meta[2 * r + 1] === idx) {
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
      const w = this.passItems(plan, pass, cursor[0], b, marksWalked);
      if (w >= 0) for (const x of this.wholeItems(plan, pass, w, cursor[0], b, marksWalked)) yield x;
    }
    if (b.pages > 0) yield b.take();
    this.stats.lastWalkPages = b.taken;
    this.walkBuffers = bufs;
  }

  /** A walk failed at plan item cursor[0]: if its VMA vanished meanwhile, go on after it (the next
   *  refresh sees the new state); anything else is thrown. */
  private skipVanished(plan: WalkItem[], cursor: Float64Array, pass: { vanished: number }, err: unknown): void {
    const at = cursor[0];
    const { vma } = plan[at].entry;
    this.checkAlive(err);
    if (!(err instanceof NativeError && VANISHED_CODES.has(err.code) && !this.stillMapped(vma))) throw err;
    this.stats.vanished++;
    log.debug(`${vmaRangeName(vma.start, vma.end)} vanished during its scan (${err.code})`);
    pass.vanished = at;
    cursor[0] = at + 1;
    cursor[1] = 0;
  }

  /**
   * Finish the plan items from pass.at up to `to` (walked items are no longer fresh) and begin item
   * `to`. A whole item's pages are added as it is finished (after its arming scan, in address
   * order): passItems then returns it, for wholeItems to add, which calls it again; -1 when done.
   * A plain method, not a generator: it runs at every VMA of every round.
   */
  private passItems(plan: WalkItem[], pass: { at: number; vanished: number }, to: number, b: RunBatcher, marksWalked: boolean): number {
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
  private *wholeItems(plan: WalkItem[], pass: { at: number; vanished: number }, w: number, to: number, b: RunBatcher, marksWalked: boolean): Generator<RunBatch> {
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
  const ranges = new Float64Array(plan.length * WALK_RANGE_FIELDS);
  let bytes = 0;
  let wholeItems = false;
  for (let i = 0; i < plan.length; i++) {
    const { entry, mode, whole, zeroHints } = plan[i];
    setWalkRange(ranges, i, scanMasks(mode, { file: needsFileCategory(entry.kind), zeroPages: zeroHints }), mode === 'dirty');
    // A whole-VMA populated walk needs no scan at all: an empty range keeps its place.
    const start = whole && mode === 'populated' ? entry.vma.end : entry.vma.start;
    ranges[i * WALK_RANGE_FIELDS] = start;
    ranges[i * WALK_RANGE_FIELDS + 1] = entry.vma.end;
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
    if (meta[2 * r + 1] !== idx) return r;
    if (item.whole) continue; // its whole range is added when the item is finished
    const cat = meta[2 * r];
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
  readonly cursor = new Float64Array(WALK_CURSOR_FIELDS);
  readonly runs = new Float64Array(2 * OUT_REGIONS);
  readonly meta = new Float64Array(2 * OUT_REGIONS);
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
  let bytes = 0;
  for (let i = cursor[0]; i < ranges.length / WALK_RANGE_FIELDS; i++) {
    const o = i * WALK_RANGE_FIELDS;
    bytes += ranges[o + 1] - (i === cursor[0] ? Math.max(ranges[o], cursor[1]) : ranges[o]);
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
