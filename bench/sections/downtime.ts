// Section 3: downtime and convergence of a 1 GiB target (test/workloads/bin/target, pages of
// PRNG data) while writer threads rewrite random pages at 0, 20, 100 and 400 MB/s, with and
// without --verify, sender flag --downtime-ms 25 (the goal); and a 4 GiB target at 0 and 20 MB/s,
// to show what of the frozen time grows with memory (the verify runs off the freeze, from a
// snapshot: docs/design.md, Verify off the freeze). Runs interleave rates and modes.
// The achieved dirty rate is measured (pages the writers wrote / time they ran): on a busy
// machine the writers may fall short of the rate asked.

import type { StopReason } from '../../sender/convergence';
import { Target } from '../../test/helpers/target';
import { onCleanup } from '../lib/cleanup';
import type { BenchContext } from '../lib/context';
import { BenchReceiver, migrateOnce, type MigrationRun } from '../lib/migration';
import { scaled, stat, type Stat } from '../lib/stats';

export const DIRTY_RATES_MBPS = [0, 20, 100, 400];
export const DOWNTIME_TARGET_MS = 25;
/** Target sizes, each with the dirty rates it is measured at. */
const TARGETS: { mib: number; rates: (rates: number[]) => number[] }[] = [
  { mib: 1024, rates: (r) => r },
  { mib: 4096, rates: (r) => r.filter((x) => x <= 20) },
];

export interface DowntimeResult {
  /** Target size. */
  mib: number;
  rateMBps: number;
  verify: boolean;
  /** Dirty rate the writers achieved, MB/s. */
  achievedMBps: Stat;
  /** Pre-copy rounds (round 0 included) before the freeze. */
  rounds: Stat;
  downtimeMs: Stat;
  frozenMs: Stat;
  totalSeconds: Stat;
  /** Wire bytes of all rounds / bytes of the committed image. */
  sentOverMemory: Stat;
  stopReasons: Partial<Record<StopReason, number>>;
  /** Pages the verify pass found different (a lost write) summed over runs. */
  verifyMismatches: number;
  /** The stop-and-copy steps (sender debug log), ms. */
  steps: Record<string, Stat>;
  /** The individual runs' summaries, for the chart and results.json. */
  runs: MigrationRun['summary'][];
}

export async function runDowntime(ctx: BenchContext, rates = DIRTY_RATES_MBPS): Promise<DowntimeResult[]> {
  ctx.progress(`downtime: ${TARGETS.map((t) => `${t.mib} MiB at ${t.rates(rates).join(', ')} MB/s`).join('; ')}, downtime target ${DOWNTIME_TARGET_MS} ms`);
  const receiver = await BenchReceiver.start();
  const cells = new Map<string, { mib: number; rate: number; verify: boolean; runs: MigrationRun[]; achieved: number[] }>();
  try {
    for (const size of TARGETS) {
      const target = await Target.start({ mib: size.mib, seed: 7 });
      const killTarget = onCleanup(() => void target.kill());
      try {
        for (let run = 0; run < ctx.runs; run++) {
          for (const verify of [false, true]) {
            for (const rate of size.rates(rates)) {
              const key = `${size.mib}/${rate}/${verify}`;
              if (!cells.has(key)) cells.set(key, { mib: size.mib, rate, verify, runs: [], achieved: [] });
              const cell = cells.get(key)!;
              const started = performance.now();
              // 400 MB/s is ~100k pages/s of PRNG data: two threads keep the pace on a busy machine.
              if (rate > 0) await target.writers(rate >= 200 ? 2 : 1, rate * 1e6);
              let m: MigrationRun;
              try {
                m = await migrateOnce({
                  pid: target.pid,
                  to: receiver,
                  flags: ['--downtime-ms', String(DOWNTIME_TARGET_MS), verify ? '--verify' : '--no-verify'],
                });
              } finally {
                if (rate > 0) {
                  const written = await target.stopWriters();
                  cell.achieved.push((written * target.pageSize) / ((performance.now() - started) / 1000) / 1e6);
                } else {
                  cell.achieved.push(0);
                }
              }
              cell.runs.push(m);
              const s = m.summary;
              ctx.progress(
                `  run ${run + 1}: ${size.mib} MiB, ${rate} MB/s ${verify ? 'verify' : 'no verify'}: ${s.precopyRounds} rounds, downtime ${(s.downtimeSeconds * 1e3).toFixed(1)} ms, ` +
                  `frozen ${(s.frozenSeconds * 1e3).toFixed(1)} ms, ${s.stopReason}`,
              );
            }
          }
        }
      } finally {
        killTarget();
      }
    }
  } finally {
    await receiver.stop();
  }
  return [...cells.values()].map(({ mib, rate, verify, runs, achieved }) => {
    const sums = runs.map((r) => r.summary);
    const stopReasons: Partial<Record<StopReason, number>> = {};
    for (const s of sums) stopReasons[s.stopReason] = (stopReasons[s.stopReason] ?? 0) + 1;
    const labels = [...new Set(runs.flatMap((r) => Object.keys(r.downtimeSteps)))];
    return {
      mib,
      rateMBps: rate,
      verify,
      achievedMBps: stat(achieved),
      rounds: stat(sums.map((s) => s.precopyRounds)),
      downtimeMs: scaled(stat(sums.map((s) => s.downtimeSeconds)), 1e3),
      frozenMs: scaled(stat(sums.map((s) => s.frozenSeconds)), 1e3),
      totalSeconds: stat(sums.map((s) => s.totalSeconds)),
      sentOverMemory: stat(sums.map((s) => s.bytesSent / s.memoryBytes)),
      stopReasons,
      verifyMismatches: sums.reduce((a, s) => a + s.verify.mismatches, 0),
      steps: Object.fromEntries(labels.map((l) => [l, stat(runs.map((r) => r.downtimeSteps[l] ?? 0))])),
      runs: sums,
    };
  });
}
