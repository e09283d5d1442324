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
import { arm, NativeError, probeKernel, type KernelFeatures, type ScanArgs, type ScanResult, type Tracker } from '../../native';
import { classifyVma, isMemoryToCopy, isProtNone, readMaps, toVma, type MapsEntry, type VmaKind } from '../maps';
import { diffVmas, sameVma, type VmaDiff } from '../vma-diff';
import { explainTargetError, isAlive } from '../target-process';
import { RunBatcher, type RunBatch } from './run-batch';
import { PagemapReader } from './pte-markers';
import { holdsImagePages, isPresent, isZeroPage, needsFileCategory, registrationProbeArgs, scanArgs, type ScanMode } from './scan-modes';

export type { RunBatch } from './run-batch';

const log = logger('track');

/** Regions per PAGEMAP_SCAN call (12 KiB of vec). The native scan never passes the kernel more
 *  than 512 (its internal buffer; a larger vec_len makes walk_end stale: native/pagemap_scan.cc),
 *  so a bigger vec would go unused. */
const VEC_REGIONS = 512;
/** Ranges bigger than this are scanned on the native scan thread instead of the JS thread. */
const ASYNC_SCAN_BYTES = 1 << 30;
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
  async *initialRuns(maxPages: number): AsyncGenerator<RunBatch> {
    yield* this.dirtyRuns(maxPages);
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
  async *dirtyRuns(maxPages: number): AsyncGenerator<RunBatch> {
    this.assertOpen();
    this.decideUndecided();
    const plan: WalkItem[] = [];
    for (const entry of this.entries) {
      const whole = entry.kind === 'orphan-private';
      if (entry.track === 'tracked') plan.push({ entry, mode: entry.fresh ? 'arm' : 'dirty', whole: whole && entry.fresh, swap: 'data', zeroHints: true });
      else if (entry.fresh || entry.track === 'untracked') plan.push({ entry, mode: 'populated', whole, swap: 'data', zeroHints: true });
    }
    yield* this.walk(plan, maxPages, true);
  }

  /**
   * At freeze (no WP): the pages the image must hold now. Pages the receiver holds outside this
   * set are gone from the target (MADV_DONTNEED, a private file page back to the file) and become
   * holes. Pages showing a pte marker (PAGE_IS_SWAPPED) are told apart per SwapPolicy; `held`
   * (SentPages) narrows what needs telling apart to what the receiver holds, and keeps the
   * shmem pages it holds. Pass it only if the `discard` runs of every refresh were forgotten.
   */
  async *populatedRuns(held?: HeldPages, maxPages = POPULATED_BATCH_PAGES): AsyncGenerator<RunBatch> {
    this.assertOpen();
    this.decideUndecided();
    const plan: WalkItem[] = this.entries.map((entry) => {
      let swap: SwapPolicy = 'data';
      if (entry.track === 'tracked' && !entry.fresh) swap = entry.kind === 'shared-anon' ? 'shmem' : 'pagemap';
      // Run lists only (nothing is staged from them at the freeze): no zero hints, whose
      // PAGE_IS_PFNZERO costs downtime; a verify pass reads those pages instead (zeros).
      return { entry, mode: 'populated', whole: entry.kind === 'orphan-private', swap, zeroHints: false };
    });
    yield* this.walk(plan, maxPages, false, held);
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

  private scan(args: ScanArgs, vec: BigUint64Array): ScanResult | Promise<ScanResult> {
    this.stats.scans++;
    return args.end - args.start > ASYNC_SCAN_BYTES ? this.tracker.scanAsync(args, vec) : this.tracker.scan(args, vec);
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

  private async *walk(plan: WalkItem[], maxPages: number, marksWalked: boolean, held?: HeldPages): AsyncGenerator<RunBatch> {
    const b = new RunBatcher(maxPages, this.pageSize);
    const vec = new BigUint64Array(3 * VEC_REGIONS);
    let pages = 0;
    for (const item of plan) {
      b.boundary(item.entry.vma.start);
      for await (const batch of this.walkVma(item, b, vec, held)) {
        pages += batch.pages;
        yield batch;
      }
      if (marksWalked) item.entry.fresh = false;
    }
    if (b.pages > 0) {
      pages += b.pages;
      yield b.take();
    }
    this.stats.lastWalkPages = pages;
  }

  /** Scan one VMA from start to end, resuming from walk_end, filling `b` (yielding when full).
   *  The add loops are written out (no generator per region on the hot path). */
  private async *walkVma(item: WalkItem, b: RunBatcher, vec: BigUint64Array, held?: HeldPages): AsyncGenerator<RunBatch> {
    const { vma, kind } = item.entry;
    const ps = this.pageSize;
    // A whole-VMA populated walk needs no scan at all.
    const first = item.whole && item.mode === 'populated' ? vma.end : vma.start;
    for (let pos = first; pos < vma.end; ) {
      const args = scanArgs(item.mode, pos, vma.end, { file: needsFileCategory(kind), zeroPages: item.zeroHints });
      if (item.mode === 'dirty') {
        // The kernel write-protects only what it reports: ask for no more than fits.
        if (b.full()) yield b.take();
        args.maxPages = b.room();
      }
      let res: ScanResult;
      try {
        res = await this.scan(args, vec);
      } catch (err) {
        this.checkAlive(err);
        if (err instanceof NativeError && VANISHED_CODES.has(err.code) && !this.stillMapped(vma)) {
          this.stats.vanished++;
          log.debug(`${vmaRangeName(vma.start, vma.end)} vanished during its scan (${err.code})`);
          return;
        }
        throw err;
      }
      for (let i = 0; i < res.count && !item.whole; i++) {
        let start = Number(vec[3 * i]);
        const end = Number(vec[3 * i + 1]);
        const cat = Number(vec[3 * i + 2]);
        if (item.mode !== 'dirty' && !holdsImagePages(kind, cat)) continue;
        if (item.mode === 'populated' && item.swap !== 'data' && !isPresent(cat)) {
          // Markers or data? Only pages the receiver holds can matter when `held` is given (every
          // page that held data since arming was reported written and sent). Rare and small.
          const runs = this.swappedData(item.swap, start, end, held);
          for (let r = 0; r < runs.length; r += 2) {
            for (let s = runs[r], n = runs[r + 1]; n > 0; ) {
              const took = b.add(s, n, false);
              s += took * ps;
              n -= took;
              if (b.full()) yield b.take();
            }
          }
          continue;
        }
        const zero = isZeroPage(cat);
        for (let n = (end - start) / ps; n > 0; ) {
          const took = b.add(start, n, zero);
          start += took * ps;
          n -= took;
          if (b.full()) yield b.take();
        }
      }
      if (res.walkEnd <= pos || res.walkEnd > vma.end) {
        throw new Error(`PAGEMAP_SCAN of ${vmaRangeName(vma.start, vma.end)} from ${pos.toString(16)}: walk_end ${res.walkEnd.toString(16)} made no progress`);
      }
      pos = res.walkEnd;
    }
    if (item.whole) {
      for (let s = vma.start, n = (vma.end - vma.start) / ps; n > 0; ) {
        const took = b.add(s, n, false);
        s += took * ps;
        n -= took;
        if (b.full()) yield b.take();
      }
    }
  }
}
