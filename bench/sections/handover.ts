// Section 7: handover. A target (test/workloads/bin/target, PRNG pages) of 256 MiB and of 1 GiB,
// its writer dirtying 0 or 20 MB/s, is handed over with `sender migrate --handover --downtime-ms
// 25` to a receiver on a destination "host" (its own network and PID namespaces,
// test/helpers/dest-host.ts: the source keeps its pid until killed), with and without --verify.
//   downtime   from the freeze to the process running at the destination (the receiver's answer),
//              from the sender's summary, split: freeze to commit (final round, capture, commit),
//              verify, restore (what the receiver had left to do: the process was built while
//              the rounds arrived), the rest (the ask's round trip and the receiver's records);
//   rollback   the same handover with the restore failing at its last step
//              (PRECOPY_FAULT_RESTORE_FAIL_AT=detach): from the freeze until the continued source
//              runs again (the sender's debug log).
// The goal (docs/design.md, Handover): 1 GiB at 20 MB/s within 100 ms without verify, and no
// more than 20% above 256 MiB: the downtime must not grow with memory.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { DestHost } from '../../test/helpers/dest-host';
import { Target } from '../../test/helpers/target';
import { onCleanup } from '../lib/cleanup';
import type { BenchContext } from '../lib/context';
import { stat, type Stat } from '../lib/stats';

export const HANDOVER_SIZES_MIB = [256, 1024];
export const HANDOVER_RATES_MBPS = [0, 20];
const DOWNTIME_TARGET_MS = 25;

export interface HandoverCell {
  mib: number;
  rateMBps: number;
  verify: boolean;
  downtimeMs: Stat;
  freezeToCommitMs: Stat;
  verifyMs: Stat;
  restoreMs: Stat;
  restMs: Stat;
  rounds: Stat;
  /** Runs whose process the receiver built while the rounds arrived (all, unless it fell back). */
  prebuiltRuns: number;
}

export interface RollbackCell {
  mib: number;
  /** Freeze to the source running again, ms. */
  rollbackMs: Stat;
}

export interface HandoverBenchResult {
  cells: HandoverCell[];
  rollback: RollbackCell[];
}

interface Run {
  downtime: number;
  freezeToCommit: number;
  verify: number;
  restore: number;
  rounds: number;
  prebuilt: boolean;
}

let sessions = 0;

export async function runHandover(ctx: BenchContext): Promise<HandoverBenchResult> {
  ctx.progress(`handover: ${HANDOVER_SIZES_MIB.join(', ')} MiB targets, dirty rates ${HANDOVER_RATES_MBPS.join(', ')} MB/s, with and without verify; rollback`);
  const dest = await DestHost.create('10.96.0.0', ['--accept-handover']);
  const failing = await DestHost.create('10.96.1.0', ['--accept-handover'], { PRECOPY_FAULT_RESTORE_FAIL_AT: 'detach' });
  const destroy = onCleanup(() => {
    void dest.destroy();
    void failing.destroy();
  });
  const cells = new Map<string, { mib: number; rate: number; verify: boolean; runs: Run[] }>();
  const rollbacks = new Map<number, number[]>();
  try {
    for (let run = 0; run < ctx.runs; run++) {
      for (const mib of HANDOVER_SIZES_MIB) {
        for (const verify of [false, true]) {
          for (const rate of HANDOVER_RATES_MBPS) {
            const key = `${mib}/${rate}/${verify}`;
            if (!cells.has(key)) cells.set(key, { mib, rate, verify, runs: [] });
            const r = await handOverOnce(dest, mib, rate, verify);
            cells.get(key)!.runs.push(r);
            ctx.progress(
              `  run ${run + 1}: ${mib} MiB, ${rate} MB/s, ${verify ? 'verify' : 'no verify'}: downtime ${r.downtime.toFixed(1)} ms ` +
                `(freeze to commit ${r.freezeToCommit.toFixed(1)}, verify ${r.verify.toFixed(1)}, restore ${r.restore.toFixed(1)}${r.prebuilt ? '' : ', restored in full'})`,
            );
          }
        }
        const ms = await rollbackOnce(failing, mib);
        rollbacks.set(mib, [...(rollbacks.get(mib) ?? []), ms]);
        ctx.progress(`  run ${run + 1}: ${mib} MiB, restore failing at its last step: the source runs again ${ms.toFixed(1)} ms after the freeze`);
      }
    }
  } finally {
    await dest.destroy();
    await failing.destroy();
    destroy();
  }
  return {
    cells: [...cells.values()].map(({ mib, rate, verify, runs }) => {
      const s = (f: (r: Run) => number): Stat => stat(runs.map(f));
      return {
        mib,
        rateMBps: rate,
        verify,
        downtimeMs: s((r) => r.downtime),
        freezeToCommitMs: s((r) => r.freezeToCommit),
        verifyMs: s((r) => r.verify),
        restoreMs: s((r) => r.restore),
        restMs: s((r) => r.downtime - r.freezeToCommit - r.verify - r.restore),
        rounds: s((r) => r.rounds),
        prebuiltRuns: runs.filter((r) => r.prebuilt).length,
      };
    }),
    rollback: [...rollbacks].map(([mib, ms]) => ({ mib, rollbackMs: stat(ms) })),
  };
}

