// The bench's C programs (bench/baselines/*.c): built here with gcc into OUT/bin, then run.
//   pvr-read     the raw limit of round 0 (process_vm_readv into a reused buffer)
//   disk-write   the disk's limit of round 0 (O_DIRECT writes + fdatasync where the images go)
//   pm-scan      the raw limits of a dirty round (PAGEMAP_SCAN ioctl; /proc/PID/pagemap read)
//   fill-target  the target of the throughput, scan and restore sections (see fill-target.ts)
//   cache-evict  takes an image's files out of the page cache (restore section: a cold read)
//   page-link    the CPU floor of each side of the page path: process_vm_readv into a TCP socket
//                (reader), and from the socket into an O_DIRECT file + fdatasync (writer)
// Each prints one line of key=value figures.

import { execFile, spawn } from 'node:child_process';
import * as readline from 'node:readline';
import { mkdirSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../../test/helpers/target';

const run = promisify(execFile);

export const BASELINE_SOURCES = path.join(REPO_ROOT, 'bench', 'baselines');
const PROGRAMS = ['pvr-read', 'disk-write', 'pm-scan', 'fill-target', 'cache-evict', 'page-link'] as const;
export type Program = (typeof PROGRAMS)[number];
export type Programs = Record<Program, string>;

/** Compile every program whose binary is missing or older than its source (or than a header it uses). */
export async function buildBaselines(outDir: string): Promise<Programs> {
  const binDir = path.join(outDir, 'bin');
  mkdirSync(binDir, { recursive: true });
  const headers = [path.join(REPO_ROOT, 'native', 'kernel_abi.h'), path.join(BASELINE_SOURCES, 'clock.h')];
  const out = {} as Programs;
  for (const name of PROGRAMS) {
    const src = path.join(BASELINE_SOURCES, `${name}.c`);
    const bin = path.join(binDir, name);
    const newest = Math.max(mtime(src), ...headers.map(mtime));
    if (mtime(bin) < newest) await run('gcc', ['-O2', '-Wall', '-Wextra', '-o', bin, src]);
    out[name] = bin;
  }
  return out;
}

function mtime(file: string): number {
  try {
    return statSync(file).mtimeMs;
  } catch {
    return -1;
  }
}

/** `key=value key=value` → numbers. */
export function parseFigures(line: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const kv of line.trim().split(/\s+/)) {
    const eq = kv.indexOf('=');
    if (eq > 0) out[kv.slice(0, eq)] = Number(kv.slice(eq + 1));
  }
  return out;
}

async function figures(bin: string, args: string[]): Promise<Record<string, number>> {
  const { stdout } = await run(bin, args, { maxBuffer: 1 << 20 });
  return parseFigures(stdout);
}

/** [start, end) address ranges as the C programs take them. */
export type Range = [number, number];
const hex = (n: number) => `0x${n.toString(16)}`;

/** Copy the ranges of a (stopped) process; bytes per second of the copy alone. */
export async function pvrRead(bin: string, pid: number, ranges: Range[]): Promise<{ bytes: number; seconds: number }> {
  const f = await figures(bin, [String(pid), ...ranges.map(([s, e]) => `${hex(s)}:${e - s}`)]);
  return { bytes: f.bytes, seconds: f.seconds };
}

/** Write `bytes` of incompressible data into a new file in `dir` and sync it; bytes per second. */
export async function diskWrite(bin: string, dir: string, bytes: number): Promise<{ bytes: number; seconds: number }> {
  const f = await figures(bin, [path.join(dir, 'disk-limit.bin'), String(bytes)]);
  return { bytes: f.bytes, seconds: f.seconds };
}

export interface ScanFigures {
  seconds: number;
  pages: number;
  calls: number;
}

/** One raw dirty round (wp) or pagemap read over the ranges. */
export async function pmScan(
  bin: string,
  pid: number,
  mode: 'wp' | 'pagemap',
  ranges: Range[],
  opts: { maxPages?: number; vec?: number } = {},
): Promise<ScanFigures> {
  const args = [String(pid), mode];
  if (opts.maxPages !== undefined) args.push('--max-pages', String(opts.maxPages));
  if (opts.vec !== undefined) args.push('--vec', String(opts.vec));
  const f = await figures(bin, [...args, ...ranges.map(([s, e]) => `${hex(s)}:${hex(e)}`)]);
  return { seconds: f.seconds, pages: f.pages, calls: f.calls };
}

/** Take the files out of the page cache (fdatasync + POSIX_FADV_DONTNEED each); pages still cached after it. */
export async function cacheEvict(bin: string, files: string[]): Promise<{ bytes: number; cachedPagesBefore: number; cachedPagesAfter: number }> {
  const f = await figures(bin, files);
  return { bytes: f.bytes, cachedPagesBefore: f.cached_before, cachedPagesAfter: f.cached_after };
}

export interface SideFigures {
  bytes: number;
  seconds: number;
  /** user + system CPU seconds of the program. */
  cpu: number;
}

/**
 * The page path done by C: the (stopped) target's range read with process_vm_readv and written
 * into a loopback TCP connection, and on the other end written with O_DIRECT into a file in `dir`
 * and synced. Each side's CPU, and the pair's bytes per second.
 */
export async function pageLink(bin: string, dir: string, pid: number, range: Range): Promise<{ reader: SideFigures; writer: SideFigures }> {
  const writer = spawn(bin, ['recv', path.join(dir, 'page-link.bin')], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const lines = readline.createInterface({ input: writer.stdout });
    const it = lines[Symbol.asyncIterator]();
    const port = parseFigures(String((await it.next()).value ?? '')).port;
    if (!port) throw new Error('page-link recv did not say its port');
    const reader = await figures(bin, ['send', String(port), String(pid), `${hex(range[0])}:${range[1] - range[0]}`]);
    const w = parseFigures(String((await it.next()).value ?? ''));
    const side = (f: Record<string, number>): SideFigures => ({ bytes: f.bytes, seconds: f.seconds, cpu: f.cpu });
    return { reader: side(reader), writer: side(w) };
  } finally {
    writer.kill('SIGKILL');
  }
}
