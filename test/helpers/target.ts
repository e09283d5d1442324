// (Over 400 lines on purpose: one class per workload process, one method per protocol command.)
// Drives test/workloads/bin/target (protocol: test/workloads/README.md) from tests.
// One Target = one live process; commands are serialised (one line out, one line back).
// Every target is SIGKILLed when the test process exits; the target also dies by itself on stdin EOF
// or when its parent dies (PR_SET_PDEATHSIG), so a crashed test never leaks targets.

import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import * as path from 'node:path';

/** Source-tree root, from dist/test/helpers/. */
export const REPO_ROOT = path.resolve(__dirname, '..', '..', '..');
export const TARGET_BIN = path.join(REPO_ROOT, 'test', 'workloads', 'bin', 'target');

export interface TargetOptions {
  /** Main private anonymous area in MiB (default 64). */
  mib?: number;
  /** Seed of the page contents (default 1). */
  seed?: number;
  /** Align main to 2 MiB and madvise(MADV_HUGEPAGE). */
  thp?: boolean;
  /** Size of a MAP_SHARED|MAP_ANONYMOUS area in MiB, filled like main (default none). */
  sharedMib?: number;
  /** Existing file to map MAP_PRIVATE read-write (needs filePages). */
  file?: string;
  filePages?: number;
}

export type Prot = 'r' | 'rw' | 'none';

export interface TargetInfo {
  base: number;
  pages: number;
  shared: number;
  sharedPages: number;
  file: number;
  filePages: number;
  threads: number;
}

export interface CheckResult {
  /** Main pages whose content does not match their header (all-zero pages count as good). */
  bad: number;
  /** Index of the first bad page, when bad > 0. */
  first?: number;
}

export interface SleepStats {
  /** Completed 50 ms sleeps. */
  count: number;
  /** Worst lateness of one sleep, microseconds. */
  maxOvershootUs: number;
  /** Sleeps that returned an error or woke early, plus failed reads of the blocked reader. */
  errors: number;
}

export interface ChildStats {
  sigchld: number;
  forks: number;
  anomalies: number;
  maxrssKiB: number;
  utimeUs: number;
  stimeUs: number;
}

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

const live = new Set<ChildProcessWithoutNullStreams>();
process.on('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

const hex = (n: number) => '0x' + n.toString(16);

/** Parse `key=value` fields of a reply line into numbers (hex or decimal). */
export function replyFields(line: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of line.matchAll(/(\w+)=(0x[0-9a-fA-F]+|\d+)/g)) out[m[1]] = Number(m[2]);
  return out;
}

interface Pending {
  resolve(line: string): void;
  reject(err: Error): void;
  /** Take the next line whatever it says (the `ready` line of a program started by `exec`). */
  raw?: boolean;
}

export class Target {
  readonly pid: number;
  /** Address of main page 0. */
  readonly base: number;
  /** Number of main pages. */
  readonly pages: number;
  readonly pageSize: number;
  /** Address of the shared-anonymous area, 0 if none. */
  readonly shared: number;
  /** Address of the private file mapping, 0 if none. */
  readonly file: number;
  readonly seed: number;

  private readonly proc: ChildProcessWithoutNullStreams;
  private readonly pending: Pending[] = [];
  private queue: Promise<unknown> = Promise.resolve();
  private buf = '';
  private stderrTail = '';
  private exitStatus: ExitStatus | null = null;
  private readonly exited: Promise<ExitStatus>;

  private constructor(proc: ChildProcessWithoutNullStreams, ready: string, seed: number) {
    this.proc = proc;
    const f = replyFields(ready);
    this.pid = f.pid;
    this.base = f.base;
    this.pages = f.pages;
    this.pageSize = f.pagesize;
    this.shared = f.shared;
    this.file = f.file;
    this.seed = seed;
    this.exited = new Promise((resolve) => {
      proc.once('exit', (code, signal) => {
        live.delete(proc);
        this.exitStatus = { code, signal };
        const err = new Error(`target ${this.pid} exited (code ${code}, signal ${signal})${this.stderrHint()}`);
        for (const p of this.pending.splice(0)) p.reject(err);
        resolve(this.exitStatus);
      });
    });
  }