/** A fresh target handed over to dest; the process it became there is killed, its image removed. */
async function handOverOnce(dest: DestHost, mib: number, rate: number, verify: boolean): Promise<Run> {
  const { target, session, done } = await startOne(dest, mib, rate, ['--downtime-ms', String(DOWNTIME_TARGET_MS), verify ? '--verify' : '--no-verify']);
  try {
    const run = await done;
    if (run.code !== 0 || !run.summary?.handover) throw new Error(`handover of ${mib} MiB failed:\n${run.stderr.split('\n').slice(-10).join('\n')}`);
    const h = run.summary.handover;
    return {
      downtime: h.totalDowntimeSeconds * 1e3,
      freezeToCommit: h.freezeToCommitSeconds * 1e3,
      verify: h.verifySeconds * 1e3,
      restore: h.restoreSeconds * 1e3,
      rounds: run.summary.precopyRounds,
      prebuilt: h.prebuilt,
    };
  } finally {
    const there = dest.rootPid(target.pid);
    if (there) process.kill(there, 'SIGKILL');
    await target.kill().catch(() => undefined);
    fs.rmSync(path.join(dest.images, session), { recursive: true, force: true });
  }
}

/** A handover whose restore fails at its last step: ms from the freeze until the source runs again. */
async function rollbackOnce(dest: DestHost, mib: number): Promise<number> {
  const { target, session, done } = await startOne(dest, mib, 20, ['--downtime-ms', String(DOWNTIME_TARGET_MS), '--no-verify'], { PRECOPY_LOG: 'debug' });
  try {
    const run = await done;
    const m = /handover: rolled back: the source runs again ([\d.]+) ms after the freeze/.exec(run.stderr);
    if (run.code === 0 || !m) throw new Error(`the failing handover of ${mib} MiB did not roll back:\n${run.stderr.split('\n').slice(-10).join('\n')}`);
    return Number(m[1]);
  } finally {
    await target.kill().catch(() => undefined);
    fs.rmSync(path.join(dest.images, session), { recursive: true, force: true });
  }
}

async function startOne(dest: DestHost, mib: number, rate: number, flags: string[], env: NodeJS.ProcessEnv = {}) {
  const target = await Target.start({ mib, seed: 11 });
  if (rate > 0) await target.writers(1, rate * 1e6);
  const session = `bench-hv-${process.pid}-${++sessions}`;
  return { target, session, done: dest.startHandover(target.pid, session, env, flags).done };
}
