// Section 8: how much a migration slows the program migrated. redis-server holding a 1 GiB dataset
// (1M keys of 1 KiB of random bytes), one client connection in a closed loop (half GET, half SET
// of random keys; every request timed), migrated with the default flags (the verify pass reads a
// snapshot after the thaw), then again with the receiver's --max-rate at half of what the first
// run moved in round 0. Per phase, by when each request was sent: before (5 s), pre-copy (sender
// start to the freeze), across the freeze (sent while frozen), verify (thaw to the sender's exit:
// COW faults while the snapshot lives), after (5 s): requests/s and p50/p99/max latency; the
// sender's CPU beside. On 2 cores the client, redis, the sender and the receiver share them.

import * as os from 'node:os';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Redis, startRedis } from '../../test/helpers/redis';
import { onCleanup } from '../lib/cleanup';
import type { BenchContext } from '../lib/context';
import { BenchReceiver, migrateOnce, round0BytesPerSecond } from '../lib/migration';

const KEYS = 1_000_000;
const VALUE_BYTES = 1024;
const STEADY_MS = 5000;

export const SLOWDOWN_PHASES = ['before', 'pre-copy', 'freeze', 'verify', 'after'] as const;
export type SlowdownPhase = (typeof SLOWDOWN_PHASES)[number];

