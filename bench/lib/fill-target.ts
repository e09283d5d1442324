// Drives bench/baselines/fill-target (one populated area of random or text-like pages, optionally
// at the start of a big sparse reservation). One command line out, one reply line back.

import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import * as readline from 'node:readline';
import { onCleanup } from './cleanup';
import { parseFigures } from './baselines';

export type Fill = 'random' | 'text';

export interface FillTargetOptions {
  mib: number;
  fill: Fill;
  /** Map this many GiB (MAP_NORESERVE) and populate only the first `mib` MiB. */
  reserveGib?: number;
  /** On stdin EOF, stay this many seconds before exiting (a restored copy: its stdin is /dev/null). */
  lingerSeconds?: number;
}

export class FillTarget {
  private readonly replies: ((line: string) => void)[] = [];

  private constructor(
    private readonly proc: ChildProcessWithoutNullStreams,
    lines: readline.Interface,
    readonly pid: number,
    readonly base: number,
    readonly pages: number,
    /** Pages mapped (the reservation), populated or not. */
    readonly mappedPages: number,
    private readonly stop: () => void,
  ) {
    lines.on('line', (l) => this.replies.shift()?.(l));
  }

  static async start(bin: string, opts: FillTargetOptions): Promise<FillTarget> {
    const args = ['--mib', String(opts.mib), '--fill', opts.fill];
    if (opts.reserveGib) args.push('--reserve-gib', String(opts.reserveGib));
    if (opts.lingerSeconds) args.push('--linger', String(opts.lingerSeconds));
    const proc = spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const stop = onCleanup(() => proc.kill('SIGKILL'));
    let stderr = '';
    proc.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const lines = readline.createInterface({ input: proc.stdout });
    const ready = await new Promise<string>((resolve, reject) => {
      lines.once('line', resolve);
      proc.once('exit', (code) => reject(new Error(`fill-target exited (${code}) before ready: ${stderr.trim()}`)));
    });
    // The ready line's base is a %p pointer: hex, parsed separately from the decimal figures.
    const f = parseFigures(ready);
    const base = Number.parseInt(/base=0x([0-9a-f]+)/.exec(ready)?.[1] ?? '', 16);
    if (!f.pid || !Number.isFinite(base)) throw new Error(`fill-target: unexpected ready line ${JSON.stringify(ready)}`);
    return new FillTarget(proc, lines, f.pid, base, f.pages, f.reserve_pages, stop);
  }

  /** Write into `count` random pages of the populated area. */
  dirty(count: number): Promise<string> {
    return new Promise((resolve, reject) => {
      this.replies.push((l) => (l.startsWith('ok') ? resolve(l) : reject(new Error(`fill-target: ${l}`))));
      this.proc.stdin.write(`dirty ${count}\n`);
    });
  }

  /** Resolves once it has exited and been reaped (its pid is free), whoever killed it. */
  exited(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) {
      this.stop(); // forget the undo step: nothing left to kill
      return Promise.resolve();
    }
    return new Promise((resolve) =>
      this.proc.once('exit', () => {
        this.stop();
        resolve();
      }),
    );
  }

  /** SIGKILL it and wait until it is gone. */
  async kill(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return this.stop();
    const gone = new Promise((r) => this.proc.once('exit', r));
    this.stop();
    await gone;
  }
}
