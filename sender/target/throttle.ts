// Auto-converge throttle (as QEMU's cpu-throttle, for a process): keep the target frozen for
// `percent` of every 100 ms period, so that it dirties memory more slowly than the link sends it.
// The freezes go through freeze-session.ts, so a failure or exit anywhere thaws the target; stop()
// thaws at once.
//
// Timing. Freezing is synchronous ptrace work on the JS main thread (ptrace ties a tracee to the
// thread that attached it), so the slices are timed by the event loop, which the sender keeps busy
// staging batches: a timer may fire tens of milliseconds late. A late *thaw* only freezes the
// target longer (towards converging); a late *re-freeze* would let it run far longer than its
// slice. So short run slices (<= SYNC_RUN_MAX_MS, i.e. throttles >= 90%) are done in one
// synchronous step: thaw, sleep the slice on this thread, freeze again. Longer slices use timers.

import { logger } from '../../common/log';
import type { Frozen } from '../../native';
import { freezeTracked, thawTracked } from './freeze-session';

const log = logger('throttle');

export const THROTTLE_PERIOD_MS = 100;
const SYNC_RUN_MAX_MS = 10;
const sleeper = new Int32Array(new SharedArrayBuffer(4));

export class Throttle {
  private percent = 0;
  private frozen: Frozen | null = null;
  private timer: NodeJS.Timeout | null = null;
  private frozenMs = 0;
  private frozeAt = 0;
  /** Set when a freeze failed (the target exited?): the throttle stopped itself. */
  failure: Error | null = null;

  constructor(private readonly pid: number) {}

  get currentPercent(): number {
    return this.percent;
  }

  /** Total time the throttle kept the target frozen, seconds. */
  get frozenSeconds(): number {
    return (this.frozenMs + (this.frozen ? performance.now() - this.frozeAt : 0)) / 1000;
  }

  /** Set the share of each period the target is frozen (0 stops throttling). */
  set(percent: number): void {
    const p = Math.max(0, Math.min(99, Math.round(percent)));
    if (p === this.percent) return;
    if (p === 0) return this.stop();
    log.info(`throttling the target: frozen ${p}% of every ${THROTTLE_PERIOD_MS} ms`);
    const starting = this.percent === 0;
    this.percent = p;
    if (starting && this.freeze()) this.schedule();
  }

  /** Stop throttling and thaw now. Never throws. */
  stop(): void {
    this.percent = 0;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.thaw();
  }

  private get runMs(): number {
    return (THROTTLE_PERIOD_MS * (100 - this.percent)) / 100;
  }

  /** Frozen now: come back after the frozen part of the period. */
  private schedule(): void {
    this.timer = setTimeout(() => this.release(), THROTTLE_PERIOD_MS - this.runMs);
  }

  /** End of the frozen part: let the target run its slice, then freeze it again. */
  private release(): void {
    this.timer = null;
    if (this.percent === 0) return;
    const run = this.runMs;
    this.thaw();
    if (run <= SYNC_RUN_MAX_MS) {
      Atomics.wait(sleeper, 0, 0, run);
      if (this.freeze()) this.schedule();
    } else {
      this.timer = setTimeout(() => {
        this.timer = null;
        if (this.percent > 0 && this.freeze()) this.schedule();
      }, run);
    }
  }

  private freeze(): boolean {
    try {
      this.frozen = freezeTracked(this.pid, false);
      this.frozeAt = performance.now();
      return true;
    } catch (err) {
      this.failure = err as Error;
      log.warn(`cannot throttle the target any more: ${(err as Error).message}`);
      this.percent = 0;
      return false;
    }
  }

  private thaw(): void {
    const f = this.frozen;
    if (!f) return;
    this.frozen = null;
    this.frozenMs += performance.now() - this.frozeAt;
    try {
      thawTracked(f);
    } catch (err) {
      log.debug(`thaw failed (target gone?): ${(err as Error).message}`);
    }
  }
}
