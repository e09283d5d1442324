// Section 1 (and 5): round-0 throughput end to end, against two limits measured in the same run:
// process_vm_readv of the same stopped target (reading) and writing as many bytes durably into the
// receiver's images directory (the disk: round 0 ends when its pages are durable). The sender's
// peak RSS and CPU come from the same runs, beside the CPU of C programs doing each side's job
// over loopback TCP (page-link: the floor per side).
// Runs interleave: each run reads the target with pvr-read, then does one migration per config
// that shares the target, so load drift on the shared machine hits every config alike.

import { diskWrite, pageLink, pvrRead } from '../lib/baselines';
import type { BenchContext } from '../lib/context';
import { FillTarget, type Fill } from '../lib/fill-target';
import { BenchReceiver, migrateOnce, round0BytesPerSecond, scratchDir, type MigrationRun } from '../lib/migration';
import { ratio, stat, type Stat } from '../lib/stats';

export interface ThroughputConfig {
  name: string;
  mib: number;
  fill: Fill;
  compress: 'lz4' | 'none';
  /** grpc: sender → gRPC on loopback → receiver; dir: sender → images directory (no network). */
  transfer: 'grpc' | 'dir';
  /** grpc: streams per session (sender --streams; default 1). */
  streams?: number;
}

export const THROUGHPUT_CONFIGS: ThroughputConfig[] = [
  { name: '1 GiB random, lz4', mib: 1024, fill: 'random', compress: 'lz4', transfer: 'grpc' },
  { name: '1 GiB random, lz4, 2 streams', mib: 1024, fill: 'random', compress: 'lz4', transfer: 'grpc', streams: 2 },
  { name: '1 GiB random, lz4, 4 streams', mib: 1024, fill: 'random', compress: 'lz4', transfer: 'grpc', streams: 4 },
  { name: '1 GiB random, no compression', mib: 1024, fill: 'random', compress: 'none', transfer: 'grpc' },
  { name: '1 GiB random, lz4, dir: (no network)', mib: 1024, fill: 'random', compress: 'lz4', transfer: 'dir' },
  { name: '1 GiB text, lz4', mib: 1024, fill: 'text', compress: 'lz4', transfer: 'grpc' },
  { name: '4 GiB random, lz4', mib: 4096, fill: 'random', compress: 'lz4', transfer: 'grpc' },
];

export interface ThroughputResult {
  config: ThroughputConfig;
  /** Round 0 page bytes / s, GB/s (1e9). */
  round0GBps: Stat;
  /** pvr-read of the populated area, GB/s. */
  rawLimitGBps: Stat;
  /** round0 / raw limit (medians). */
  ofLimit: number;
  /** The same bytes written and synced into the receiver's images directory, GB/s. */
  diskLimitGBps: Stat;
  /** round0 / disk limit (medians). */
  ofDisk: number;
  /** Wire bytes / page bytes of round 0 (1 = nothing saved). */
  wireShare: Stat;
  senderPeakRssMiB: Stat;
  senderCpuSeconds: Stat;
  receiverCpuSeconds: Stat;
  /** The kernel's share (stime) of each. */
  senderSystemSeconds: Stat;
  receiverSystemSeconds: Stat;
  /** CPU seconds of the main (JS) thread and of the others (libuv pool, GC helpers). */
  senderThreads: ThreadStats;
  receiverThreads: ThreadStats;
  /** CPU seconds of the C reader (process_vm_readv into TCP) and writer (TCP into O_DIRECT +
   *  fdatasync) moving the same bytes: each side's floor. */
  cReaderCpuSeconds: Stat;
  cWriterCpuSeconds: Stat;
  totalSeconds: Stat;
}

export interface ThreadStats {
  main: Stat;
  others: Stat;
}

function byThread(runs: { main: number; others: number }[]): ThreadStats {
  return { main: stat(runs.map((r) => r.main)), others: stat(runs.map((r) => r.others)) };
}

