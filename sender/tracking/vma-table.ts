// The VMA table: which VMAs of the target are tracked and how, kept in step with its maps.
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
// An unregistered VMA is silently skipped by PM_SCAN_WP_MATCHING, so its writes would be lost
// (docs/design.md, Kernel facts): every refresh re-reads the maps AND probes every VMA's
// registration (a VMA munmapped and mapped again identically looks the same in the maps; mremap
// drops the registration too), registering before any scan. A VMA that vanished meanwhile is
// dropped (the next refresh sees the new state), never fatal. The walk itself is walk-engine.ts.

import { logger } from '../../common/log';
import { UserError } from '../../common/errors';
import { vmaRangeName, type Vma } from '../../common/vma';
import { unionRuns } from '../../common/page-runs';
import { NativeError, type Tracker } from '../../native';
import { classifyVma, isMemoryToCopy, isProtNone, readMaps, toVma, type MapsEntry, type VmaKind } from './maps';
import { diffVmas, sameVma, type VmaDiff } from './vma-diff';
import { explainTargetError, isAlive } from '../target/target-process';
import { registrationProbeArgs } from './scan-modes';

const log = logger('track');

/** Reads of the maps one refresh may make while its registrations keep meeting a changed layout
 *  (a target remapping without pause): the rest waits for the next refresh. */
const MAX_SYNC_PASSES = 4;

export type Track = 'tracked' | 'reserved' | 'untracked';

/** One VMA of the table. Walks clear `fresh` of the entries they scanned. */
export interface VmaEntry {
  vma: Vma;
  kind: VmaKind;
  /** undefined until decided (registration attempted) by a walk's start or a refresh. */
  track?: Track;
  fresh: boolean;
}

export interface RefreshResult {
  diff: VmaDiff;
  layout: Vma[];
  /** (start, pages) runs of fresh VMAs: whatever the receiver held there belonged to an earlier
   *  object; their populated pages come back in the next dirtyRuns(). */
  discard: number[];
}

/** Counters of one tracked process, shared by its VMA table and its walk engine. */
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

export class VmaTable {
  private list: VmaEntry[];
  private readonly probeVec = new BigUint64Array(3);

  constructor(
    readonly pid: number,
    readonly pageSize: number,
    private readonly tracker: Tracker,
    maps: MapsEntry[],
    private readonly stats: TrackingStats,
    /** How the maps are read (tests hand in a stale read to reproduce a race). */
    private readonly readLayout: (pid: number) => MapsEntry[] = readMaps,
  ) {
    this.list = maps.filter(isMemoryToCopy).map((m) => ({ vma: toVma(m), kind: classifyVma(m), fresh: true }));
  }

  /** The entries as of the last refresh (or attach), in address order. */
  get entries(): readonly VmaEntry[] {
    return this.list;
  }

  /** Memory-to-copy VMAs as of the last refresh (or attach). */
  layout(): Vma[] {
    return this.list.map((e) => e.vma);
  }

  /**
   * Re-read the maps, probe registrations, register new and changed-object VMAs (fresh: returned
   * wholly by the next walk), drop what vanished. `settled`: the target is frozen, its layout
   * cannot change under us (no second read; see syncWithMaps).
   */
  refresh(settled = false): RefreshResult {
    this.stats.refreshes++;
    const before = this.list;
    // A registration covers the range the maps showed a moment earlier. If the target remapped
    // in between, that range now cuts one of its VMAs in two, registered and not, which do not
    // merge: its mremap() of the whole would fail (EFAULT) where it never would untracked. Read
    // the maps again after registering, and register what is left, until a read needs nothing
    // (docs/design.md, "Registration and the target's layout").
    const lists: number[][] = [];
    for (let pass = 1; ; pass++) {
      const discard: number[] = [];
      lists.push(discard);
      if (this.syncWithMaps(discard) === 0 || settled || pass === MAX_SYNC_PASSES) break;
    }
    // Each read's fresh ranges are sorted; the reads' together overlap (a VMA registered in two
    // pieces is fresh again once merged).
    const discard = lists.length === 1 ? lists[0] : unionRuns(lists, this.pageSize);
    const next = this.list;
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

  /** Entries from attach that no refresh has looked at yet: decide them from the maps as they are
   *  now (round 0's walk, when no refresh came first). */
  decideUndecided(): void {
    if (this.list.some((e) => e.track === undefined)) this.refresh();
  }

  /** One read of the maps: the table follows it, registering what it shows unregistered (fresh
   *  VMAs' ranges are added to `discard`). Returns how many VMAs it registered. */
  private syncWithMaps(discard: number[]): number {
    const maps = this.readLayout(this.pid).filter(isMemoryToCopy);
    const before = this.list;
    const byStart = new Map(before.map((e) => [e.vma.start, e]));
    const freshBefore = before.filter((e) => e.fresh).map((e) => e.vma);
    const next: VmaEntry[] = [];
    let registered = 0;
    for (const m of maps) {
      const vma = toVma(m);
      const prev = byStart.get(vma.start);
      const same = prev !== undefined && sameVma(prev.vma, vma);
      // Not yet walked since it was first seen (even if split or grown since): still fresh.
      const wasFresh = freshBefore.some((f) => f.start < vma.end && vma.start < f.end);
      const entry: VmaEntry = { vma, kind: classifyVma(m), fresh: wasFresh };
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
        if (track === 'tracked') registered++;
        entry.track = track;
        entry.fresh = true;
      }
      if (entry.fresh && !(prev?.fresh && same)) discard.push(vma.start, (vma.end - vma.start) / this.pageSize);
      next.push(entry);
    }
    this.list = next;
    return registered;
  }

  private isRegistered(v: Vma): boolean {
    this.stats.scans++;
    try {
      return this.tracker.scan(registrationProbeArgs(v.start, this.pageSize), this.probeVec).count === 0;
    } catch (err) {
      checkAlive(this.pid, err);
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
      checkAlive(this.pid, err);
      if (!(err instanceof NativeError)) throw err;
      if (!stillMapped(this.pid, v)) {
        this.stats.vanished++;
        log.debug(`${vmaRangeName(v.start, v.end)} vanished before it was registered`);
        return null;
      }
      this.stats.registerRefused++;
      log.warn(`cannot track writes to ${vmaRangeName(v.start, v.end)} ${v.perms} ${v.path} (${err.code}): its populated pages are sent in full every round`);
      return 'untracked';
    }
  }
}

/** Whether the target's maps still show v as it was (a failed call on it was not a vanished VMA). */
export function stillMapped(pid: number, v: Vma): boolean {
  return readMaps(pid).some((m) => sameVma(m, v));
}

/** Turn the target's death into the user's error; other errors return. */
export function checkAlive(pid: number, err: unknown): void {
  if (!isAlive(pid)) {
    const e = explainTargetError(err, pid);
    throw e instanceof UserError ? e : new UserError(`process ${pid} exited during the migration`);
  }
}
