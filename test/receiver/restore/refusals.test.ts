// A restore that cannot be done says why in one line and leaves nothing running: no stub, no
// half-made process under the image's pid.

import test from 'ava';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startRestoreStub } from '../../../native';
import { RestoreError, restoreProcess } from '../../../receiver/restore/restore-process';
import { captureAndKill, killRestored, processExists, startWorkload, stubProcesses, waitStatus } from './helpers/workload';

async function refused(t: import('ava').ExecutionContext, p: Promise<unknown>, pattern: RegExp): Promise<string> {
  const e = await t.throwsAsync(p, { instanceOf: RestoreError, message: pattern });
  const msg = e?.message ?? '';
  t.false(msg.includes('\n'), `one line: ${msg}`);
  t.log(msg);
  return msg;
}

test.serial('pid taken (the original still runs): refused naming the pid; the original is untouched', async (t) => {
  const w = await startWorkload(['--workers', '1']);
  try {
    const cap = await captureAndKill(w, true);
    await refused(t, restoreProcess(cap.state, cap.memory), new RegExp(`^cannot restore process ${w.pid}: .*pid ${w.pid} is taken`));
    t.deepEqual(stubProcesses(), [], 'no stub left');
    const before = w.status()!;
    const s = await waitStatus(w.dir, (x) => Number(x.iter) > Number(before.iter) + 3, 'the original runs on');
    t.is(s.pid, String(w.pid));
    t.is(s.worker_errors, '0');
  } finally {
    w.child.kill('SIGKILL');
    await w.exited;
  }
});

test.serial('a thread id taken by another process: refused naming the id; nothing left', async (t) => {
  const w = await startWorkload(['--workers', '2']);
  const cap = await captureAndKill(w);
  const tid = cap.state.threads[2].tid;
  const holder = startRestoreStub(tid); // any process with that id will do
  try {
    await refused(t, restoreProcess(cap.state, cap.memory), new RegExp(`thread id ${tid} is taken`));
    t.false(processExists(w.pid), 'no half-made process under the image pid');
    t.deepEqual(stubProcesses(), [tid], 'only the holder of the id is left');
  } finally {
    holder.kill();
  }
  t.deepEqual(stubProcesses(), []);
});

test.serial('a missing mapped file: refused naming the path; nothing started', async (t) => {
  const file = path.join(os.tmpdir(), `precopy-restore-map-${process.pid}.bin`);
  fs.writeFileSync(file, crypto.randomBytes(64 * 1024));
  const w = await startWorkload(['--workers', '1', '--map-file', file]);
  const cap = await captureAndKill(w);
  t.true(
    cap.memory.vmas.some((v) => v.file?.path === file),
    'the image maps the file',
  );
  fs.unlinkSync(file);
  await refused(t, restoreProcess(cap.state, cap.memory), new RegExp(`mapped file ${file} is missing`));
  t.false(processExists(w.pid));
  t.deepEqual(stubProcesses(), []);
});

test.serial('a changed mapped file: refused unless allowChangedFiles', async (t) => {
  const file = path.join(os.tmpdir(), `precopy-restore-map2-${process.pid}.bin`);
  const content = crypto.randomBytes(64 * 1024);
  fs.writeFileSync(file, content);
  const w = await startWorkload(['--workers', '1', '--map-file', file]);
  const cap = await captureAndKill(w);
  try {
    // Same bytes, same inode, a different mtime: still refused (the image cannot tell).
    const later = new Date(Date.now() + 5000);
    fs.utimesSync(file, later, later);
    await refused(t, restoreProcess(cap.state, cap.memory), new RegExp(`mapped file ${file} changed since the capture \\(mtime`));
    t.false(processExists(w.pid));
    t.deepEqual(stubProcesses(), []);
    const r = await restoreProcess(cap.state, cap.memory, { allowChangedFiles: true });
    try {
      const s = await waitStatus(w.dir, (x) => Number(x.iter) > Number(cap.before.iter) + 3, 'restored with the file allowed');
      t.is(s.file_errors, '0', 'the file mapping reads the same bytes');
      t.is(r.pid, w.pid);
    } finally {
      killRestored(r.pid);
    }
  } finally {
    fs.rmSync(file, { force: true });
  }
});

test.serial('a different kernel release: refused naming both; nothing started', async (t) => {
  const w = await startWorkload(['--workers', '1']);
  const cap = await captureAndKill(w);
  const state = { ...cap.state, kernelRelease: '5.10.0-other' };
  await refused(t, restoreProcess(state, cap.memory), new RegExp(`taken on kernel 5\\.10\\.0-other, this host runs ${os.release().replace(/[.+]/g, '\\$&')}$`));
  t.false(processExists(w.pid));
  t.deepEqual(stubProcesses(), []);
});
