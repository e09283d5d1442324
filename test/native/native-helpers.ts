// Helpers shared by the native/ tests: walking PAGEMAP_SCAN in batches, turning regions into page
// sets, a seeded PRNG, polling, and running a child Node process (for SIGKILL and dropped-privilege
// tests).

import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  PAGE_IS_PFNZERO,
  PAGE_IS_PRESENT,
  PAGE_IS_SWAPPED,
  PAGE_IS_WRITTEN,
  PM_SCAN_CHECK_WPASYNC,
  PM_SCAN_WP_MATCHING,
  type ScanArgs,
  type Tracker,
} from '../../native';

/** Write-protecting scan that also fails on an unregistered VMA instead of skipping it. */
export const WP_SCAN = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC;
/** What "has data" means in the arming scan (docs/design.md, Kernel facts: before the pte markers exist). */
export const POPULATED = PAGE_IS_WRITTEN | PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_PFNZERO;

export interface Region {
  start: number;
  end: number;
  categories: number;
}

export interface Walk {
  regions: Region[];
  /** PAGEMAP_SCAN calls the walk took. */
  calls: number;
  /** Pages reported by each call. */
  pagesPerCall: number[];
}

/**
 * Walk [args.start, args.end) with repeated scans, each resumed from the previous walkEnd, with a
 * vec of `vecRegions` regions: the way the sender walks big areas in max_pages batches.
 */
export function walk(tr: Tracker, args: ScanArgs, vecRegions = 256, pageSize = 4096): Walk {
  const vec = new BigUint64Array(3 * vecRegions);
  const out: Walk = { regions: [], calls: 0, pagesPerCall: [] };
  let start = args.start;
  while (start < args.end) {
    const r = tr.scan({ ...args, start }, vec);
    out.calls++;
    let pages = 0;
    for (let i = 0; i < r.count; i++) {
      const reg = { start: Number(vec[3 * i]), end: Number(vec[3 * i + 1]), categories: Number(vec[3 * i + 2]) };
      pages += (reg.end - reg.start) / pageSize;
      out.regions.push(reg);
    }
    out.pagesPerCall.push(pages);
    if (r.walkEnd <= start) throw new Error(`scan made no progress at 0x${start.toString(16)}`);
    start = r.walkEnd;
  }
  return out;
}

/** Page indexes (relative to base) covered by regions. */
export function pagesOf(regions: Region[], base: number, pageSize = 4096): Set<number> {
  const s = new Set<number>();
  for (const r of regions) for (let a = r.start; a < r.end; a += pageSize) s.add((a - base) / pageSize);
  return s;
}

export const sorted = (s: Iterable<number>): number[] => [...s].sort((a, b) => a - b);
export const minus = (a: Set<number>, b: Set<number>): number[] => sorted([...a].filter((x) => !b.has(x)));

/** mulberry32: a small seeded PRNG, so every run writes the same "random" pages. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `count` distinct page indexes in [0, pages) from a seeded PRNG, plus a few adjacent runs. */
export function randomPages(seed: number, pages: number, count: number): Set<number> {
  const rnd = prng(seed);
  const s = new Set<number>();
  while (s.size < count) {
    const p = Math.floor(rnd() * pages);
    // every 10th pick starts a run of 1-8 neighbours: regions longer than one page
    const run = s.size % 10 === 0 ? 1 + Math.floor(rnd() * 8) : 1;
    for (let i = 0; i < run && p + i < pages && s.size < count; i++) s.add(p + i);
  }
  return s;
}

/** Consecutive runs [first, count] of a page set, for `write FIRST COUNT`. */
export function runs(pages: Set<number>): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const p of sorted(pages)) {
    const last = out[out.length - 1];
    if (last && last[0] + last[1] === p) last[1]++;
    else out.push([p, 1]);
  }
  return out;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Poll until cond() holds; throws with `what` after `limitMs` (a generous bound that only trips
 * when the property is broken, never a performance check).
 */
export async function waitFor(what: string, cond: () => boolean | Promise<boolean>, limitMs = 10000): Promise<void> {
  const deadline = Date.now() + limitMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** Syscall number each thread of pid is blocked in (/proc/PID/task/TID/syscall), -1 if running. */
export function blockedSyscalls(pid: number): Map<number, number> {
  const out = new Map<number, number>();
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      const s = fs.readFileSync(`/proc/${pid}/task/${tid}/syscall`, 'utf8').trim();
      out.set(Number(tid), s === 'running' ? -1 : Number(s.split(' ')[0]));
    } catch {
      // thread gone meanwhile
    }
  }
  return out;
}

/** TracerPid of every thread of pid (a tracer left attached to one thread shows here). */
export function threadTracers(pid: number): number[] {
  return fs.readdirSync(`/proc/${pid}/task`).map((tid) => {
    const m = /^TracerPid:\s*(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8'));
    return m ? Number(m[1]) : -1;
  });
}

/** Compiled child scripts of these tests (dist/test/native/fixtures/). */
export const FIXTURES = path.join(__dirname, 'fixtures');

/** A child process whose stdout lines can be awaited. */
export class ChildLines {
  readonly proc: ChildProcess;
  private lines: string[] = [];
  private waiters: Array<() => void> = [];
  private buf = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr = '';

  constructor(command: string, args: string[], opts: SpawnOptions = {}) {
    this.proc = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'], ...opts });
    this.proc.stdout!.on('data', (d: Buffer) => {
      this.buf += d.toString();
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        this.lines.push(this.buf.slice(0, nl));
        this.buf = this.buf.slice(nl + 1);
      }
      for (const w of this.waiters.splice(0)) w();
    });
    this.proc.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.exited = new Promise((resolve) => this.proc.once('exit', (code, signal) => resolve({ code, signal })));
    this.exited.then(() => {
      for (const w of this.waiters.splice(0)) w();
    });
  }

  /** Next stdout line (rejects if the child exits first). */
  async line(): Promise<string> {
    for (;;) {
      const l = this.lines.shift();
      if (l !== undefined) return l;
      if (this.proc.exitCode !== null || this.proc.signalCode !== null)
        throw new Error(`child exited (${this.proc.exitCode ?? this.proc.signalCode}): ${this.stderr.trim()}`);
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }

  /** Forget the lines printed so far (the next line() waits for a new one). */
  drain(): void {
    this.lines = [];
  }

  /** Send one line on stdin, return the next line of stdout. */
  async ask(line: string): Promise<string> {
    this.proc.stdin!.write(line + '\n');
    return this.line();
  }

  async kill(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
    await this.exited;
  }
}

/** A child Node process running one of the compiled fixtures (dist/test/native/fixtures/). */
export function childNode(script: string, args: string[], opts: SpawnOptions = {}): ChildLines {
  return new ChildLines(process.execPath, [path.join(FIXTURES, script), ...args], opts);
}
