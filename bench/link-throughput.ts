// Link throughput: N GiB of PageBatch messages (4 MiB payloads by default, the sender's batch
// size: sender/round-pipeline.ts STAGE_PAGES) over loopback, from a
// MigrationLink (proto/client.ts, the sender's end) into
//   --sink discard:  a grpc-js server in a child process with the receiver's server options that
//                    only counts the pages (the link alone; bench/lib/discard-server.ts), or
//   --sink receiver: a real `receiver serve` process storing them (link + lz4 decode + store).
// Compares the HTTP/2 receive window (--window default|raised; discard sink only: the receiver
// always raises it) and the request codec (--codec fast|proto-loader, both ends; the receiver
// always decodes with 'fast'). Each configuration runs --runs times; the table shows the median
// GB/s of page bytes (first send to RoundAck) and the CPU seconds per GiB of each process.
//
//   node dist/bench/link-throughput.js [--gib N] [--batch-kib K] [--sink discard|receiver]
//       [--window default|raised|both] [--codec fast|proto-loader|both] [--encoding raw|lz4]
//       [--runs R]

import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseEnumFlag, parseFlags, parseIntFlag } from '../common/cli';
import { runMain } from '../common/errors';
import { MigrationLink } from '../sender/transfer/migration-link';
import type { PageBatch } from '../proto/messages';
import { lz4Compress } from '../common/lz4-block';
import { LINK_CODECS, type LinkCodec } from '../proto/service';
import { startReceiver } from '../test/helpers/receiver';
import { cpuSeconds } from './lib/proc-stat';

const USAGE =
  'usage: node dist/bench/link-throughput.js [--gib N] [--batch-kib K] [--sink discard|receiver] ' +
  '[--window default|raised|both] [--codec fast|proto-loader|both] [--encoding raw|lz4] [--runs R]';

const OPTIONS = {
  gib: { type: 'string' },
  'batch-kib': { type: 'string' },
  sink: { type: 'string' },
  window: { type: 'string' },
  codec: { type: 'string' },
  encoding: { type: 'string' },
  runs: { type: 'string' },
} as const;

const PS = 4096;
const BASE = 0x7f0000000000;
type Window = 'default' | 'raised';

interface Config {
  sink: 'discard' | 'receiver';
  window: Window;
  codec: LinkCodec;
  encoding: 'raw' | 'lz4';
}

interface Sample {
  gbps: number;
  clientCpuPerGiB: number;
  serverCpuPerGiB: number;
}

runMain('link-throughput', async () => {
  const { values } = parseFlags(process.argv.slice(2), OPTIONS, USAGE);
  const codecs = (v: string | undefined) => (v === 'both' ? [...LINK_CODECS] : [parseEnumFlag(v, '--codec', 'fast', LINK_CODECS)]);
  const gib = parseIntFlag(values.gib, '--gib', 2, 1, 64);
  const batchBytes = parseIntFlag(values['batch-kib'], '--batch-kib', 4096, 4, 60 << 10) * 1024;
  const sink = parseEnumFlag(values.sink, '--sink', 'discard', ['discard', 'receiver'] as const);
  const windows: Window[] =
    values.window === 'both' ? ['default', 'raised'] : [parseEnumFlag(values.window, '--window', 'raised', ['default', 'raised'] as const)];
  const encoding = parseEnumFlag(values.encoding, '--encoding', 'raw', ['raw', 'lz4'] as const);
  const runs = parseIntFlag(values.runs, '--runs', 3, 1, 20);
  if (sink === 'receiver' && windows.includes('default')) throw new Error('--window default needs --sink discard (the receiver always raises it)');

  process.stdout.write(`link-throughput: ${gib} GiB per run, ${batchBytes >> 10} KiB batches, ${encoding}, ${runs} runs, sink ${sink}\n`);
  process.stdout.write('window   codec         GB/s (median, min-max)   client CPU s/GiB   server CPU s/GiB\n');
  for (const window of windows) {
    for (const codec of codecs(values.codec)) {
      const cfg: Config = { sink, window, codec, encoding };
      const samples: Sample[] = [];
      for (let r = 0; r < runs; r++) samples.push(await measure(cfg, gib, batchBytes));
      const med = (f: (s: Sample) => number) => [...samples].map(f).sort((a, b) => a - b)[Math.floor(samples.length / 2)];
      const g = samples.map((s) => s.gbps);
      process.stdout.write(
        `${window.padEnd(8)} ${codec.padEnd(13)} ${med((s) => s.gbps)
          .toFixed(2)
          .padStart(5)} (${Math.min(...g).toFixed(2)}-${Math.max(...g).toFixed(2)})` +
          `${''.padEnd(10)}${med((s) => s.clientCpuPerGiB)
            .toFixed(3)
            .padStart(7)}${''.padEnd(12)}${med((s) => s.serverCpuPerGiB)
            .toFixed(3)
            .padStart(7)}\n`,
      );
    }
  }
  return 0;
});

