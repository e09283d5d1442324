// Convergence: after each pre-copy round, decide from measured figures whether to keep iterating
// or to freeze the target and copy the rest (stop-and-copy), and how hard to throttle the target
// (auto-converge). Pure functions of the round history: no clock, no I/O, unit-tested alone.
//
// Units. Every figure here is in *page bytes* (pages found dirty x page size, zero pages
// included), never wire bytes. The bandwidth is the page bytes a round moved per second of that
// round (scan, read, hash, zero detection, lz4, network, the receiver's fsync: the whole path),
// so "dirty page bytes / bandwidth" estimates how long the stop-and-copy round will take with
// the same pipeline. QEMU divides by transferred (wire) bytes per second instead; with lz4 and
// zero pages that overestimates the downtime by the compression ratio, so we measure what the
// stop-and-copy round actually pays: seconds per page byte, compression included.

/** Figures of one finished pre-copy round, as measured by the sender. */
export interface RoundMeasure {
  round: number;
  /** Pages found dirty (round 0: populated) this round, zero pages included. */
  dirtyPages: number;
  pageSize: number;
  /** Round start (first scan) to the receiver's durable ack. */
  durationSeconds: number;
  /** Time between this round's start and the previous round's start: the window during which
   *  this round's dirty pages were written. Round 0: its own duration. */
  intervalSeconds: number;
  /** Auto-converge share of time the target was frozen during this round (0-99). */
  throttlePercent: number;
}

/** What to do when the downtime target cannot be met (--on-no-convergence; docs/design.md,
 *  Convergence): throttle the target until it can (then freeze), give up with the target
 *  running, or freeze anyway for as long as copying what is left takes. */
export const ON_NO_CONVERGENCE = ['throttle', 'abort', 'freeze'] as const;
export type OnNoConvergence = (typeof ON_NO_CONVERGENCE)[number];

export interface ConvergenceOptions {
  /** --downtime-ms / 1000. */
  downtimeSeconds: number;
  /** --max-rounds: pre-copy rounds (round 0 included) before stop-and-copy at the latest. */
  maxRounds: number;
  /** Throttle a target that outpaces the link (--on-no-convergence throttle, the default). */
  autoConverge: boolean;
  /** Give up instead of freezing when a stop is not for the downtime (--on-no-convergence abort). */
  abortIfUnmet?: boolean;
}

export type StopReason = 'downtime' | 'no-progress' | 'max-rounds';

export interface Decision {
  stop: boolean;
  reason?: StopReason;
  /** Human explanation of the decision (logged, and kept in the summary for the stop). */
  why: string;
  /** Dirty page bytes of the last round / bandwidth. */
  expectedDowntimeSeconds: number;
  bandwidthBytesPerSecond: number;
  dirtyRateBytesPerSecond: number;
  /** Throttle to apply during the next round (auto-converge), 0 when off. */
  nextThrottlePercent: number;
  /** With stop: give the migration up instead of freezing (the target cannot meet the target). */
  abort?: boolean;
}

// Bandwidth is averaged over this many recent rounds (bytes-weighted): one round is noisy, and
// a tiny round is dominated by fixed costs (fsync, round trip) that the next round pays too.
export const BANDWIDTH_WINDOW = 3;
// No-progress: a round that is not at least this much smaller than the smaller of the two rounds
// before it (P.Haul stops when a round grows > 10%; a set that neither grows nor shrinks for two
// rounds will not converge either).
export const NO_PROGRESS_SHRINK = 0.9;
// Auto-converge, as QEMU: the target "outpaces" the link when the bytes it dirtied during a
// period exceed this share of the bytes sent in the same period (throttle-trigger-threshold 50).
export const OUTPACE_SHARE = 0.5;
export const THROTTLE_INITIAL = 20;
export const THROTTLE_STEP = 10;
export const THROTTLE_MAX = 99;

const bytesOf = (m: RoundMeasure) => m.dirtyPages * m.pageSize;

/** Page bytes moved per second over the last BANDWIDTH_WINDOW rounds (0 when unmeasurable). */
export function bandwidth(history: readonly RoundMeasure[]): number {
  const recent = history.slice(-BANDWIDTH_WINDOW);
  let bytes = 0;
  let seconds = 0;
  for (const m of recent) {
    bytes += bytesOf(m);
    seconds += m.durationSeconds;
  }
  return bytes > 0 && seconds > 0 ? bytes / seconds : 0;
}

