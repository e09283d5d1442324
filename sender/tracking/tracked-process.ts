// The scanning layer: one target process under write tracking (userfaultfd WP-async + PAGEMAP_SCAN).
//
// A composition of two parts over one armed Tracker:
//   vma-table.ts    which VMAs are tracked and how (tracked, reserved, untracked; fresh), kept in
//                   step with the target's maps by refresh();
//   walk-engine.ts  a plan over the table's VMAs walked in native calls, handed out as RunBatches.
// This file arms, decides when a walk may start (open, every VMA decided), and picks the plan.

import { logger } from '../../common/log';
import { UserError } from '../../common/errors';
import type { Vma } from '../../common/vma';
import type { HeldPages } from '../../common/page-runs';
import { arm, probeKernel, type KernelFeatures, type Tracker } from '../../native';
import { readMaps, type MapsEntry } from './maps';
import { explainTargetError } from '../target/target-process';
import type { RunBatch } from './run-batch';
import { VmaTable, type RefreshResult, type TrackingStats, type VmaEntry } from './vma-table';
import { dirtyPlan, populatedPlan, WalkEngine, type WalkItem } from './walk-engine';

export type { RefreshResult, TrackingStats } from './vma-table';

const log = logger('track');

/** Default batch size of populatedRuns() (run lists only: nothing is read). */
const POPULATED_BATCH_PAGES = 1 << 16;

export class TrackedProcess {
  readonly stats: TrackingStats = { scans: 0, registered: 0, registerRefused: 0, vanished: 0, freshVmas: 0, refreshes: 0, lastWalkPages: 0 };
  private readonly table: VmaTable;
  private readonly engine: WalkEngine;
  private closed = false;

  private constructor(
    readonly pid: number,
    readonly pageSize: number,
    private readonly tracker: Tracker,
    maps: MapsEntry[],
    readLayout?: (pid: number) => MapsEntry[],
  ) {
    this.table = new VmaTable(pid, pageSize, tracker, maps, this.stats, readLayout);
    this.engine = new WalkEngine(pid, pageSize, tracker, this.stats);
  }

  /** Probe the kernel (refusing clearly if it cannot track writes), read the maps, arm tracking. */
  static attach(pid: number, opts: { features?: KernelFeatures; readMaps?: (pid: number) => MapsEntry[] } = {}): TrackedProcess {
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
    return new TrackedProcess(pid, features.pageSize, tracker, maps, opts.readMaps);
  }

  /** Memory-to-copy VMAs as of the last refresh (or attach). */
  layout(): Vma[] {
    return this.table.layout();
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
   * (fresh: returned wholly by the next dirtyRuns), drop what vanished. `frozen`: the target is
   * frozen (its layout cannot change meanwhile).
   */
  refresh(frozen = false): RefreshResult {
    this.assertOpen();
    return this.table.refresh(frozen);
  }

  /**
   * Pages to send this round, in batches of at most maxPages pages: fresh VMAs wholly (arming
   * them), tracked VMAs what was written since the last scan (resumed from walk_end), untracked
   * VMAs all populated pages.
   */
  dirtyRuns(maxPages: number): AsyncGenerator<RunBatch> {
    return this.engine.walk(() => this.plan(dirtyPlan), maxPages, true);
  }

  /**
   * At freeze (no WP): the pages the image must hold now. Pages the receiver holds outside this
   * set are gone from the target (MADV_DONTNEED, a private file page back to the file) and become
   * holes. Pages showing a pte marker (PAGE_IS_SWAPPED) are told apart per SwapPolicy (walk-engine.ts); `held`
   * (SentPages) narrows what needs telling apart to what the receiver holds, and keeps the
   * shmem pages it holds. Pass it only if the `discard` runs of every refresh were forgotten.
   */
  populatedRuns(held?: HeldPages, maxPages = POPULATED_BATCH_PAGES): AsyncGenerator<RunBatch> {
    return this.engine.walk(() => this.plan(populatedPlan), maxPages, false, held);
  }

  /** Drop tracking: the uffd is closed, the kernel unregisters every VMA, the target runs on. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.engine.close();
    this.tracker.close();
  }

  private assertOpen(): void {
    if (this.closed) throw new Error(`tracking of pid ${this.pid} is closed`);
  }

  /** As a walk starts (its first next()): still open, every VMA decided, then the plan. */
  private plan(make: (entries: readonly VmaEntry[]) => WalkItem[]): WalkItem[] {
    this.assertOpen();
    this.table.decideUndecided();
    return make(this.table.entries);
  }
}