export async function runThroughput(ctx: BenchContext, configs = THROUGHPUT_CONFIGS): Promise<ThroughputResult[]> {
  const receiver = await BenchReceiver.start();
  const localImages = scratchDir('local');
  const results: ThroughputResult[] = [];
  try {
    const groups = new Map<string, ThroughputConfig[]>();
    for (const c of configs) groups.set(`${c.mib}/${c.fill}`, [...(groups.get(`${c.mib}/${c.fill}`) ?? []), c]);
    for (const group of groups.values()) {
      const { mib, fill } = group[0];
      ctx.progress(`throughput: ${mib} MiB ${fill} target`);
      const target = await FillTarget.start(ctx.bins['fill-target'], { mib, fill });
      const raw: number[] = [];
      const disk: number[] = [];
      const cReader: number[] = [];
      const cWriter: number[] = [];
      const per = new Map(group.map((c) => [c, [] as MigrationRun[]]));
      try {
        for (let run = 0; run < ctx.runs; run++) {
          process.kill(target.pid, 'SIGSTOP');
          try {
            const range: [number, number] = [target.base, target.base + target.pages * 4096];
            const r = await pvrRead(ctx.bins['pvr-read'], target.pid, [range]);
            raw.push(r.bytes / r.seconds / 1e9);
            const link = await pageLink(ctx.bins['page-link'], receiver.images, target.pid, range);
            cReader.push(link.reader.cpu);
            cWriter.push(link.writer.cpu);
          } finally {
            process.kill(target.pid, 'SIGCONT');
          }
          const d = await diskWrite(ctx.bins['disk-write'], receiver.images, target.pages * 4096);
          disk.push(d.bytes / d.seconds / 1e9);
          for (const c of group) {
            const flags = ['--no-verify', '--compress', c.compress, ...(c.streams ? ['--streams', String(c.streams)] : [])];
            const m = await migrateOnce({ pid: target.pid, to: c.transfer === 'dir' ? { dir: localImages } : receiver, flags });
            per.get(c)!.push(m);
            ctx.progress(
              `  run ${run + 1}: ${c.name}: round 0 ${(round0BytesPerSecond(m.summary) / 1e9).toFixed(2)} GB/s (raw ${raw[raw.length - 1].toFixed(2)})`,
            );
          }
        }
      } finally {
        await target.kill();
      }
      const rawLimitGBps = stat(raw);
      const diskLimitGBps = stat(disk);
      for (const c of group) {
        const ms = per.get(c)!;
        const round0GBps = stat(ms.map((m) => round0BytesPerSecond(m.summary) / 1e9));
        results.push({
          config: c,
          round0GBps,
          rawLimitGBps,
          ofLimit: ratio(round0GBps, rawLimitGBps),
          diskLimitGBps,
          ofDisk: ratio(round0GBps, diskLimitGBps),
          wireShare: stat(ms.map((m) => m.summary.rounds[0].wireBytes / (m.summary.rounds[0].dirtyPages * m.summary.pageSize))),
          senderPeakRssMiB: stat(ms.map((m) => m.sender.peakRssBytes / 2 ** 20)),
          senderCpuSeconds: stat(ms.map((m) => m.sender.cpuSeconds)),
          receiverCpuSeconds: stat(ms.map((m) => m.receiverCpuSeconds)),
          senderSystemSeconds: stat(ms.map((m) => m.sender.systemSeconds)),
          receiverSystemSeconds: stat(ms.map((m) => m.receiverSystemSeconds)),
          senderThreads: byThread(ms.map((m) => m.sender.threads)),
          receiverThreads: byThread(ms.map((m) => m.receiverThreads)),
          cReaderCpuSeconds: stat(cReader),
          cWriterCpuSeconds: stat(cWriter),
          totalSeconds: stat(ms.map((m) => m.summary.totalSeconds)),
        });
      }
    }
  } finally {
    await receiver.stop();
  }
  return configs.map((c) => results.find((r) => r.config === c)!);
}
