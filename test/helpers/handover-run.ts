// Driving a handover from a test: the sender CLI run against a DestHost (dest-host.ts), and the
// checks every handover test makes of the source and of the workload it moved.

import * as fs from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import type { DestHost } from './dest-host';
import { collect, SENDER_CLI, type SenderRun } from './migration-cli';
import { waitStatus, type Status, type Workload } from '../receiver/restore/helpers/workload';
import type { MigrationSummary } from '../../sender/report/figures';

export const num = (s: Status, k: string): number => Number(s[k]);

/** The workload's self-checks that failed. */
export const failures = (s: Status): string[] => Object.keys(s).filter((k) => (k.endsWith('_errors') || k === 'usr1_bad') && s[k] !== '0');

/** What the sender says as errors (its info log lines, "migrate: ...", aside). */
export const oneLine = (stderr: string): string[] => stderr.split('\n').filter((l) => l.startsWith('sender: '));

let subnet = 0;
/** A fresh /24 for each DestHost of a test file (`base` tells the files apart). */
export const nextSubnet = (base: number): string => `10.${base}.${subnet++}.0`;

/** /proc/PID/stat state letter, or null when the process is gone (or a zombie). */
export function procState(pid: number): string | null {
  try {
    const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const s = st.slice(st.lastIndexOf(')') + 2, st.lastIndexOf(')') + 3);
    return s === 'Z' || s === 'X' ? null : s;
  } catch {
    return null;
  }
}

export async function until(what: string, pred: () => boolean, ms = 20_000): Promise<void> {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** `sender migrate --handover` of pid to dest, started; `done` settles with its run and --json summary. */
export function startHandover(
  dest: DestHost,
  pid: number,
  session: string,
  env: NodeJS.ProcessEnv = {},
  extra: string[] = [],
): { child: ChildProcess; done: Promise<SenderRun> } {
  const args = ['migrate', '--pid', String(pid), '--to', dest.address, '--session', session, '--handover'];
  args.push('--token-file', dest.tokenFile, '--insecure', '--downtime-ms', '50', '--json', ...extra);
  const child = dest.spawnSource(process.execPath, [SENDER_CLI, ...args], env);
  const done = collect(child).then((run) => {
    const summary = run.code === 0 ? (JSON.parse(run.stdout) as MigrationSummary) : null;
    return { ...run, summary };
  });
  return { child, done };
}

export function handover(dest: DestHost, pid: number, session: string, env: NodeJS.ProcessEnv = {}, extra: string[] = []): Promise<SenderRun> {
  return startHandover(dest, pid, session, env, extra).done;
}

/** The restored workload is alive at the destination and its checks keep passing. */
export async function runsOn(w: Workload, t: { deepEqual: (a: unknown, b: unknown, m?: string) => void }): Promise<void> {
  const before = w.status()!;
  const s = await waitStatus(w.dir, (x) => num(x, 'iter') > num(before, 'iter') + 5, 'progress at the destination');
  t.deepEqual(failures(s), [], 'self-checks at the destination');
}