/** Page bytes dirtied per second during the window in which round r's pages were written. */
export function dirtyRate(m: RoundMeasure): number {
  return m.intervalSeconds > 0 ? bytesOf(m) / m.intervalSeconds : 0;
}

export function expectedDowntime(history: readonly RoundMeasure[]): number {
  const last = history[history.length - 1];
  if (!last || last.dirtyPages === 0) return 0;
  const bw = bandwidth(history);
  return bw > 0 ? bytesOf(last) / bw : Infinity;
}

/** Round r's dirtying outpaced sending: what was dirtied while round r-1 was being sent is more
 *  than OUTPACE_SHARE of what round r-1 sent. Needs r >= 1. */
export function outpaced(history: readonly RoundMeasure[], i: number): boolean {
  if (i < 1 || i >= history.length) return false;
  return bytesOf(history[i]) > OUTPACE_SHARE * bytesOf(history[i - 1]);
}

/** Auto-converge schedule: start at 20% when dirtying outpaced sending two rounds in a row, then
 *  +10% for each further round that still outpaces, at most 99%. Never lowered during a migration
 *  (as QEMU: the throttle only goes away when the migration ends). */
export function nextThrottle(history: readonly RoundMeasure[], opts: Pick<ConvergenceOptions, 'autoConverge'>): number {
  const last = history[history.length - 1];
  if (!opts.autoConverge || !last) return 0;
  const i = history.length - 1;
  const current = last.throttlePercent;
  if (current === 0) return outpaced(history, i) && outpaced(history, i - 1) ? THROTTLE_INITIAL : 0;
  return outpaced(history, i) ? Math.min(THROTTLE_MAX, current + THROTTLE_STEP) : current;
}

/** The dirty set did not shrink over the last two rounds (rounds >= 1; round 0 copies all). */
export function noProgress(history: readonly RoundMeasure[]): boolean {
  const n = history.length;
  if (n < 4) return false;
  const [a, b, c] = [history[n - 3], history[n - 2], history[n - 1]].map(bytesOf);
  return c > 0 && c >= NO_PROGRESS_SHRINK * Math.min(a, b);
}

const ms = (s: number) => (Number.isFinite(s) ? `${Math.round(s * 1000)} ms` : 'unbounded');

/** Decide after the last round of `history`. */
export function decide(history: readonly RoundMeasure[], opts: ConvergenceOptions): Decision {
  if (history.length === 0) throw new RangeError('decide needs at least one round');
  const last = history[history.length - 1];
  const expected = expectedDowntime(history);
  const throttle = nextThrottle(history, opts);
  const base = {
    expectedDowntimeSeconds: expected,
    bandwidthBytesPerSecond: bandwidth(history),
    dirtyRateBytesPerSecond: dirtyRate(last),
    nextThrottlePercent: throttle,
  };
  const target = ms(opts.downtimeSeconds);
  if (expected < opts.downtimeSeconds) {
    return { ...base, stop: true, reason: 'downtime', why: `expected downtime ${ms(expected)} is under the target ${target}` };
  }
  // With auto-converge the throttle is the answer to a dirty set that does not shrink: give it
  // every step up to the maximum before declaring there is no progress.
  const throttleSpent = !opts.autoConverge || last.throttlePercent >= THROTTLE_MAX;
  const giveUp = opts.abortIfUnmet ? { abort: true } : {};
  if (throttleSpent && noProgress(history)) {
    const why = `dirty set did not shrink over the last two rounds (expected downtime ${ms(expected)}, target ${target})`;
    return { ...base, ...giveUp, stop: true, reason: 'no-progress', why };
  }
  if (history.length >= opts.maxRounds) {
    return {
      ...base,
      ...giveUp,
      stop: true,
      reason: 'max-rounds',
      why: `reached --max-rounds ${opts.maxRounds} (expected downtime ${ms(expected)}, target ${target})`,
    };
  }
  const why = `expected downtime ${ms(expected)} is over the target ${target}` + (throttle > 0 ? `; throttling the target ${throttle}%` : '');
  return { ...base, stop: false, why };
}