export interface PhaseFigures {
  phase: SlowdownPhase;
  seconds: number;
  requests: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

export interface SlowdownRun {
  /** 'default', or the receiver's --max-rate. */
  config: string;
  maxRateBytes: number;
  phases: PhaseFigures[];
  senderCpuSeconds: number;
  migrationSeconds: number;
  frozenMs: number;
  downtimeMs: number;
  verify: string;
  /** AnonHugePages of redis-server before and after the migration, KiB (tracking splits huge
   *  pages it sees written: the process runs on 4 KiB pages there afterwards). */
  hugeKiB: [number, number];
}

/** Request send times and latencies, ms; preallocated so that the client's own GC pauses (a
 *  growing array of objects) do not show up as latency. */
class Samples {
  at = new Float64Array(1 << 22);
  ms = new Float32Array(1 << 22);
  n = 0;
  push(at: number, ms: number): void {
    if (this.n === this.at.length) return; // 4M requests: far more than a run makes
    this.at[this.n] = at;
    this.ms[this.n++] = ms;
  }
}

/** One connection, one request in flight, until stop() (half GET, half SET of random keys). */
class Load {
  readonly samples = new Samples();
  private running = true;
  private readonly done: Promise<void>;
  constructor(private readonly client: Redis) {
    this.done = this.loop();
  }
  private async loop(): Promise<void> {
    const value = randomBytes(VALUE_BYTES);
    for (let i = 0; this.running; i++) {
      const key = `k${Math.floor(Math.random() * KEYS)}`;
      const at = performance.now();
      if (i % 2) await this.client.cmd('GET', key);
      else {
        value.writeUInt32LE(i, 0);
        await this.client.cmd('SET', key, value);
      }
      this.samples.push(at, performance.now() - at);
    }
  }
  async stop(): Promise<void> {
    this.running = false;
    await this.done;
  }
}

function figures(phase: SlowdownPhase, samples: Samples, from: number, to: number): PhaseFigures {
  const picked: number[] = [];
  for (let i = 0; i < samples.n; i++) if (samples.at[i] >= from && samples.at[i] < to) picked.push(samples.ms[i]);
  const ms = Float64Array.from(picked).sort();
  const q = (p: number) => (ms.length ? ms[Math.min(ms.length - 1, Math.floor(p * ms.length))] : NaN);
  const seconds = (to - from) / 1000;
  return { phase, seconds, requests: ms.length, rps: ms.length / seconds, p50Ms: q(0.5), p99Ms: q(0.99), maxMs: ms.length ? ms[ms.length - 1] : NaN };
}

function anonHugeKiB(pid: number): number {
  const m = /AnonHugePages:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

async function fill(client: Redis): Promise<void> {
  const value = randomBytes(VALUE_BYTES * 64);
  for (let k = 0; k < KEYS; k += 1000) {
    const cmds: Buffer[][] = [];
    for (let i = k; i < k + 1000; i++) {
      const off = (i * 97) % (value.length - VALUE_BYTES);
      cmds.push([Buffer.from('SET'), Buffer.from(`k${i}`), value.subarray(off, off + VALUE_BYTES)]);
    }
    await client.pipeline(cmds);
  }
}

async function migrateUnderLoad(ctx: BenchContext, pid: number, port: number, config: string, maxRateBytes: number): Promise<SlowdownRun & { round0: number }> {
  const receiver = await BenchReceiver.start(maxRateBytes ? ['--max-rate', String(Math.round(maxRateBytes))] : []);
  const client = await Redis.connect(port);
  const load = new Load(client);
  try {
    const hugeBefore = anonHugeKiB(pid);
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, STEADY_MS));
    const start = performance.now();
    let freezeAt = NaN;
    let thawAt = NaN;
    const m = await migrateOnce({
      pid,
      to: receiver,
      keepImage: true, // removed after the measurement: deleting 1 GiB blocks this (the client's) thread
      onStderrLine: (line, at) => {
        const f = /stop-and-copy: freeze \(.*?\) ([\d.]+) ms/.exec(line);
        if (f) freezeAt = at - Number(f[1]);
        const a = /after: resume in ([\d.]+) ms, untracked in ([\d.]+) ms/.exec(line);
        if (a) thawAt = at - Number(a[2]);
      },
    });
    const end = performance.now();
    await new Promise((r) => setTimeout(r, STEADY_MS));
    const stop = performance.now();
    await load.stop();
    m.removeImage();
    const s = load.samples;
    const run: SlowdownRun & { round0: number } = {
      config,
      maxRateBytes,
      phases: [
        figures('before', s, t0, start),
        figures('pre-copy', s, start, freezeAt),
        figures('freeze', s, freezeAt, thawAt),
        figures('verify', s, thawAt, end),
        figures('after', s, end, stop),
      ],
      senderCpuSeconds: m.sender.cpuSeconds,
      migrationSeconds: (end - start) / 1000,
      frozenMs: m.summary.frozenSeconds * 1000,
      downtimeMs: m.summary.downtimeSeconds * 1000,
      verify: m.summary.verify.mode,
      hugeKiB: [hugeBefore, anonHugeKiB(pid)],
      round0: round0BytesPerSecond(m.summary),
    };
    ctx.progress(
      `  ${config}: ${run.phases.map((p) => `${p.phase} ${p.rps.toFixed(0)} req/s p99 ${p.p99Ms.toFixed(2)} max ${p.maxMs.toFixed(1)} ms`).join('; ')}; ` +
        `sender CPU ${run.senderCpuSeconds.toFixed(2)} s over ${run.migrationSeconds.toFixed(1)} s; huge pages ${run.hugeKiB[0] >> 10} -> ${run.hugeKiB[1] >> 10} MiB`,
    );
    return run;
  } finally {
    await load.stop().catch(() => undefined);
    await client.close();
    await receiver.stop();
  }
}

export async function runSlowdown(ctx: BenchContext): Promise<SlowdownRun[]> {
  ctx.progress(`slowdown: redis-server with ${KEYS} keys of ${VALUE_BYTES} bytes, one client in a closed loop (GET/SET)`);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'precopy-bench-redis-'));
  const redis = await startRedis(dir);
  const stopRedis = onCleanup(() => {
    redis.child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  try {
    await fill(redis.client);
    const out: SlowdownRun[] = [];
    for (let run = 0; run < ctx.runs; run++) {
      const first = await migrateUnderLoad(ctx, redis.child.pid!, redis.port, 'default', 0);
      const half = first.round0 / 2;
      const limited = await migrateUnderLoad(ctx, redis.child.pid!, redis.port, `--max-rate ${(half / 1e6).toFixed(0)}M`, half);
      out.push(first, limited);
    }
    return out;
  } finally {
    await redis.client.close().catch(() => undefined);
    stopRedis();
  }
}
