// End-to-end test support: run the real sender CLI as a process, export a committed image with the
// real receiver CLI, and judge fidelity by reading the stopped target through /proc/PID/mem with
// the tests' own maps parser (test/helpers/procmem.ts), never the sender's code.

import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ExecutionContext } from 'ava';
import { REPO_ROOT } from './target';
import { startReceiver, type ReceiverHandle } from './receiver';
import { readMaps, readMem, type MapEntry } from './procmem';
import type { MigrationSummary } from '../../sender/report/figures';

export const SENDER_CLI = path.join(REPO_ROOT, 'dist', 'sender', 'cli.js');
export const RECEIVER_CLI = path.join(REPO_ROOT, 'dist', 'receiver', 'cli.js');
const PAGE = 4096;

export interface ProcessRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface SenderRun extends ProcessRun {
  /** The --json document when the run printed one. */
  summary: MigrationSummary | null;
}

/** Wait for a spawned process, collecting its output. */
export function collect(child: ChildProcess): Promise<ProcessRun> {
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

export type Spawner = (cmd: string, args: string[]) => ChildProcess;
const plainSpawn: Spawner = (cmd, args) => spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });

/** `node dist/sender/cli.js migrate ARGS --json` (json added unless asked not to). */
export async function runSender(args: string[], opts: { spawner?: Spawner; json?: boolean; env?: NodeJS.ProcessEnv } = {}): Promise<SenderRun> {
  const json = opts.json ?? true;
  const full = ['migrate', ...args, ...(json ? ['--json'] : [])];
  const spawner = opts.spawner ?? ((cmd, a) => spawn(cmd, a, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } }));
  const run = await collect(spawner(process.execPath, [SENDER_CLI, ...full]));
  let summary: MigrationSummary | null = null;
  if (json && run.code === 0) {
    try {
      summary = JSON.parse(run.stdout) as MigrationSummary;
    } catch {
      throw new Error(`sender printed no JSON document:\n${run.stdout}\n${run.stderr}`);
    }
  }
  return { ...run, summary };
}

/** Start the sender without waiting (for tests that act on the target meanwhile). `until`
 *  resolves once its stdout (the human table without --json) matches a pattern. */
export function startSender(args: string[], opts: { spawner?: Spawner; json?: boolean } = {}) {
  const json = opts.json ?? true;
  const child = (opts.spawner ?? plainSpawn)(process.execPath, [SENDER_CLI, 'migrate', ...args, ...(json ? ['--json'] : [])]);
  let live = '';
  child.stdout?.on('data', (d: Buffer) => (live += d.toString()));
  const done: Promise<SenderRun> = collect(child).then((run) => {
    let summary: MigrationSummary | null = null;
    if (json && run.code === 0) summary = JSON.parse(run.stdout) as MigrationSummary;
    return { ...run, summary };
  });
  const until = async (pattern: RegExp): Promise<boolean> => {
    while (!pattern.test(live)) {
      if (child.exitCode !== null || child.signalCode !== null) return false;
      await new Promise((r) => setTimeout(r, 20));
    }
    return true;
  };
  return { child, done, until };
}

