// SIGKILL of the process holding a restorable freeze (and capturing: syscalls injected into the
// target one after another) must leave the target running on its own registers: the capture
// helper finishes what it is doing, thaws and exits.

import test from 'ava';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { procStatus, startWorkload, taskIds, waitStatus } from './helpers/workload';

function captureHelpers(pid: number): number[] {
  const out: number[] = [];
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const argv = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
      if (argv[0].endsWith('/precopy-capture-helper') && argv[1] === String(pid)) out.push(Number(p));
    } catch {
      // exited
    }
  }
  return out;
}

async function until(label: string, pred: () => boolean, ms = 15000): Promise<void> {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out: ${label}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

for (const mode of ['frozen', 'capturing']) {
  test.serial(`SIGKILL of a sender holding a restorable freeze (${mode}): the target runs on intact`, async (t) => {
    const w = await startWorkload(['--workers', '2']);
    try {
      const child = spawn(process.execPath, [path.join(__dirname, 'fixtures', 'capture-child.js'), mode, String(w.pid)], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      await new Promise<void>((resolve, reject) => {
        child.stdout!.once('data', (d: Buffer) => (d.toString().startsWith('ready') ? resolve() : reject(new Error(`child said ${d}`))));
        child.once('exit', (c) => reject(new Error(`child exited ${c}`)));
      });
      // Held by the capture helper: every thread traced by it (while capturing, a thread running an
      // injected syscall is not in a tracing stop at that instant, so the tracer is what is checked).
      const helpers = captureHelpers(w.pid);
      t.is(helpers.length, 1, 'one capture helper');
      t.true(
        taskIds(w.pid).every((tid) => procStatus(w.pid, tid).TracerPid === String(helpers[0])),
        'frozen: every thread traced by the capture helper',
      );
      if (mode === 'frozen')
        t.true(
          taskIds(w.pid).every((tid) => procStatus(w.pid, tid).State.startsWith('t')),
          'every thread in a tracing stop',
        );
      if (mode === 'capturing') await new Promise((r) => setTimeout(r, 30)); // well inside a capture loop
      child.kill('SIGKILL');
      await until('capture helper gone', () => captureHelpers(w.pid).length === 0);
      await until('no tracer', () => taskIds(w.pid).every((tid) => procStatus(w.pid, tid).TracerPid === '0'));
      const before = w.status()!;
      const s = await waitStatus(
        w.dir,
        (x) => Number(x.iter) > Number(before.iter) + 5 && Number(x.avx) > Number(before.avx) + 5 && Number(x.sleeps) > Number(before.sleeps) + 2,
        'the target runs on',
      );
      for (const k of ['worker_errors', 'sum_errors', 'avx_errors', 'sleep_errors']) t.is(s[k], '0', k);
      t.false(
        taskIds(w.pid).some((tid) => /^[tT]/.test(procStatus(w.pid, tid).State)),
        'no thread left stopped',
      );
    } finally {
      w.child.kill('SIGKILL');
      await w.exited;
    }
  });
}

test.serial('SIGKILL of a restorer mid-restore kills the half-made process (PTRACE_O_EXITKILL)', async (t) => {
  const w = await startWorkload(['--workers', '2']);
  const child = spawn(process.execPath, [path.join(__dirname, 'fixtures', 'restore-child.js'), String(w.pid)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await w.exited; // the child SIGKILLs it after the capture; we reap it
  await new Promise<void>((resolve, reject) => {
    child.stdout!.once('data', (d: Buffer) => (d.toString().startsWith('filling') ? resolve() : reject(new Error(`child said ${d}`))));
    child.once('exit', (c) => reject(new Error(`child exited ${c}`)));
  });
  t.true(fs.existsSync(`/proc/${w.pid}`), 'the stub holds the pid while filling');
  t.regex(fs.readFileSync(`/proc/${w.pid}/status`, 'utf8'), /TracerPid:\s*[1-9]/, 'held by the restorer');
  child.kill('SIGKILL');
  await until('the half-made process is gone', () => !fs.existsSync(`/proc/${w.pid}`));
  t.pass();
});