  /** Spawn bin/target and wait for its ready line. */
  static start(opts: TargetOptions = {}): Promise<Target> {
    const args: string[] = [];
    if (opts.mib !== undefined) args.push('--mib', String(opts.mib));
    const seed = opts.seed ?? 1;
    args.push('--seed', String(seed));
    if (opts.thp) args.push('--thp');
    if (opts.sharedMib) args.push('--shared-mib', String(opts.sharedMib));
    if (opts.file !== undefined) args.push('--file', opts.file, '--file-pages', String(opts.filePages ?? 0));
    const proc = spawn(TARGET_BIN, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    live.add(proc);
    proc.stdin.on('error', () => {}); // EPIPE after the target died: reported through 'exit'
    proc.stdout.setEncoding('utf8');
    proc.stderr.setEncoding('utf8');
    return new Promise<Target>((resolve, reject) => {
      let early = '';
      let stderr = '';
      const onErr = (d: string) => (stderr += d);
      const onOut = (d: string) => {
        early += d;
        const nl = early.indexOf('\n');
        if (nl < 0) return;
        cleanup();
        const line = early.slice(0, nl);
        if (!line.startsWith('ready ')) {
          proc.kill('SIGKILL');
          reject(new Error(`target: unexpected first line ${JSON.stringify(line)} ${stderr}`));
          return;
        }
        const t = new Target(proc, line, seed);
        t.stderrTail = stderr;
        t.attach(early.slice(nl + 1));
        resolve(t);
      };
      const onExit = (code: number | null, signal: string | null) => {
        cleanup();
        live.delete(proc);
        reject(new Error(`target exited before ready (code ${code}, signal ${signal}): ${stderr.trim()}`));
      };
      const onSpawnErr = (e: Error) => {
        cleanup();
        live.delete(proc);
        reject(new Error(`cannot start ${TARGET_BIN} (run npm run build): ${e.message}`));
      };
      const cleanup = () => {
        proc.stdout.off('data', onOut);
        proc.stderr.off('data', onErr);
        proc.off('exit', onExit);
        proc.off('error', onSpawnErr);
      };
      proc.stdout.on('data', onOut);
      proc.stderr.on('data', onErr);
      proc.once('exit', onExit);
      proc.once('error', onSpawnErr);
    });
  }

  private attach(rest: string): void {
    this.buf = rest;
    this.proc.stdout.on('data', (d: string) => {
      this.buf += d;
      this.drainLines();
    });
    this.proc.stderr.on('data', (d: string) => {
      this.stderrTail = (this.stderrTail + d).slice(-2000);
    });
  }

  private drainLines(): void {
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      const p = this.pending.shift();
      if (!p) continue; // nothing asked: ignore (should not happen)
      if (line.startsWith('ok') || p.raw) p.resolve(line);
      else p.reject(new Error(`target ${this.pid}: ${line}`));
    }
  }

  private stderrHint(): string {
    const s = this.stderrTail.trim();
    return s ? `; stderr: ${s}` : '';
  }

  /** Whether the process has exited. */
  get alive(): boolean {
    return this.exitStatus === null;
  }

  /** Address of main page i. */
  pageAddr(i: number): number {
    return this.base + i * this.pageSize;
  }