export function describeRun(r: ProcessRun): string {
  return `exit ${r.code ?? r.signal}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
}

export async function receiverCli(args: string[]): Promise<ProcessRun> {
  return collect(plainSpawn(process.execPath, [RECEIVER_CLI, ...args]));
}

/** `receiver export --format raw` of a committed session into a fresh directory. */
export async function exportRaw(imagesDir: string, session: string): Promise<string> {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'precopy-export-'));
  fs.rmSync(out, { recursive: true });
  const run = await receiverCli(['export', '--images', imagesDir, session, '--format', 'raw', '--out', out]);
  if (run.code !== 0) throw new Error(`receiver export failed: ${describeRun(run)}`);
  return out;
}

const SPECIAL = new Set(['[vvar]', '[vvar_vclock]', '[vdso]', '[vsyscall]']);

/** Private mappings and shared-anonymous ones (shmem without a file of its own). */
export function isPrivateOrSharedAnon(v: MapEntry): boolean {
  if (SPECIAL.has(v.path)) return false;
  if (v.perms[3] === 'p') return true;
  return v.path === '' || v.path.startsWith('/dev/zero') || v.path.startsWith('/SYSV');
}

export interface FidelityResult {
  vmas: number;
  pages: number;
  /** Mappings left out: inaccessible (---) mappings the image does not carry. */
  skipped: string[];
  /** The first difference found, in words; undefined when the image equals the memory. */
  problem?: string;
}

/**
 * Compare every page of every private or shared-anonymous VMA of the (stopped) target with the
 * raw export, reading the target through /proc/PID/mem. Stops at the first difference.
 */
export function compareImageWithMemory(pid: number, exportDir: string): FidelityResult {
  const result: FidelityResult = { vmas: 0, pages: 0, skipped: [] };
  const chunk = 4 << 20;
  for (const v of readMaps(pid).filter(isPrivateOrSharedAnon)) {
    const name = `${v.start.toString(16)}-${v.end.toString(16)}`;
    const what = `${v.perms} ${v.path || '(anonymous)'}`;
    const file = path.join(exportDir, `${name}.bin`);
    if (!fs.existsSync(file)) {
      // A mapping that can be neither read nor written holds nothing the process can see now;
      // the image may leave it out. Any other mapping must be there.
      if (v.perms.startsWith('---')) {
        result.skipped.push(`${name} ${what}`);
        continue;
      }
      return { ...result, problem: `the export has no ${name}.bin for ${what}` };
    }
    const size = fs.statSync(file).size;
    if (size !== v.end - v.start) return { ...result, problem: `${name}.bin holds ${size} bytes, the mapping ${v.end - v.start}` };
    const fd = fs.openSync(file, 'r');
    try {
      for (let off = 0; off < size; off += chunk) {
        const len = Math.min(chunk, size - off);
        const mem = readMem(pid, v.start + off, len);
        const img = Buffer.alloc(len);
        fs.readSync(fd, img, 0, len, off);
        if (mem.equals(img)) continue;
        for (let p = 0; p < len; p += PAGE) {
          if (mem.subarray(p, p + PAGE).equals(img.subarray(p, p + PAGE))) continue;
          const addr = v.start + off + p;
          const problem =
            `page 0x${addr.toString(16)} of ${what} differs: memory ${mem.subarray(p, p + 16).toString('hex')}..., ` +
            `image ${img.subarray(p, p + 16).toString('hex')}...`;
          return { ...result, problem };
        }
      }
    } finally {
      fs.closeSync(fd);
    }
    result.vmas++;
    result.pages += size / PAGE;
  }
  return result;
}

/** The fidelity assertion of the e2e tests: the image equals the stopped target's memory. */
export function assertImageEqualsMemory(t: ExecutionContext, pid: number, exportDir: string): FidelityResult {
  const r = compareImageWithMemory(pid, exportDir);
  if (r.problem) t.fail(r.problem);
  else t.true(r.pages > 0, 'compared some pages');
  t.log(`fidelity: ${r.pages} pages in ${r.vmas} mappings equal${r.skipped.length ? `; ${r.skipped.length} inaccessible mappings not in the image` : ''}`);
  return r;
}

/** Resume a process left stopped by --after stop, then kill it (test cleanup). */
export function killStopped(pid: number): void {
  for (const sig of ['SIGKILL', 'SIGCONT'] as const) {
    try {
      process.kill(pid, sig);
    } catch {
      /* gone */
    }
  }
}

const madeDirs: string[] = [];

/** A new directory under the system's temp dir, removed when this process exits (each test file
 *  runs in a process of its own) unless `keep`: the caller decides (the demo may leave its images). */
export function tempDir(prefix: string, opts: { keep?: boolean } = {}): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  if (!opts.keep) {
    if (madeDirs.length === 0) process.on('exit', removeMadeDirs);
    madeDirs.push(dir);
  }
  return dir;
}

function removeMadeDirs(): void {
  for (const dir of madeDirs) {
    try {
      fs.rmSync(dir, { recursive: true, force: true });
    } catch {
      /* still a mount point (a failed disk-full test): left behind */
    }
  }
}

/** Private file mappings holding anonymous (copied-on-write) pages, from /proc/PID/smaps. */
export function privateFileCopies(pid: number): { start: number; end: number; perms: string; path: string; anonKiB: number }[] {
  const out: { start: number; end: number; perms: string; path: string; anonKiB: number }[] = [];
  let cur: { start: number; end: number; perms: string; path: string; anonKiB: number } | null = null;
  for (const line of fs.readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) (\S+) [0-9a-f]+ \S+ (\d+)\s*(.*)$/.exec(line);
    if (head) {
      cur =
        head[4] !== '0' && head[3][3] === 'p' ? { start: parseInt(head[1], 16), end: parseInt(head[2], 16), perms: head[3], path: head[5], anonKiB: 0 } : null;
      continue;
    }
    const anon = /^Anonymous:\s+(\d+) kB/.exec(line);
    if (anon && cur && Number(anon[1]) > 0) {
      cur.anonKiB = Number(anon[1]);
      out.push(cur);
    }
  }
  return out;
}

/** One receiver process (and its images directory) for every test of a file. */
export function useReceiver(test: import('ava').TestFn, prefix: string): { receiver(): ReceiverHandle; images(): string } {
  let receiver: ReceiverHandle | undefined;
  let images: string | undefined;
  test.before(async () => {
    images = tempDir(prefix);
    receiver = await startReceiver({ images });
  });
  test.after.always(async () => {
    await receiver?.stop();
    if (images) fs.rmSync(images, { recursive: true, force: true });
  });
  return { receiver: () => receiver!, images: () => images! };
}
