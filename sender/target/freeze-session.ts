// Every freeze the sender makes (the stop-and-copy freeze, the auto-converge throttle's short
// freezes) goes through here, so that one place can promise the target is never left frozen:
// each live Frozen is remembered, and thawAll() — called on any failure, on SIGINT/SIGTERM and,
// as the last resort, on process exit — detaches from all of them. ptrace calls must come from
// the thread that froze, i.e. the JS main thread: everything here is synchronous.
//
// If the sender is SIGKILLed the kernel detaches ptrace itself and the target runs on; the one
// thing that must never happen before the commit is a queued SIGSTOP (thawStopped), and only
// afterAction() below sends it.

import { freeze, NativeError, type CowSnapshot, type Frozen, type PreparedFreeze, type RestorableFrozen } from '../../native';
import type { ProcessState } from '../../image/process-state';
import { captureProcessState, type CaptureOptions } from '../capture/capture-process-state';
import type { ThreadState } from '../../proto/messages';
import { logger } from '../../common/log';

const log = logger('freeze');

const live = new Set<Frozen>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => thawAll('sender exiting'));
}

/** Freeze every thread of pid (tracked: thawAll() will undo it). */
export function freezeTracked(pid: number, captureRegisters: boolean): Frozen {
  installExitHook();
  const f = freeze(pid, captureRegisters);
  live.add(f);
  return f;
}

/** The same, through the capture helper started ahead (prepareFreezeForRestore), for a
 *  restorable image or a snapshot: they inject into the frozen threads, so the freeze must be
 *  held by a process that finishes every injection even if we are killed (docs/design.md, Restore). */
function freezeTrackedForRestore(prepared: PreparedFreeze): RestorableFrozen {
  installExitHook();
  prepared.freeze();
  live.add(prepared);
  return prepared;
}

/** Thaw one freeze; a target that died meanwhile is not an error (nothing left to thaw). */
export function thawTracked(f: Frozen, how: 'thaw' | 'stop' = 'thaw'): void {
  if (!live.delete(f)) return;
  if (how === 'stop') f.thawStopped();
  else f.thaw();
}

/** Thaw everything still frozen; never throws (called from failure paths and exit). */
export function thawAll(why: string): number {
  let n = 0;
  for (const f of [...live]) {
    live.delete(f);
    try {
      f.thaw();
      n++;
    } catch (err) {
      log.debug(`thaw of ${f.pid} (${why}) failed: ${(err as Error).message}`);
    }
  }
  if (n > 0) log.info(`thawed the target (${why})`);
  return n;
}

/** The stop-and-copy freeze: times freeze → commit ack (downtime) and freeze → thaw (frozen). */
export class FreezeSession {
  readonly frozenAt: number;
  private readonly frozen: Frozen;
  private readonly restorable: RestorableFrozen | null;
  private thawedAt = 0;

  /** helper: freeze through this capture helper, so that captureState() and the snapshot calls
   *  can be used. */
  constructor(
    readonly pid: number,
    helper: PreparedFreeze | null = null,
  ) {
    this.frozenAt = performance.now();
    this.restorable = helper ? freezeTrackedForRestore(helper) : null;
    this.frozen = this.restorable ?? freezeTracked(pid, true);
  }

  /** Have the helper take a copy-on-write snapshot of the frozen memory (native/cow_snapshot.h)
   *  while this thread goes on (the commit): awaitSnapshot() collects it. */
  requestSnapshot(): void {
    this.restorable!.requestSnapshot();
  }

  /** The snapshot asked for, or null (logged) when this target rules one out: it stays frozen
   *  and the verify pass runs frozen, as without a snapshot. */
  awaitSnapshot(): CowSnapshot | null {
    try {
      return this.restorable!.awaitSnapshot();
    } catch (err) {
      if (!(err instanceof NativeError)) throw err;
      log.info(`the verify pass stays in the freeze: ${err.message}`);
      return null;
    }
  }

  /** Kill the snapshot, if any (it outlives the thaw until then). Never throws. */
  dropSnapshot(): void {
    this.restorable?.dropSnapshot();
  }

  /** Everything a restore needs beyond memory, as it is now (frozen). */
  captureState(opts: CaptureOptions): ProcessState {
    if (!this.restorable) throw new Error('captureState() needs a restorable freeze');
    return captureProcessState(this.restorable, this.pid, opts);
  }

  threads(): ThreadState[] {
    return this.frozen.threads();
  }

  /** Seconds since the freeze (or until the thaw, once thawed). */
  frozenSeconds(): number {
    return ((this.thawedAt || performance.now()) - this.frozenAt) / 1000;
  }

  /** --after: resume (thaw), stop (SIGSTOP queued, then detach), kill (SIGKILL, then detach).
   *  Only ever called after the receiver acknowledged the commit. */
  afterAction(after: 'resume' | 'stop' | 'kill'): void {
    if (this.thawedAt) return;
    if (after === 'kill') {
      // SIGKILL reaches a ptrace-stopped process; the detach that follows may find it gone.
      process.kill(this.pid, 'SIGKILL');
      try {
        thawTracked(this.frozen);
      } catch {
        /* the process is dying: nothing to detach from */
      }
    } else {
      thawTracked(this.frozen, after === 'stop' ? 'stop' : 'thaw');
    }
    this.thawedAt = performance.now();
  }

  /** A handover: the source stays stopped (SIGSTOP queued, then detached) until the receiver's
   *  decision is known, even if the sender dies meanwhile (docs/design.md, Handover). */
  stopDurably(): void {
    thawTracked(this.frozen, 'stop');
    this.thawedAt = performance.now();
  }

  /** Failure path: plain thaw, never throws. */
  release(): void {
    if (this.thawedAt) return;
    try {
      thawTracked(this.frozen);
    } catch (err) {
      log.debug(`thaw after failure: ${(err as Error).message}`);
    }
    this.thawedAt = performance.now();
  }
}