  /**
   * Send one command line; resolves with the whole reply line (`ok ...`), rejects on `err ...`
   * or if the target exits first. Commands are serialised.
   */
  cmd(line: string): Promise<string> {
    const run = () =>
      new Promise<string>((resolve, reject) => {
        if (this.exitStatus) {
          reject(new Error(`target ${this.pid} has exited; cannot send ${JSON.stringify(line)}`));
          return;
        }
        this.pending.push({ resolve, reject });
        this.proc.stdin.write(line + '\n');
      });
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => {});
    return p;
  }

  async info(): Promise<TargetInfo> {
    const f = replyFields(await this.cmd('info'));
    return {
      base: f.base,
      pages: f.pages,
      shared: f.shared,
      sharedPages: f.shared_pages,
      file: f.file,
      filePages: f.file_pages,
      threads: f.threads,
    };
  }

  /** Rewrite main pages [first, first+count) with generation+1. */
  async write(first: number, count = 1): Promise<void> {
    await this.cmd(`write ${first} ${count}`);
  }

  /** Rewrite `count` pages at an absolute address (must be mapped writable). */
  async writep(addr: number, count = 1): Promise<void> {
    await this.cmd(`writep ${hex(addr)} ${count}`);
  }

  /** Start writer threads rewriting random main pages at bytesPerSec in total (0 = flat out). */
  async writers(threads: number, bytesPerSec = 0): Promise<void> {
    await this.cmd(`writers ${threads} ${bytesPerSec}`);
  }

  /** Stop the writers; returns how many pages they wrote. */
  async stopWriters(): Promise<number> {
    return replyFields(await this.cmd('stop-writers')).written;
  }

  /** Verify every main page against its header (writers paused meanwhile). */
  async check(): Promise<CheckResult> {
    const f = replyFields(await this.cmd('check'));
    return f.bad ? { bad: f.bad, first: f.first } : { bad: 0 };
  }

  /** New private anonymous mapping, filled, then given `prot`. Returns its address. */
  async mmap(pages: number, prot: Prot = 'rw'): Promise<number> {
    return replyFields(await this.cmd(`mmap ${pages} ${prot}`)).addr;
  }

  /** New private anonymous mapping exactly at addr (refused if anything is mapped there), filled. */
  async mmapAt(addr: number, pages: number): Promise<number> {
    return replyFields(await this.cmd(`mmapat ${hex(addr)} ${pages}`)).addr;
  }

  async munmap(addr: number, pages: number): Promise<void> {
    await this.cmd(`munmap ${hex(addr)} ${pages}`);
  }

  /** mremap with MREMAP_MAYMOVE; a grown tail is left unpopulated. Returns the new address. */
  async mremap(addr: number, oldPages: number, newPages: number): Promise<number> {
    return replyFields(await this.cmd(`mremap ${hex(addr)} ${oldPages} ${newPages}`)).addr;
  }

  async mprotect(addr: number, pages: number, prot: Prot): Promise<void> {
    await this.cmd(`mprotect ${hex(addr)} ${pages} ${prot}`);
  }

  /** MADV_DONTNEED on main pages [first, first+count). */
  async dontneed(first: number, count = 1): Promise<void> {
    await this.cmd(`dontneed ${first} ${count}`);
  }

  /** Grow the heap by `pages` (sbrk) and fill them. Returns the address of the first new page. */
  async brk(pages: number): Promise<number> {
    return replyFields(await this.cmd(`brk ${pages}`)).addr;
  }

  /** Grow the main thread's stack by about `kib` KiB (recursion, then return). */
  async stack(kib: number): Promise<void> {
    await this.cmd(`stack ${kib}`);
  }

  /** Rewrite page `page` of the private file mapping (copy-on-write). */
  async filewrite(page: number): Promise<void> {
    await this.cmd(`filewrite ${page}`);
  }

  /** Fork a child that keeps rewriting its copy of main (dies with the target). Returns its pid. */
  async fork(): Promise<number> {
    return replyFields(await this.cmd('fork')).pid;
  }

  /** Start the sleeper thread (50 ms sleeps) and the reader thread blocked on a pipe. */
  async blockers(): Promise<void> {
    await this.cmd('blockers');
  }

  /** Write a byte to the blocked reader's pipe; resolves once the reader got it. */
  async ping(): Promise<void> {
    await this.cmd('ping');
  }

  async sleepStats(): Promise<SleepStats> {
    const f = replyFields(await this.cmd('sleepstats'));
    return { count: f.count, maxOvershootUs: f.max_overshoot_us, errors: f.errors };
  }

  /** madvise(MADV_WIPEONFORK or MADV_DONTFORK) on pages of an area (from mmap()). */
  async madvise(addr: number, pages: number, advice: 'wipeonfork' | 'dontfork'): Promise<void> {
    await this.cmd(`madvise ${hex(addr)} ${pages} ${advice}`);
  }

  /** prctl(PR_SET_CHILD_SUBREAPER): orphans below it become its children. */
  async subreaper(): Promise<void> {
    await this.cmd('subreaper');
  }

  /** Count the SIGCHLDs the target receives from now on (childStats().sigchld). */
  async countSigchld(): Promise<void> {
    await this.cmd('sigchld');
  }

  /** A thread that forks a child and waits for it, over and over, counting anything unexpected. */
  async forkLoop(on: boolean): Promise<void> {
    await this.cmd(`forkloop ${on ? 'on' : 'off'}`);
  }

  /** SIGCHLDs counted, fork loop figures, getrusage(RUSAGE_CHILDREN). */
  async childStats(): Promise<ChildStats> {
    const f = replyFields(await this.cmd('childstats'));
    return { sigchld: f.sigchld, forks: f.forks, anomalies: f.anomalies, maxrssKiB: f.maxrss_kib, utimeUs: f.utime_us, stimeUs: f.stime_us };
  }

  /** Open fds of the target: fd number → /proc/self/fd link target. */
  async fds(): Promise<Map<number, string>> {
    const line = await this.cmd('fds');
    const out = new Map<number, string>();
    for (const tok of line.split(' ').slice(1)) {
      const eq = tok.indexOf('=');
      if (eq > 0) out.set(Number(tok.slice(0, eq)), tok.slice(eq + 1));
    }
    return out;
  }

  /**
   * `exec`: the target replaces itself (execve, same pid, a new address space, every other thread
   * gone) with bin/target started with the same arguments, and resolves once the new program is
   * ready. It answers commands as before; its main area is new (`base`/`pages` of this object
   * describe the first program; the new ones are returned).
   */
  async exec(): Promise<{ base: number; pages: number }> {
    const ready = this.queue.then(
      () =>
        new Promise<string>((resolve, reject) => {
          if (this.exitStatus) return reject(new Error(`target ${this.pid} has exited; cannot exec`));
          const next: Pending = { resolve, reject, raw: true };
          const refused = (err: Error) => {
            const i = this.pending.indexOf(next); // no program comes: no ready line to wait for
            if (i >= 0) this.pending.splice(i, 1);
            reject(err);
          };
          this.pending.push({ resolve: () => {}, reject: refused }, next);
          this.proc.stdin.write('exec\n');
        }),
    );
    this.queue = ready.catch(() => {});
    const line = await ready;
    if (!line.startsWith('ready ')) throw new Error(`target ${this.pid}: after exec: ${line}`);
    const f = replyFields(line);
    return { base: f.base, pages: f.pages };
  }

  /** `exec PATH ARGS...`: the target replaces itself with another program (e.g. /bin/sleep 60),
   *  which speaks no protocol: only kill() and waitExit() make sense afterwards. */
  async execProgram(file: string, ...args: string[]): Promise<void> {
    await this.cmd(['exec', file, ...args].join(' '));
  }

  /** Ask the target to exit 0 and wait for it. */
  async exit(): Promise<ExitStatus> {
    if (this.exitStatus) return this.exitStatus;
    await this.queue;
    this.proc.stdin.write('exit\n');
    return this.exited;
  }

  /** SIGKILL the target (if alive) and wait for it to be reaped. */
  kill(): Promise<ExitStatus> {
    if (!this.exitStatus) this.proc.kill('SIGKILL');
    return this.exited;
  }

  /** Close the command pipe, as a crashed test would: the target exits on stdin EOF. */
  closeStdin(): void {
    this.proc.stdin.end();
  }

  waitExit(): Promise<ExitStatus> {
    return this.exited;
  }
}

