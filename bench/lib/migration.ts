// One real migration as a user runs it: `sender migrate --json` in its own process (with the
// usage hook preloaded), to a real `receiver serve` on loopback or to an images directory
// (`--to dir:`). Returns the sender's JSON summary, the sender's peak RSS and CPU, the receiver's
// CPU during the run and the stop-and-copy breakdown from the sender's debug log; the committed
// image is deleted afterwards (4 GiB images add up), unless the caller keeps it to use it (the
// restore section) and removes it itself.

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { MigrationSummary } from '../../sender/report/figures';
import { REPO_ROOT } from '../../test/helpers/target';
import { startReceiver, type ReceiverHandle } from '../../test/helpers/receiver';
import { onCleanup } from './cleanup';
import { cpuSeconds, systemSeconds, threadCpu } from './proc-stat';
import type { ProcessUsage } from './usage-hook';

const SENDER_CLI = path.join(REPO_ROOT, 'dist', 'sender', 'cli.js');
const USAGE_HOOK = path.join(__dirname, 'usage-hook.js');

/**
 * Node/V8 flags given to every sender and receiver process the bench starts (`--node-flags`), to
 * measure a runtime setting (e.g. --initial-old-space-size) against the default in the same run.
 */
let nodeFlags: string[] = [];
export function setNodeFlags(flags: string[]): void {
  nodeFlags = flags;
}
export function getNodeFlags(): string[] {
  return nodeFlags;
}

/** A scratch images directory, removed at the end of the bench whatever happens. */
export function scratchDir(prefix: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), `precopy-bench-${prefix}-`));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A receiver for a section's runs; its CPU is read per run from /proc. */
export class BenchReceiver {
  private constructor(
    readonly handle: ReceiverHandle,
    readonly images: string,
    private readonly stopNow: () => void,
  ) {}

  /** args: more `receiver serve` flags (--max-rate ...). */
  static async start(args: string[] = []): Promise<BenchReceiver> {
    const images = scratchDir('receiver');
    const env = { ...process.env, PRECOPY_LOG: 'warn' };
    const spawner = (cmd: string, a: string[]) => spawn(cmd, [...nodeFlags, ...a], { stdio: ['ignore', 'pipe', 'pipe'], env });
    const handle = await startReceiver({ images, args, env, spawner });
    const stop = onCleanup(() => handle.child.kill('SIGKILL'));
    return new BenchReceiver(handle, images, stop);
  }

  async stop(): Promise<void> {
    await this.handle.stop('SIGTERM', 10_000);
    this.stopNow();
  }
}

export interface MigrationRun {
  summary: MigrationSummary;
  sender: ProcessUsage & { cpuSeconds: number };
  /** utime + stime the receiver spent during the run (NaN for dir: transfers). */
  receiverCpuSeconds: number;
  /** Its stime alone (NaN for dir: transfers). */
  receiverSystemSeconds: number;
  /** The same, main (JS) thread and other threads (NaN for dir: transfers). */
  receiverThreads: { main: number; others: number };
  /** Stop-and-copy steps from the sender's debug log ("stop-and-copy: commit 358.0 ms"), ms. */
  downtimeSteps: Record<string, number>;
  /** The session id the image was committed under. */
  session: string;
  /** Remove the image now (with keepImage; otherwise it is gone already). Also runs at cleanup. */
  removeImage: () => void;
}

export interface MigrateArgs {
  pid: number;
  /** A receiver, or an images directory (dir: transfer). */
  to: BenchReceiver | { dir: string };
  /** More sender flags (--no-verify, --compress none, --downtime-ms ...). */
  flags?: string[];
  /** Leave the committed image in place for the caller, who removes it (run.removeImage()). */
  keepImage?: boolean;
  /** Each line of the sender's stderr (debug log) as it arrives, with performance.now(). */
  onStderrLine?: (line: string, at: number) => void;
}

let sessions = 0;

