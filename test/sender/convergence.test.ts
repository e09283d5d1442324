// Unit tests of the pure convergence rules (sender/convergence.ts): when pre-copy stops, why, and
// the auto-converge throttle schedule. Figures are made up; no clock, no process.

import test from 'ava';
import { bandwidth, decide, expectedDowntime, nextThrottle, noProgress, type ConvergenceOptions, type RoundMeasure } from '../../sender/convergence';

const PAGE = 4096;
const MiB = 1 << 20;

/** A history from per-round dirty MiB, each round moving `bwMiB` MiB/s, throttles optional. */
function rounds(dirtyMiB: number[], bwMiB = 100, throttles: number[] = []): RoundMeasure[] {
  return dirtyMiB.map((d, i) => {
    const duration = Math.max(d / bwMiB, 0.001);
    return {
      round: i,
      dirtyPages: (d * MiB) / PAGE,
      pageSize: PAGE,
      durationSeconds: duration,
      intervalSeconds: duration,
      throttlePercent: throttles[i] ?? 0,
    };
  });
}

const opts: ConvergenceOptions = { downtimeSeconds: 0.3, maxRounds: 30, autoConverge: false };

test('bandwidth is page bytes per second over the last three rounds, bytes-weighted', (t) => {
  const h = rounds([1000, 200, 50, 10], 100);
  t.is(Math.round(bandwidth(h) / MiB), 100);
  const mixed: RoundMeasure[] = [
    { round: 0, dirtyPages: (400 * MiB) / PAGE, pageSize: PAGE, durationSeconds: 1, intervalSeconds: 1, throttlePercent: 0 },
    { round: 1, dirtyPages: (100 * MiB) / PAGE, pageSize: PAGE, durationSeconds: 1, intervalSeconds: 1, throttlePercent: 0 },
  ];
  t.is(bandwidth(mixed), (500 * MiB) / 2);
  t.is(bandwidth([]), 0);
});

test('expected downtime is the last round dirty bytes over the bandwidth', (t) => {
  const h = rounds([1000, 60], 200);
  t.true(Math.abs(expectedDowntime(h) - 60 / 200) < 1e-9);
  t.is(expectedDowntime(rounds([1000, 0])), 0);
});

test('round 0 alone does not stop unless the whole copy fits the target', (t) => {
  const d = decide(rounds([1024], 500), opts);
  t.false(d.stop);
  t.true(d.expectedDowntimeSeconds > 2);
  const generous = decide(rounds([1024], 500), { ...opts, downtimeSeconds: 5 });
  t.true(generous.stop);
  t.is(generous.reason, 'downtime');
});

test('a static target stops after round 1 on the downtime rule', (t) => {
  const d = decide(rounds([256, 0]), opts);
  t.true(d.stop);
  t.is(d.reason, 'downtime');
  t.is(d.expectedDowntimeSeconds, 0);
  t.regex(d.why, /under the target 300 ms/);
});

test('a slow writer converges in few rounds', (t) => {
  // 1 GiB at 500 MiB/s, dirtying 20 MiB/s: round 1 finds ~41 MiB, ~82 ms at that bandwidth.
  const h = rounds([1024, 41], 500);
  const d = decide(h, opts);
  t.true(d.stop);
  t.is(d.reason, 'downtime');
  t.true(d.expectedDowntimeSeconds < 0.3);
});

test('a writer faster than the link stops on the no-progress rule after round 3', (t) => {
  const h = rounds([64, 60, 63, 64], 10);
  t.false(decide(h.slice(0, 3), opts).stop, 'needs two rounds after round 1 to judge progress');
  const d = decide(h, opts);
  t.true(d.stop);
  t.is(d.reason, 'no-progress');
  t.true(noProgress(h));
});

test('a shrinking dirty set is progress, even when still over the target', (t) => {
  const h = rounds([512, 300, 200, 120], 100);
  t.false(noProgress(h));
  t.false(decide(h, opts).stop);
});

