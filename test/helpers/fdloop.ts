// Drives test/workloads/bin/fdloop (protocol in the comment at the top of fdloop.c): a process
// whose state lives in file descriptors, controlled over its own listening TCP socket.

import { spawn, type ChildProcess } from 'node:child_process';
import * as net from 'node:net';
import * as path from 'node:path';
import { REPO_ROOT } from './target';

export const FDLOOP_BIN = path.join(REPO_ROOT, 'test', 'workloads', 'bin', 'fdloop');

export interface Fdloop {
  pid: number;
  port: number;
  child: ChildProcess;
  /** Sends one control line, resolves with the one-line answer. */
  ask(command: string, port?: number): Promise<string>;
  kill(): void;
}

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

/** One control exchange with an fdloop listening on `port` (also after it was restored). */
export function askFdloop(port: number, command: string, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let got = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`fdloop on port ${port}: no answer to ${command} in ${timeoutMs} ms`));
    }, timeoutMs);
    s.on('connect', () => s.write(`${command}\n`));
    s.on('data', (d) => (got += d));
    s.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    s.on('close', () => {
      clearTimeout(timer);
      resolve(got.trim());
    });
  });
}

/** Starts fdloop on a free port pair with `extra` flags; kill it when done. */
export async function startFdloop(logFile: string, extra: string[] = []): Promise<Fdloop> {
  for (let attempt = 0; ; attempt++) {
    const port = 20000 + Math.floor(Math.random() * 20000) * 2;
    const child = spawn(FDLOOP_BIN, [String(port), logFile, ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(child);
    child.on('exit', () => live.delete(child));
    let err = '';
    child.stderr!.on('data', (d) => (err += d));
    const line = await new Promise<string | null>((resolve) => {
      let out = '';
      child.stdout!.on('data', (d) => {
        out += d;
        if (out.includes('\n')) resolve(out.split('\n')[0]);
      });
      child.on('exit', () => resolve(null));
    });
    if (line === null) {
      if (/in use/i.test(err) && attempt < 10) continue;
      throw new Error(`fdloop did not start: ${err.trim()}`);
    }
    const pid = Number(/^ready (\d+)$/.exec(line)?.[1]);
    // Its stdio must not keep the test process alive (a forked child of --child holds it too).
    child.stdout!.destroy();
    child.stderr!.destroy();
    child.unref();
    return { pid, port, child, ask: (c, p = port) => askFdloop(p, c), kill: () => child.kill('SIGKILL') };
  }
}
