// One restore of a process with 256 MiB of anonymous memory: every MiB is checked by the process
// itself after the restore; the steps' times are logged (the one timing of this suite).

import test from 'ava';
import { restoreProcess } from '../../../receiver/restore/restore-process';
import { captureAndKill, killRestored, startWorkload, waitStatus } from './helpers/workload';

test.serial('a 256 MiB anonymous process is restored and checks all of its memory', async (t) => {
  const w = await startWorkload(['--workers', '1', '--mib', '256']);
  const cap = await captureAndKill(w);
  const t0 = performance.now();
  const r = await restoreProcess(cap.state, cap.memory);
  const ms = performance.now() - t0;
  try {
    t.log(
      `restore of ${(cap.memory.bytes / 1048576).toFixed(0)} MiB of pages: ${ms.toFixed(0)} ms total; ` +
        r.steps.map((s) => `${s.step} ${s.ms.toFixed(1)}`).join(', '),
    );
    // check_area verifies one MiB per main-loop round: 256 rounds see every MiB once.
    const s = await waitStatus(w.dir, (x) => Number(x.iter) > Number(cap.before.iter) + 260, 'every MiB checked', 60000);
    t.is(s.area_errors, '0');
    t.is(s.worker_errors, '0');
    t.is(s.avx_errors, '0');
  } finally {
    killRestored(r.pid);
  }
});