/** Start a target, run fn with it, always kill it afterwards. */
export async function withTarget<T>(opts: TargetOptions, fn: (t: Target) => Promise<T>): Promise<T> {
  const target = await Target.start(opts);
  try {
    return await fn(target);
  } finally {
    await target.kill();
  }
}

// ---- expected page contents (mirror of fill_page in target.c) ----

const M64 = (1n << 64n) - 1n;

function splitmixNext(state: { s: bigint }): bigint {
  state.s = (state.s + 0x9e3779b97f4a7c15n) & M64;
  let z = state.s;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M64;
  return z ^ (z >> 31n);
}

/**
 * The 4096 bytes bin/target writes for (seed, index, generation): header {u32 index, u32 gen},
 * then splitmix64 words. Slow (BigInt): for spot checks of a few pages.
 */
export function expectedPage(seed: number, index: number, gen: number, pageSize = 4096): Buffer {
  const st = { s: ((BigInt(seed) * 0xd1342543de82ef95n) & M64) ^ ((BigInt(index) << 32n) | BigInt(gen)) };
  st.s = splitmixNext(st);
  const b = Buffer.alloc(pageSize);
  b.writeUInt32LE(index, 0);
  b.writeUInt32LE(gen, 4);
  for (let off = 8; off < pageSize; off += 8) b.writeBigUInt64LE(splitmixNext(st), off);
  return b;
}

/** Header {index, generation} of a page image. */
export function pageHeader(page: Buffer): { index: number; gen: number } {
  return { index: page.readUInt32LE(0), gen: page.readUInt32LE(4) };
}
