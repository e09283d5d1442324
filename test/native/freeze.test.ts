// Freeze stops every thread (memory cannot change while frozen), captures each thread's registers,
// thaw resumes them all, thawStopped leaves the process group-stopped (state T).

import test from 'ava';
import * as fs from 'node:fs';
import { freeze } from '../../native';
import { findMap, readMem, threadStates } from '../helpers/procmem';
import { Target, withTarget } from '../helpers/target';
import { sleep, threadTracers, waitFor } from './native-helpers';

const PAGE = 4096;
// struct user_regs_struct field offsets (x86_64)
const RIP = 16 * 8;
const FS_BASE = 21 * 8;

const taskIds = (pid: number) =>
  fs
    .readdirSync(`/proc/${pid}/task`)
    .map(Number)
    .sort((a, b) => a - b);

test.serial('freeze stops every thread: memory does not change while frozen; thaw resumes the writers', (t) =>
  withTarget({ mib: 16 }, async (tg) => {
    await tg.blockers();
    await tg.writers(3, 0); // flat out
    const size = tg.pages * PAGE;
    await waitFor('writers change memory', () => !readMem(tg.pid, tg.base, size).equals(readMem(tg.pid, tg.base, size)));

    const f = freeze(tg.pid);
    try {
      t.deepEqual(
        threadStates(tg.pid).filter((s) => s.state !== 't'),
        [],
        'every thread in a tracing stop',
      );
      const a = readMem(tg.pid, tg.base, size);
      await sleep(100);
      const b = readMem(tg.pid, tg.base, size);
      t.true(a.equals(b), 'memory changed while frozen');

      const threads = f.threads();
      t.deepEqual(
        threads.map((x) => x.tid).sort((x, y) => x - y),
        taskIds(tg.pid),
        'registers of every thread',
      );
      for (const th of threads) {
        t.is(th.regs.length, 216);
        t.is(th.fpregs.length, 512);
        const rip = Number(th.regs.readBigUInt64LE(RIP));
        t.truthy(findMap(tg.pid, rip)?.perms.includes('x'), `thread ${th.tid}: rip 0x${rip.toString(16)} in executable memory`);
        t.not(th.regs.readBigUInt64LE(FS_BASE), 0n, 'TLS base captured');
      }
    } finally {
      f.thaw();
    }
    t.deepEqual(
      threadTracers(tg.pid),
      taskIds(tg.pid).map(() => 0),
      'thaw detached every thread',
    );
    const c = readMem(tg.pid, tg.base, size);
    await waitFor('writers resume after thaw', () => !readMem(tg.pid, tg.base, size).equals(c));
    await tg.ping();
    t.true((await tg.stopWriters()) > 0);
    t.deepEqual(await tg.check(), { bad: 0 });
  }),
);

test.serial('freeze catches threads created while it runs', (t) =>
  withTarget({ mib: 8 }, async (tg) => {
    // The target spawns 48 threads while we freeze: every thread that exists once freeze returns
    // must be stopped, and none can appear while frozen. Freeze as soon as the first new thread
    // shows up (synchronous spin), so that the main thread is still creating threads.
    const started = tg.writers(48, 1 << 20);
    await new Promise((r) => setImmediate(r));
    const deadline = Date.now() + 10000;
    while (taskIds(tg.pid).length < 2 && Date.now() < deadline);
    const f = freeze(tg.pid);
    try {
      const tids = taskIds(tg.pid);
      t.deepEqual(
        threadStates(tg.pid).filter((s) => s.state !== 't'),
        [],
        `all ${tids.length} threads stopped`,
      );
      t.deepEqual(
        f
          .threads()
          .map((x) => x.tid)
          .sort((a, b) => a - b),
        tids,
      );
      await sleep(50);
      t.deepEqual(taskIds(tg.pid), tids, 'no thread created while frozen');
    } finally {
      f.thaw();
    }
    await started;
    t.is((await tg.info()).threads, 49);
    await tg.stopWriters();
    t.deepEqual(await tg.check(), { bad: 0 });
  }),
);

test.serial('thawStopped leaves every thread group-stopped (T) and untraced; SIGCONT resumes', (t) =>
  withTarget({ mib: 8 }, async (tg) => {
    await tg.writers(2, 0);
    const size = tg.pages * PAGE;
    const f = freeze(tg.pid, false);
    t.deepEqual(f.threads(), [], 'no registers captured when not asked');
    const frozenMem = readMem(tg.pid, tg.base, size);
    f.thawStopped();
    await waitFor('group stop', () => threadStates(tg.pid).every((s) => s.state === 'T'));
    t.deepEqual(
      threadTracers(tg.pid),
      taskIds(tg.pid).map(() => 0),
    );
    await sleep(50);
    t.true(readMem(tg.pid, tg.base, size).equals(frozenMem), 'no write between freeze and the stop');
    process.kill(tg.pid, 'SIGCONT');
    await waitFor('writers resume after SIGCONT', () => !readMem(tg.pid, tg.base, size).equals(frozenMem));
    await tg.stopWriters();
    t.deepEqual(await tg.check(), { bad: 0 });
  }),
);

test.serial('a frozen target killed meanwhile: thaw copes, and its parent still gets the exit status', async (t) => {
  // We are both the target's parent (Target spawned it) and its tracer: the tracer's wait must not
  // reap the exit status Node's child_process is waiting for.
  const tg = await Target.start({ mib: 4 });
  await tg.blockers();
  const f = freeze(tg.pid);
  process.kill(tg.pid, 'SIGKILL');
  f.thaw();
  t.deepEqual(await tg.waitExit(), { code: null, signal: 'SIGKILL' });
  t.throws(() => freeze(tg.pid), { message: `no such process ${tg.pid}` });
});