export async function migrateOnce(a: MigrateArgs): Promise<MigrationRun> {
  const session = `bench-${process.pid}-${++sessions}`;
  const images = a.to instanceof BenchReceiver ? a.to.images : a.to.dir;
  const to = a.to instanceof BenchReceiver ? a.to.handle.address : `dir:${a.to.dir}`;
  const usageFile = path.join(os.tmpdir(), `precopy-bench-usage-${process.pid}-${sessions}.json`);
  const removeImage = onCleanup(() => {
    rmSync(path.join(images, session), { recursive: true, force: true });
    rmSync(usageFile, { force: true });
  });
  const receiverPid = a.to instanceof BenchReceiver ? a.to.handle.pid : 0;
  const r0 = receiverPid ? cpuSeconds(receiverPid) : NaN;
  const rs0 = receiverPid ? systemSeconds(receiverPid) : NaN;
  const rt0 = receiverPid ? threadCpu(receiverPid) : { main: NaN, others: NaN };
  let kept = false;
  try {
    const args = [
      ...nodeFlags,
      '--require',
      USAGE_HOOK,
      SENDER_CLI,
      'migrate',
      '--pid',
      String(a.pid),
      '--to',
      to,
      '--session',
      session,
      '--json',
      ...(a.flags ?? []),
    ];
    const child = spawn(process.execPath, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      // debug: the stop-and-copy laps (a dozen lines per migration, no per-batch lines).
      env: { ...process.env, PRECOPY_LOG: 'debug', PRECOPY_BENCH_USAGE_FILE: usageFile },
    });
    const killSender = onCleanup(() => child.kill('SIGKILL'));
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    let partial = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      err += d;
      if (!a.onStderrLine) return;
      const at = performance.now();
      const lines = (partial + d).split('\n');
      partial = lines.pop()!;
      for (const l of lines) a.onStderrLine(l, at);
    });
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    killSender();
    if (code !== 0) throw new Error(`sender migrate exited ${code}:\n${err.split('\n').slice(-15).join('\n')}`);
    const summary = JSON.parse(out) as MigrationSummary;
    const usage = JSON.parse(readFileSync(usageFile, 'utf8')) as ProcessUsage;
    kept = a.keepImage ?? false;
    return {
      summary,
      sender: { ...usage, cpuSeconds: usage.userSeconds + usage.systemSeconds },
      receiverCpuSeconds: receiverPid ? cpuSeconds(receiverPid) - r0 : NaN,
      receiverSystemSeconds: receiverPid ? systemSeconds(receiverPid) - rs0 : NaN,
      receiverThreads: receiverPid ? threadDelta(rt0, threadCpu(receiverPid)) : { main: NaN, others: NaN },
      downtimeSteps: downtimeSteps(err),
      session,
      removeImage,
    };
  } finally {
    if (!kept) removeImage();
  }
}

function threadDelta(before: { main: number; others: number }, after: { main: number; others: number }) {
  return { main: after.main - before.main, others: after.others - before.others };
}

/** "migrate: debug: stop-and-copy: 12 dirty pages 3.1 ms" → { 'dirty pages': 3.1 }. */
export function downtimeSteps(log: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of log.matchAll(/stop-and-copy: (.+?) ([\d.]+) ms$/gm)) {
    // Drop the counts from labels ("freeze (1 threads)", "12 dirty pages") so runs line up.
    const label = m[1]
      .replace(/\(.*?\)/g, '')
      .replace(/\d+/g, '')
      .replace(/\s+/g, ' ')
      .trim();
    out[label] = (out[label] ?? 0) + Number(m[2]);
  }
  return out;
}

/** Round 0's page bytes per second, end to end (first scan to the receiver's durable ack). */
export function round0BytesPerSecond(s: MigrationSummary): number {
  const r0 = s.rounds[0];
  return (r0.dirtyPages * s.pageSize) / r0.durationSeconds;
}
