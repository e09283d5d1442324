// Running bin/restore_target (test/workloads/restore_target.c) for the restore tests: start it,
// read its status file, freeze + capture + snapshot it, kill it, and clean up restored processes
// (which are our children outside child_process: reaped with reapChild).

import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { freezeForRestore, reapChild } from '../../../../native';
import type { ProcessState } from '../../../../image/process-state';
import { captureProcessState } from '../../../../sender/capture/capture-process-state';
import { REPO_ROOT } from '../../../helpers/target';
import { type LiveImage, snapshotMemory } from './live-image';

export const RESTORE_TARGET = path.join(REPO_ROOT, 'test', 'workloads', 'bin', 'restore_target');

export type Status = Record<string, string>;

export class Workload {
  readonly pid: number;
  readonly exited: Promise<void>;
  constructor(
    readonly dir: string,
    readonly child: ChildProcess,
  ) {
    this.pid = child.pid!;
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
  }
  status(): Status | null {
    return readStatus(this.dir);
  }
}

const live = new Set<number>();
const dirs = new Set<string>();
process.on('exit', () => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  for (const pid of live) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
});

/** A status dir anyone can write (the workload may run as nobody). */
export function statusDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'precopy-restore-'));
  fs.chmodSync(dir, 0o777);
  dirs.add(dir);
  return dir;
}

export async function startWorkload(args: string[] = [], dir = statusDir()): Promise<Workload> {
  const child = spawn(RESTORE_TARGET, [dir, '--max-seconds', '90', ...args], { stdio: ['ignore', 'ignore', 'inherit'] });
  const w = new Workload(dir, child);
  live.add(w.pid);
  void w.exited.then(() => live.delete(w.pid));
  await waitStatus(dir, (s) => s.ready === '1' && Number(s.iter) >= 3, 'workload ready');
  return w;
}

export function readStatus(dir: string): Status | null {
  let text: string;
  try {
    text = fs.readFileSync(path.join(dir, 'status'), 'utf8');
  } catch {
    return null;
  }
  const out: Status = {};
  for (const line of text.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}

/** The self-checks of a status that failed: every `*_errors` count and `usr1_bad` not zero. */
export const selfCheckFailures = (s: Status): string[] => Object.keys(s).filter((k) => (k.endsWith('_errors') || k === 'usr1_bad') && s[k] !== '0');

export async function waitStatus(dir: string, pred: (s: Status) => boolean, label: string, timeoutMs = 20000): Promise<Status> {
  const t0 = Date.now();
  let last: Status | null = null;
  for (;;) {
    last = readStatus(dir);
    if (last && pred(last)) return last;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for: ${label}; last status ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export interface Captured {
  state: ProcessState;
  memory: LiveImage;
  /** /proc/PID/task/TID/status of every thread at the freeze. */
  threadStatus: Map<number, Status>;
  /** The workload's status file just before the freeze. */
  before: Status;
  cmdline: Buffer;
}

/** Freeze (capture helper), capture, snapshot memory; then SIGKILL the workload and reap it
 *  (thaw instead when keep is true). */
export async function captureAndKill(w: Workload, keep = false): Promise<Captured> {
  const before = w.status()!;
  const f = freezeForRestore(w.pid);
  let out: Captured;
  try {
    const state = captureProcessState(f, w.pid);
    const memory = snapshotMemory(w.pid);
    const threadStatus = new Map<number, Status>();
    for (const t of state.threads) threadStatus.set(t.tid, procStatus(w.pid, t.tid));
    out = { state, memory, threadStatus, before, cmdline: fs.readFileSync(`/proc/${w.pid}/cmdline`) };
  } catch (e) {
    f.thaw();
    throw e;
  }
  if (keep) {
    f.thaw();
  } else {
    f.kill();
    await w.exited;
  }
  return out;
}

export function procStatus(pid: number, tid: number): Status {
  const out: Status = {};
  for (const line of fs.readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8').split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  return out;
}

export function taskIds(pid: number): number[] {
  return fs
    .readdirSync(`/proc/${pid}/task`)
    .map(Number)
    .sort((a, b) => a - b);
}

/** SIGKILL a restored process (our raw child) and reap it. */
export function killRestored(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
  try {
    reapChild(pid, true);
  } catch {
    // not our child (never restored)
  }
}

/** Pids of any process still running the restore stub executable. */
export function stubProcesses(): number[] {
  const out: number[] = [];
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      if (fs.readlinkSync(`/proc/${p}/exe`).endsWith('/precopy-restore-stub')) out.push(Number(p));
    } catch {
      // exited, or a kernel thread
    }
  }
  return out;
}

export function processExists(pid: number): boolean {
  return fs.existsSync(`/proc/${pid}`);
}
