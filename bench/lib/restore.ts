// One real `receiver restore --json` as a user runs it (its own process), timed from the spawn to
// its exit, when the restored process runs; and the restored process's end. The restored process
// is not our child: its parent was the restore command, which has exited, so it is killed by pid
// (only once we know that pid is the process restored) and reaped by whoever adopted it.

import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { REPO_ROOT } from '../../test/helpers/target';
import { onCleanup } from './cleanup';
import { getNodeFlags } from './migration';

const RECEIVER_CLI = path.join(REPO_ROOT, 'dist', 'receiver', 'cli.js');

export interface RestoreRun {
  /** Spawn of `receiver restore` to its exit, seconds. */
  seconds: number;
  pid: number;
  tids: number[];
  /** The restore's own steps from --json, ms, in order. */
  steps: Array<{ step: string; ms: number }>;
  /** SIGKILL the restored process and wait until its pid is free. Also runs at cleanup. */
  kill: () => Promise<void>;
}

/** Wait until no process has this pid (a zombie still holds it). */
export async function waitPidFree(pid: number, timeoutMs = 15_000): Promise<void> {
  const t0 = performance.now();
  while (existsSync(`/proc/${pid}`)) {
    if (performance.now() - t0 > timeoutMs) throw new Error(`pid ${pid} is still taken after ${timeoutMs} ms (${procState(pid)})`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** The state letter and name of /proc/PID/status ("S (sleeping)"), or "gone". */
export function procState(pid: number): string {
  try {
    return /^State:\s+(.*)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? '?';
  } catch {
    return 'gone';
  }
}

/** Anonymous resident bytes of a process (RssAnon). */
export function rssAnonBytes(pid: number): number {
  const m = /^RssAnon:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? NaN) * 1024;
}

/** Every regular file under dir (an image's chunks, bitmaps, state and manifest). */
export function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...filesUnder(p));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

/**
 * `receiver restore --images IMAGES SESSION --json`, expecting the image's pid `pid` back. Throws
 * when the command fails or when the process it names is not running once it has exited.
 */
export async function restoreOnce(images: string, session: string, pid: number): Promise<RestoreRun> {
  const args = [...getNodeFlags(), RECEIVER_CLI, 'restore', '--images', images, session, '--json'];
  const t0 = performance.now();
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PRECOPY_LOG: 'warn' } });
  // ^C or a failure while it runs: the restorer dies, and its stub with it (PTRACE_O_EXITKILL).
  const killCommand = onCleanup(() => child.kill('SIGKILL'));
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  const seconds = (performance.now() - t0) / 1000;
  killCommand();
  if (code !== 0) throw new Error(`receiver restore exited ${code}:\n${err.trim().split('\n').slice(-10).join('\n')}`);
  // Wait for the rest of stdout (the JSON is written before the exit).
  if (!child.stdout.readableEnded) await new Promise((r) => child.stdout.once('end', r));
  const j = JSON.parse(out) as { pid: number; tids: number[]; steps: Array<{ step: string; ms: number }> };
  if (j.pid !== pid) {
    // Not the image's pid: cannot be (no --any-pid), but then it is not ours to leave running.
    try {
      process.kill(j.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
    throw new Error(`receiver restore started pid ${j.pid}, the image's is ${pid}`);
  }
  const killNow = onCleanup(() => process.kill(pid, 'SIGKILL'));
  const kill = async () => {
    killNow();
    await waitPidFree(pid);
  };
  const state = procState(pid);
  if (!/^[RSD]/.test(state)) {
    await kill();
    throw new Error(`the restored process ${pid} is not running once receiver restore has exited (state ${state})`);
  }
  return { seconds, pid: j.pid, tids: j.tids, steps: j.steps, kill };
}
