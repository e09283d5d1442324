// The demo's second part: a handover (README "Moving a process"). A self-checking workload
// (bin/restore_target) is moved to a destination "host" on this machine, its own network and PID
// namespaces (test/helpers/dest-host.ts), so the moved process can keep its pid while the source
// still holds that number here. Shown: the source pid, the same pid running at the destination,
// the source gone, the downtime split the sender reports, and the workload's own self-check read
// at the destination (through the destination process's root, /proc/PID/root).

import * as fs from 'node:fs';
import * as path from 'node:path';
import { DestHost } from '../helpers/dest-host';
import type { ProcessRun } from '../helpers/migration-cli';
import { readStatus, selfCheckFailures, startWorkload, waitStatus, type Status } from '../receiver/restore/helpers/workload';
import { handoverDowntimeText } from '../../sender/report/summary';
import { formatBytes } from '../../common/units';
import type { Cleanup } from './cleanup';
import { DemoFailure, print, say } from './output';

// Small: the restore copies the whole image into the new process after the commit, so the
// downtime grows with memory (docs/design.md, Handover).
const WORKLOAD_MIB = 32;
// Any /30 of 10/8: the addresses live only inside the two namespaces the demo makes.
const SUBNET = '10.94.0.0';
/** How long the self-check is watched at the destination: restore_target writes its status every ~20 ms. */
const CHECK_ROUNDS = 25;

const iter = (s: Status): number => Number(s.iter);

export async function handoverPhase(cleanup: Cleanup): Promise<void> {
  const dest = await DestHost.create(SUBNET, ['--accept-handover']);
  cleanup.add(() => dest.destroy());
  say(`destination host: network namespace ${dest.pair.ns.b} and a PID namespace of its own`);
  print(`receiver serve --listen ${dest.address} --accept-handover --token-file ${path.basename(dest.tokenFile)}`);

  const w = await startWorkload(['--workers', '2', '--mib', String(WORKLOAD_MIB)]);
  cleanup.add(() => w.child.kill('SIGKILL'));
  const atSource = w.status()!;
  say(`workload restore_target pid ${w.pid}: ${WORKLOAD_MIB} MiB, 2 workers, checking its own memory, registers and threads`);
  print(`self-check at the source: round ${atSource.iter}, ${describeCheck(atSource)}`);

  say(`sender migrate --pid ${w.pid} --to ${dest.address} --handover --token-file ${path.basename(dest.tokenFile)}`);
  const run = await dest.handover(w.pid, `demo-handover-${w.pid}`);
  if (run.code !== 0 || !run.summary?.handover) throw new DemoFailure(`the handover failed: ${senderError(run)}`);
  const s = run.summary;
  const h = s.handover!;
  print(`handed over in ${s.totalSeconds.toFixed(2)} s: ${s.precopyRounds} pre-copy rounds, image ${formatBytes(s.memoryBytes)}`);
  print(handoverDowntimeText(h));

  say('after the handover');
  const gone = await Promise.race([w.exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 5000))]);
  if (!gone) throw new DemoFailure(`the source process ${w.pid} still exists after the handover`);
  print(`source: pid ${w.pid} is gone (${w.child.signalCode ?? `exit ${w.child.exitCode}`})`);
  if (h.destinationPid !== w.pid) throw new DemoFailure(`the destination pid is ${h.destinationPid}, not the source's ${w.pid}`);
  const there = dest.rootPid(h.destinationPid);
  if (there === null) throw new DemoFailure(`no process ${h.destinationPid} in the destination's PID namespace`);
  const exe = fs.readlinkSync(`/proc/${there}/exe`);
  print(`destination: pid ${h.destinationPid} in its PID namespace (pid ${there} in this machine's), running ${path.basename(exe)}`);

  // The status file as the destination process sees it: progress there can only be its own.
  const dir = `/proc/${there}/root${w.dir}`;
  const first = readStatus(dir);
  if (!first) throw new DemoFailure(`no status file at the destination (${dir}/status)`);
  const later = await waitStatus(dir, (x) => iter(x) >= iter(first) + CHECK_ROUNDS, 'the workload to run on at the destination', 10_000).catch(() => {
    throw new DemoFailure(`the workload does not run on at the destination (round ${readStatus(dir)?.iter}, ${first.iter} after the handover)`);
  });
  const failed = selfCheckFailures(later);
  if (failed.length > 0) throw new DemoFailure(`self-check failed at the destination: ${failed.map((k) => `${k}=${later[k]}`).join(', ')}`);
  print(`check passed at the destination: rounds ${first.iter} -> ${later.iter}, ${describeCheck(later)}`);
}

/** "0 errors in worker, sum, avx, ..." for a status whose checks all pass. */
function describeCheck(s: Status): string {
  const failed = selfCheckFailures(s);
  if (failed.length > 0) return `FAILING: ${failed.join(', ')}`;
  const names = Object.keys(s)
    .filter((k) => k.endsWith('_errors'))
    .map((k) => k.slice(0, -'_errors'.length));
  return `0 errors in ${names.join(', ')}`;
}

/** Why the handover's sender failed, in one line: its error line ("sender: ..."), or how it ended. */
function senderError(run: ProcessRun): string {
  if (run.signal) return `the sender was killed (${run.signal})`;
  const said = run.stderr.split('\n').find((l) => l.startsWith('sender: '));
  return said ?? `the sender exited with ${run.code} and said no error`;
}
