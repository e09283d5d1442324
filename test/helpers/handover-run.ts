// What every handover test checks of the source and of the workload it moved (the run itself:
// DestHost.handover / startHandover in dest-host.ts).

import type { ExecutionContext } from 'ava';
import * as fs from 'node:fs';
import { DestHost, type DestLink } from './dest-host';
import { selfCheckFailures, startWorkload, waitStatus, type Status, type Workload } from '../receiver/restore/helpers/workload';

export const num = (s: Status, k: string): number => Number(s[k]);

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

/** The restored workload is alive at the destination and its checks keep passing. */
export async function runsOn(w: Workload, t: { deepEqual: (a: unknown, b: unknown, m?: string) => void }): Promise<void> {
  const before = w.status()!;
  const s = await waitStatus(w.dir, (x) => num(x, 'iter') > num(before, 'iter') + 5, 'progress at the destination');
  t.deepEqual(selfCheckFailures(s), [], 'self-checks at the destination');
}

/** A destination host (receiver serve with `serveArgs`) and a restore_target workload (`args`),
 *  both gone when the test ends. */
export async function destAndWorkload(
  t: ExecutionContext,
  subnet: string,
  serveArgs: string[],
  args: string[],
  env: NodeJS.ProcessEnv = {},
  link: DestLink = 'veth',
): Promise<{ dest: DestHost; w: Workload }> {
  const dest = await DestHost.create(subnet, serveArgs, env, link);
  t.teardown(() => dest.destroy());
  const w = await startWorkload(args);
  t.teardown(() => w.child.kill('SIGKILL'));
  return { dest, w };
}
