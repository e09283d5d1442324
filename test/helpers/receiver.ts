// A real receiver process for tests: `node dist/receiver/cli.js serve --listen HOST:0 --images DIR`,
// ready once it printed `receiver listening on HOST:PORT`. Its stderr (logs) is kept for failure
// messages and echoed when PRECOPY_TEST_VERBOSE is set.

import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import * as readline from 'node:readline';

export const RECEIVER_CLI = path.resolve(__dirname, '..', '..', 'receiver', 'cli.js');

export interface StartReceiverOptions {
  /** Images directory (--images). */
  images: string;
  /** --listen (default 127.0.0.1:0). */
  listen?: string;
  /** More `receiver serve` flags. */
  args?: string[];
  /** Extra environment (e.g. PRECOPY_FAULT_STORE_CRASH_AT). */
  env?: NodeJS.ProcessEnv;
  /** How to start the process (default: child_process.spawn), e.g. inside a network namespace. */
  spawner?: (cmd: string, args: string[]) => ChildProcess;
  /** Give up waiting for the ready line after this long (default 20 s). */
  readyTimeoutMs?: number;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ReceiverHandle {
  /** HOST:PORT as printed by the receiver. */
  readonly address: string;
  readonly host: string;
  readonly port: number;
  readonly pid: number;
  readonly child: ChildProcess;
  /** Resolves when the process has exited. */
  readonly exited: Promise<Exit>;
  /** Everything the receiver wrote on stderr so far. */
  stderr(): string;
  /** Everything it wrote on stdout so far (the ready line included). */
  stdout(): string;
  /** Send `signal` (default SIGTERM) and wait for the exit; SIGKILL after timeoutMs (default 30 s). */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<Exit>;
  /** kill -9 and wait for the exit. */
  kill(): Promise<Exit>;
}

const READY = /^receiver listening on (.+):(\d+)$/;

export async function startReceiver(opts: StartReceiverOptions): Promise<ReceiverHandle> {
  const args = [RECEIVER_CLI, 'serve', '--listen', opts.listen ?? '127.0.0.1:0', '--images', opts.images, ...(opts.args ?? [])];
  const child = opts.spawner
    ? opts.spawner(process.execPath, args)
    : spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
  let err = '';
  let out = '';
  const verbose = !!process.env.PRECOPY_TEST_VERBOSE;
  child.stderr!.setEncoding('utf8').on('data', (s: string) => {
    err += s;
    if (err.length > 1 << 20) err = err.slice(-(1 << 19));
    if (verbose) process.stderr.write(`[receiver ${child.pid}] ${s}`);
  });
  const exited = new Promise<Exit>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const lines = readline.createInterface({ input: child.stdout! });

  const ready = await new Promise<{ host: string; port: number }>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`receiver did not report ready within ${(opts.readyTimeoutMs ?? 20_000) / 1000}s; stderr:\n${err}`));
    }, opts.readyTimeoutMs ?? 20_000);
    lines.on('line', (line) => {
      out += `${line}\n`;
      const m = READY.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve({ host: m[1], port: Number(m[2]) });
      }
    });
    void exited.then((e) => {
      clearTimeout(timer);
      reject(new Error(`receiver exited before it was ready (code ${e.code}, signal ${e.signal}); stderr:\n${err}`));
    });
  });

  const stop = async (signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 30_000): Promise<Exit> => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    const e = await exited;
    clearTimeout(timer);
    return e;
  };
  return {
    address: `${ready.host}:${ready.port}`,
    host: ready.host,
    port: ready.port,
    pid: child.pid!,
    child,
    exited,
    stderr: () => err,
    stdout: () => out,
    stop,
    kill: () => stop('SIGKILL'),
  };
}