test('a dirty set growing by more than 10% is no progress', (t) => {
  t.true(noProgress(rounds([512, 100, 105, 112])));
  t.false(noProgress(rounds([512, 100, 120, 80])));
});

test('max-rounds stops whatever the figures', (t) => {
  const h = rounds([512, 300, 200], 100);
  const d = decide(h, { ...opts, maxRounds: 3 });
  t.true(d.stop);
  t.is(d.reason, 'max-rounds');
  t.true(decide(rounds([512]), { ...opts, maxRounds: 1 }).stop);
});

test('auto-converge starts at 20% after two outpacing rounds and adds 10% a round', (t) => {
  const ac = { autoConverge: true };
  t.is(nextThrottle(rounds([64, 60]), ac), 0, 'one outpacing round is not enough');
  t.is(nextThrottle(rounds([64, 60, 62]), ac), 20);
  t.is(nextThrottle(rounds([64, 60, 62, 60], 10, [0, 0, 0, 20]), ac), 30);
  t.is(nextThrottle(rounds([64, 60, 62, 60], 10, [0, 0, 0, 90]), ac), 99);
  t.is(nextThrottle(rounds([64, 60, 62, 60], 10, [0, 0, 0, 99]), ac), 99, 'at most 99%');
  t.is(nextThrottle(rounds([64, 60, 62]), { autoConverge: false }), 0, 'off without --auto-converge');
});

test('auto-converge keeps the throttle when the target stops outpacing', (t) => {
  // round 4 dirtied 10 MiB while round 3 sent 60: no longer outpacing, no further step, no drop
  t.is(nextThrottle(rounds([64, 60, 62, 60, 10], 10, [0, 0, 0, 20, 30]), { autoConverge: true }), 30);
  // a slow writer never triggers it
  t.is(nextThrottle(rounds([1024, 40, 2]), { autoConverge: true }), 0);
});

test('with auto-converge the no-progress rule waits for the maximum throttle', (t) => {
  const acOpts = { ...opts, autoConverge: true };
  const flat = [64, 60, 63, 64];
  const d = decide(rounds(flat, 10), acOpts);
  t.false(d.stop, 'throttle not spent yet: keep going');
  t.is(d.nextThrottlePercent, 20);
  t.regex(d.why, /throttling the target 20%/);
  const spent = decide(rounds(flat, 10, [0, 0, 0, 99]), acOpts);
  t.true(spent.stop);
  t.is(spent.reason, 'no-progress');
});

test('the dirty rate is measured over the interval the pages were written in', (t) => {
  const h: RoundMeasure[] = [
    { round: 0, dirtyPages: 1000, pageSize: PAGE, durationSeconds: 2, intervalSeconds: 2, throttlePercent: 0 },
    { round: 1, dirtyPages: 500, pageSize: PAGE, durationSeconds: 0.1, intervalSeconds: 2, throttlePercent: 0 },
  ];
  t.is(decide(h, opts).dirtyRateBytesPerSecond, (500 * PAGE) / 2);
});

test('decide refuses an empty history', (t) => {
  t.throws(() => decide([], opts), { instanceOf: RangeError });
});

test('--on-no-convergence abort: a stop for no progress or max-rounds gives up; a stop for the downtime does not', (t) => {
  const abort = { ...opts, abortIfUnmet: true };
  const stuck = decide(rounds([64, 60, 63, 64], 10), abort);
  t.true(stuck.stop && stuck.abort === true);
  t.is(stuck.reason, 'no-progress');
  const capped = decide(rounds([512, 300, 200], 100), { ...abort, maxRounds: 3 });
  t.true(capped.stop && capped.abort === true);
  t.is(capped.reason, 'max-rounds');
  const met = decide(rounds([512, 1]), abort);
  t.true(met.stop);
  t.is(met.reason, 'downtime');
  t.falsy(met.abort);
  t.falsy(decide(rounds([64, 60, 63, 64], 10), opts).abort, 'freeze: never gives up');
});