/** One run: start the sink, send gib GiB in one round, wait for its RoundAck. */
async function measure(cfg: Config, gib: number, batchBytes: number): Promise<Sample> {
  const images = cfg.sink === 'receiver' ? mkdtempSync(path.join(os.tmpdir(), 'precopy-link-bench-')) : '';
  const sink = cfg.sink === 'receiver' ? await startReceiver({ images, env: { PRECOPY_LOG: 'warn' } }) : await startDiscard(cfg);
  try {
    const link = await MigrationLink.connect(sink.address, { codec: cfg.codec });
    const pages = (gib * 2 ** 30) / PS;
    const perBatch = batchBytes / PS;
    await link.start({ sessionId: `bench-${process.pid}`, sourceHost: 'bench', pid: process.pid, pageSize: PS, command: 'bench', memoryBytes: pages * PS });
    const layout = [{ start: BASE, end: BASE + pages * PS, perms: 'rw-p', offset: 0, path: '', fileBacked: false, inode: 0, dev: '00:00' }];
    await link.send({ roundStart: { round: 0, phase: 'PRECOPY', layout } });
    const batch = payloadFor(cfg.encoding, batchBytes);

    const c0 = process.cpuUsage();
    const s0 = cpuSeconds(sink.pid);
    const t0 = process.hrtime.bigint();
    for (let first = 0; first < pages; first += perBatch) {
      await link.send({ pages: { ...batch, runs: [BASE + first * PS, perBatch] } });
    }
    await link.endRound({ round: 0, batches: pages / perBatch });
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const c1 = process.cpuUsage(c0);
    const serverCpu = cpuSeconds(sink.pid) - s0;
    await link.close();
    return { gbps: (pages * PS) / seconds / 1e9, clientCpuPerGiB: (c1.user + c1.system) / 1e6 / gib, serverCpuPerGiB: serverCpu / gib };
  } finally {
    await sink.stop();
    if (images) rmSync(images, { recursive: true, force: true });
  }
}

function payloadFor(encoding: 'raw' | 'lz4', bytes: number): Omit<PageBatch, 'runs'> {
  if (encoding === 'raw') return { zeroMap: Buffer.alloc(0), encoding: 'RAW', rawLength: bytes, payload: randomBytes(bytes) };
  // Pages half random, half zeros: compresses to about half, like typical heap pages.
  const raw = Buffer.alloc(bytes);
  for (let off = 0; off < bytes; off += PS) randomBytes(PS / 2).copy(raw, off);
  return { zeroMap: Buffer.alloc(0), encoding: 'LZ4', rawLength: bytes, payload: lz4Compress(raw) };
}

interface Sink {
  address: string;
  pid: number;
  stop(): Promise<unknown>;
}

async function startDiscard(cfg: Config): Promise<Sink> {
  const server = path.join(__dirname, 'lib', 'discard-server.js');
  const child: ChildProcess = fork(server, ['--window', cfg.window, '--codec', cfg.codec], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (m) => resolve(Number(m)));
    child.once('exit', (code) => reject(new Error(`discard server exited (${code})`)));
  });
  return {
    address: `127.0.0.1:${port}`,
    pid: child.pid!,
    stop: () => {
      if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
      const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      child.kill('SIGTERM');
      return new Promise((r) => child.once('exit', r)).finally(() => clearTimeout(killer));
    },
  };
}
