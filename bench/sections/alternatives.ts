// Section 4: the pause of the tools people use today, on the same kind of 1 GiB target as the
// downtime section, in the same run:
//   gcore   (Debian's gdb) dumps a core of the running process: attach (stop), read and write
//           all memory, detach. Figure: wall time of `gcore` (the target is stopped for nearly
//           all of it; gdb's own start-up before the attach is included, so it is an upper bound);
//   criu    `criu dump --leave-running --display-stats`: its own frozen_time. Debian's 3.17 does
//           not start on this kernel; any failure is reported as unavailable, with the reason,
//           and no figure.

import { execFile } from 'node:child_process';
import { accessSync, constants, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Target } from '../../test/helpers/target';
import { onCleanup } from '../lib/cleanup';
import type { BenchContext } from '../lib/context';
import { scaled, stat, type Stat } from '../lib/stats';

const TARGET_MIB = 1024;

export type ToolFigure = { tool: string; available: true; pauseMs: Stat; what: string } | { tool: string; available: false; reason: string };

/** The first executable `name` on PATH, or null. */
export function onPath(name: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    const file = path.join(dir || '.', name);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      /* next */
    }
  }
  return null;
}

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
  seconds: number;
}

function runTool(bin: string, args: string[], timeoutMs: number): Promise<Ran> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const child = execFile(bin, args, { timeout: timeoutMs, maxBuffer: 8 << 20 }, (err, stdout, stderr) => {
      const seconds = (performance.now() - t0) / 1000;
      forget(); // it has exited: the kill is a no-op
      const code = err ? (typeof (err as NodeJS.ErrnoException).code === 'number' ? Number((err as NodeJS.ErrnoException).code) : 1) : 0;
      resolve({ code, stdout, stderr, seconds });
    });
    const forget = onCleanup(() => child.kill('SIGKILL'));
  });
}

const lastLine = (s: string) => s.trim().split('\n').filter(Boolean).pop() ?? '';

export async function runAlternatives(ctx: BenchContext): Promise<ToolFigure[]> {
  ctx.progress(`alternatives: gcore and criu on a ${TARGET_MIB} MiB target`);
  const target = await Target.start({ mib: TARGET_MIB, seed: 7 });
  const killTarget = onCleanup(() => void target.kill());
  const scratch = mkdtempSync(path.join(os.tmpdir(), 'precopy-bench-alt-'));
  const removeScratch = onCleanup(() => rmSync(scratch, { recursive: true, force: true }));
  try {
    return [await gcore(ctx, target, scratch), await criu(ctx, target, scratch)];
  } finally {
    killTarget();
    removeScratch();
  }
}

/** One pause in seconds, or why the tool cannot give one here. */
type Attempt = number | { reason: string };

/** Run `once` ctx.runs times with the tool found on PATH; the first failure makes it unavailable. */
async function measureTool(ctx: BenchContext, tool: string, what: string, once: (bin: string, run: number) => Promise<Attempt>): Promise<ToolFigure> {
  const bin = onPath(tool);
  if (!bin) return { tool, available: false, reason: `${tool} is not on PATH` };
  const pauses: number[] = [];
  for (let run = 0; run < ctx.runs; run++) {
    const got = await once(bin, run);
    if (typeof got !== 'number') return { tool, available: false, reason: got.reason };
    pauses.push(got);
    ctx.progress(`  run ${run + 1}: ${tool} ${(got * 1e3).toFixed(0)} ms`);
  }
  return { tool, available: true, pauseMs: scaled(stat(pauses), 1e3), what };
}

function gcore(ctx: BenchContext, target: Target, scratch: string): Promise<ToolFigure> {
  return measureTool(ctx, 'gcore', 'wall time of gcore (upper bound of the pause)', async (bin, run) => {
    const prefix = path.join(scratch, `core${run}`);
    const r = await runTool(bin, ['-o', prefix, String(target.pid)], 120_000);
    const core = `${prefix}.${target.pid}`;
    let size = 0;
    try {
      size = statSync(core).size;
    } catch {
      /* no core written */
    }
    rmSync(core, { force: true });
    if (r.code !== 0 || size < TARGET_MIB * 2 ** 20) {
      return { reason: `gcore failed (exit ${r.code}, core ${size} bytes): ${lastLine(r.stderr) || lastLine(r.stdout)}` };
    }
    return r.seconds;
  });
}

function criu(ctx: BenchContext, target: Target, scratch: string): Promise<ToolFigure> {
  return measureTool(ctx, 'criu', 'criu dump --leave-running frozen_time', async (bin, run) => {
    const dir = path.join(scratch, `criu${run}`);
    mkdirSync(dir);
    const r = await runTool(bin, ['dump', '-t', String(target.pid), '-D', dir, '--leave-running', '--shell-job', '--display-stats', '-o', 'dump.log'], 120_000);
    const m = /Frozen time:\s*(\d+)\s*us/i.exec(r.stdout + r.stderr);
    let log = '';
    try {
      // Its log says why it failed; the last "Error" line is the reason.
      log = readFileSync(path.join(dir, 'dump.log'), 'utf8');
    } catch {
      /* no log */
    }
    rmSync(dir, { recursive: true, force: true });
    if (r.code !== 0 || !m) {
      const why = r.code !== 0 ? `exit ${r.code}` : 'no frozen time in its output';
      const errors = log.split('\n').filter((l) => /Error/.test(l));
      const detail = lastLine(errors.join('\n')) || lastLine(r.stderr) || lastLine(r.stdout) || 'no output';
      return { reason: `criu dump failed (${why}): ${detail.trim()}` };
    }
    return Number(m[1]) / 1e6;
  });
}
