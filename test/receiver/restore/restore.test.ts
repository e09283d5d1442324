// Restore of a real process: bin/restore_target is frozen and captured (capture helper), its
// memory read while frozen, then it is SIGKILLed and reaped, and restored with the same pid. The
// restored process must run on from where it stopped: every thread, with its registers (AVX
// included), TLS, locks, signal handlers on an alternate stack, brk/mmap growth, new threads.

import test from 'ava';
import * as fs from 'node:fs';
import { decodeProcessState, encodeProcessState } from '../../../image/process-state';
import { restoreProcess } from '../../../receiver/restore/restore-process';
import { captureAndKill, killRestored, procStatus, startWorkload, type Status, stubProcesses, taskIds, waitStatus } from './helpers/workload';

const num = (s: Status, k: string): number => Number(s[k]);
const workers = (s: Status): number[] => s.workers.split(',').map(Number);

test.serial('a multi-threaded workload restored with the same pid and tids runs on from where it was frozen', async (t) => {
  const w = await startWorkload(['--workers', '3', '--mib', '8']);
  const tidsBefore = taskIds(w.pid);
  const sigBlk = new Map(tidsBefore.map((tid) => [tid, procStatus(w.pid, tid).SigBlk]));
  const comms = new Map(tidsBefore.map((tid) => [tid, fs.readFileSync(`/proc/${w.pid}/task/${tid}/comm`, 'utf8')]));
  const cap = await captureAndKill(w);
  t.false(fs.existsSync(`/proc/${w.pid}`), 'the original is gone');

  // Through the wire format, as the image store will carry it.
  const state = decodeProcessState(encodeProcessState(cap.state));
  t.deepEqual(
    state.threads.map((x) => x.tid).sort((a, b) => a - b),
    tidsBefore,
  );

  const restored = await restoreProcess(state, cap.memory);
  try {
    t.is(restored.pid, w.pid);
    t.log(
      `restored ${tidsBefore.length} threads, ${(cap.memory.bytes / 1048576).toFixed(1)} MiB of pages: ${restored.steps.map((s) => `${s.step} ${s.ms.toFixed(1)}`).join(', ')} ms`,
    );
    t.deepEqual(restored.warnings, []);
    t.deepEqual(taskIds(w.pid), tidsBefore, 'same thread ids');
    for (const tid of tidsBefore) {
      t.is(fs.readFileSync(`/proc/${w.pid}/task/${tid}/comm`, 'utf8'), comms.get(tid)!, `comm of ${tid}`);
      t.is(procStatus(w.pid, tid).SigBlk, sigBlk.get(tid)!, `blocked signals of ${tid}`);
    }
    t.deepEqual(fs.readFileSync(`/proc/${w.pid}/cmdline`), cap.cmdline, 'cmdline (arg_start/arg_end of PR_SET_MM_MAP)');
    t.is(fs.readlinkSync(`/proc/${w.pid}/exe`), state.mm.exePath, '/proc/PID/exe (exe_fd of PR_SET_MM_MAP)');

    // Everything keeps going and keeps checking itself.
    const b = cap.before;
    const s1 = await waitStatus(
      w.dir,
      (s) =>
        num(s, 'iter') > num(b, 'iter') + 5 &&
        workers(s).every((x, i) => x > workers(b)[i] + 5) &&
        num(s, 'avx') > num(b, 'avx') + 5 &&
        num(s, 'sleeps') > num(b, 'sleeps') + 2,
      'every thread makes progress after the restore',
    );
    for (const k of ['worker_errors', 'sum_errors', 'avx_errors', 'sleep_errors', 'area_errors', 'usr1_bad', 'grow_errors'])
      t.is(s1[k], '0', `${k} after the restore`);
    t.is(s1.pid, String(w.pid));

    // A signal on the alternate stack, then growth: brk, mmap, a new thread, the joinee's exit.
    process.kill(w.pid, 'SIGUSR1');
    const s2 = await waitStatus(w.dir, (s) => num(s, 'usr1_ok') + num(s, 'usr1_bad') >= 1, 'SIGUSR1 handled');
    t.is(s2.usr1_ok, '1', 'SIGUSR1 handler ran on its alternate stack');
    t.is(s2.usr1_bad, '0');
    process.kill(w.pid, 'SIGUSR2');
    const s3 = await waitStatus(w.dir, (s) => num(s, 'grow_done') >= 1, 'grow done');
    t.is(s3.grow_errors, '0', 'brk, mmap and a new thread after the restore');
    t.is(s3.joined, '1', 'pthread_join of the thread blocked in a condvar at the freeze');
    t.is(taskIds(w.pid).length, tidsBefore.length - 1, 'the joined thread is gone');
    process.kill(w.pid, 'SIGUSR2');
    const s4 = await waitStatus(w.dir, (s) => num(s, 'grow_done') >= 2 && num(s, 'iter') > num(s3, 'iter') + 3, 'second grow');
    for (const k of ['worker_errors', 'sum_errors', 'avx_errors', 'sleep_errors', 'area_errors', 'grow_errors']) t.is(s4[k], '0', `${k} at the end`);
  } finally {
    killRestored(w.pid);
  }
  t.deepEqual(stubProcesses(), []);
});

test.serial('an unprivileged workload (nobody, supplementary groups) is restored with its credentials', async (t) => {
  const w = await startWorkload(['--workers', '2', '--drop', '65534', '65534', '100,200,65534']);
  const cap = await captureAndKill(w);
  const restored = await restoreProcess(cap.state, cap.memory);
  try {
    t.is(restored.pid, w.pid);
    const fields = ['Uid', 'Gid', 'Groups', 'CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb', 'NoNewPrivs', 'Umask'];
    for (const [tid, before] of cap.threadStatus) {
      const now = procStatus(w.pid, tid);
      for (const f of fields) t.is(now[f], before[f], `${f} of thread ${tid}`);
    }
    t.is(procStatus(w.pid, w.pid).Uid, '65534\t65534\t65534\t65534');
    t.is(procStatus(w.pid, w.pid).Groups, '100 200 65534');
    const b = cap.before;
    const s = await waitStatus(w.dir, (x) => num(x, 'iter') > num(b, 'iter') + 5 && num(x, 'avx') > num(b, 'avx') + 5, 'progress');
    for (const k of ['worker_errors', 'sum_errors', 'avx_errors', 'sleep_errors']) t.is(s[k], '0', k);
    t.is(s.uid, '65534');
    t.is(s.egid, '65534');
    // It can still do what needs no privilege: a new thread, brk, mmap (status file written as nobody).
    process.kill(w.pid, 'SIGUSR2');
    const g = await waitStatus(w.dir, (x) => num(x, 'grow_done') >= 1, 'grow');
    t.is(g.grow_errors, '0');
    t.is(g.joined, '1');
  } finally {
    killRestored(w.pid);
  }
});
