// Arming must leave the target exactly as it was: same fds, same registers in every thread,
// blocked syscalls (read, clock_nanosleep, futex) restarting or returning as without us, every
// thread running on, no lost or torn writes. The injected userfaultfd()/close() borrow the group
// leader, so each target below parks its leader in a different blocking syscall.

import test from 'ava';
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { arm, freeze } from '../../native';
import { readMem, threadStates } from '../helpers/procmem';
import { REPO_ROOT, withTarget } from '../helpers/target';
import { blockedSyscalls, ChildLines, childNode, sleep, threadTracers, waitFor } from './native-helpers';

const PAGE = 4096;
const SYS_READ = 0;
const SYS_FUTEX = 202;
const SYS_CLOCK_NANOSLEEP = 230;

function voluntarySwitches(pid: number): Map<number, number> {
  const out = new Map<number, number>();
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    const m = /^voluntary_ctxt_switches:\s*(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8'));
    out.set(Number(tid), Number(m?.[1]));
  }
  return out;
}

function armTimes(pid: number, n: number, range?: [number, number]): void {
  for (let i = 0; i < n; i++) {
    const tr = arm(pid);
    if (range) tr.register(range[0], range[1]);
    tr.close();
  }
}

test.serial('arming leaves the target healthy: fds, blocked reader, sleeper, writers, every thread running', (t) =>
  withTarget({ mib: 16 }, async (tg) => {
    await tg.blockers();
    await tg.writers(2, 8 << 20);
    await waitFor('sleeper thread running', async () => (await tg.sleepStats()).count >= 2);
    const fdsBefore = await tg.fds();
    const tids = threadStates(tg.pid).map((s) => s.tid);
    t.is(tids.length, 5, 'main, sleeper, reader, 2 writers');
    await waitFor('threads parked in read and clock_nanosleep', () => {
      const sys = [...blockedSyscalls(tg.pid).values()];
      return sys.filter((s) => s === SYS_READ).length >= 2 && sys.includes(SYS_CLOCK_NANOSLEEP);
    });

    armTimes(tg.pid, 5, [tg.base, tg.base + tg.pages * PAGE]);

    t.deepEqual(await tg.fds(), fdsBefore, 'fd table unchanged (the target-side uffd was closed)');
    t.deepEqual(
      threadStates(tg.pid).map((s) => s.tid),
      tids,
      'same threads',
    );
    t.deepEqual(
      threadStates(tg.pid).filter((s) => s.state === 't' || s.state === 'T'),
      [],
      'no thread left stopped',
    );
    t.deepEqual(
      threadTracers(tg.pid),
      tids.map(() => 0),
      'no thread left traced',
    );

    // Every thread runs on: each blocks and wakes again (voluntary context switches grow).
    const before = voluntarySwitches(tg.pid);
    const mem0 = readMem(tg.pid, tg.base, tg.pages * PAGE);
    await tg.ping(); // the reader returns from its read() with the byte
    const s1 = await tg.sleepStats();
    await waitFor('sleeper keeps sleeping', async () => (await tg.sleepStats()).count >= s1.count + 4);
    await waitFor('writers keep writing', () => !readMem(tg.pid, tg.base, tg.pages * PAGE).equals(mem0));
    const after = voluntarySwitches(tg.pid);
    for (const tid of tids) t.true(after.get(tid)! > before.get(tid)!, `thread ${tid} ran after arming`);

    const stats = await tg.sleepStats();
    t.is(stats.errors, 0, 'no sleep woke early or failed with EINTR, no failed read');
    // Sanity bound, not a performance check: a sleep stuck behind a lost wake-up would be seconds late.
    t.true(stats.maxOvershootUs < 1_000_000, `worst sleep overshoot ${stats.maxOvershootUs} us`);
    t.true((await tg.stopWriters()) > 0);
    t.deepEqual(await tg.check(), { bad: 0 }, 'multi-threaded writer lost no write and tore no page');
  }),
);

test.serial('arming restores the registers of blocked threads exactly', (t) =>
  withTarget({ mib: 4 }, async (tg) => {
    await tg.blockers();
    // main: read(stdin) between commands; reader: read(pipe) until ping. Both stay put while
    // nothing is sent, so their registers at an interrupt stop are the same every time.
    await waitFor('threads parked in read', () => [...blockedSyscalls(tg.pid).values()].filter((s) => s === SYS_READ).length >= 2);
    const parked = [...blockedSyscalls(tg.pid)].filter(([, s]) => s === SYS_READ).map(([tid]) => tid);
    t.true(parked.includes(tg.pid), 'the group leader (the injection thread) is blocked in read');
    const snapshot = () => {
      const f = freeze(tg.pid);
      try {
        return new Map(
          f
            .threads()
            .filter((th) => parked.includes(th.tid))
            .map((th) => [th.tid, Buffer.concat([th.regs, th.fpregs])]),
        );
      } finally {
        f.thaw();
      }
    };
    const before = snapshot();
    t.is(before.size, parked.length);
    armTimes(tg.pid, 3);
    const after = snapshot();
    for (const tid of parked) t.true(after.get(tid)!.equals(before.get(tid)!), `registers of thread ${tid} changed`);
    await tg.ping();
    t.deepEqual(await tg.check(), { bad: 0 });
  }),
);

test.serial('a leader blocked in clock_nanosleep sleeps on to its deadline through arming', async (t) => {
  const t0 = Date.now();
  const sleeper = spawn('sleep', ['1.5'], { stdio: 'ignore' });
  const exited = new Promise<number | null>((r) => sleeper.once('exit', (code) => r(code)));
  try {
    await waitFor('sleep parked in clock_nanosleep', () => blockedSyscalls(sleeper.pid!).get(sleeper.pid!) === SYS_CLOCK_NANOSLEEP);
    armTimes(sleeper.pid!, 3);
    t.is(await exited, 0);
    // The restarted sleep (restart_syscall with the remaining time) neither ended early nor failed.
    t.true(Date.now() - t0 >= 1500, `slept only ${Date.now() - t0} ms`);
  } finally {
    sleeper.kill('SIGKILL');
  }
});

test.serial('a leader blocked in futex (Node Atomics.wait) and its idle worker threads go on after arming', async (t) => {
  const child = childNode('futex-target.js', []);
  try {
    const ready = await child.line();
    t.regex(ready, /^ready \d+$/);
    const pid = child.proc.pid!;
    await child.line();
    await waitFor('leader parked in futex', () => blockedSyscalls(pid).get(pid) === SYS_FUTEX);
    const futexThreads = [...blockedSyscalls(pid).values()].filter((s) => s === SYS_FUTEX).length;
    t.true(futexThreads >= 3, `${futexThreads} threads in futex (leader and V8/libuv workers)`);
    const fdsBefore = fs.readdirSync(`/proc/${pid}/fd`).sort();

    armTimes(pid, 3);
    // Judge the waits that started after arming: the first line after it may be a wait that was
    // interrupted by arming (and must have resumed), the rest started later.
    child.drain();
    const waits: string[] = [];
    for (let i = 0; i < 10; i++) waits.push(await child.line());
    for (const w of waits) {
      const [result, ms] = w.split(' ');
      t.is(result, 'timed-out', `a wait ended with ${w}`);
      t.true(Number(ms) >= 19.9, `a 20 ms wait ended after ${ms} ms`);
    }
    t.deepEqual(fs.readdirSync(`/proc/${pid}/fd`).sort(), fdsBefore);
    t.deepEqual(
      threadTracers(pid).filter((x) => x !== 0),
      [],
    );
  } finally {
    await child.kill();
  }
});

test.serial('a stopped target (SIGSTOP) is armed and stays stopped', (t) =>
  withTarget({ mib: 4 }, async (tg) => {
    process.kill(tg.pid, 'SIGSTOP');
    await waitFor('target stopped', () => threadStates(tg.pid).every((s) => s.state === 'T'));
    const tr = arm(tg.pid);
    tr.register(tg.base, tg.base + tg.pages * PAGE);
    await sleep(50);
    t.true(
      threadStates(tg.pid).every((s) => s.state === 'T'),
      'still group-stopped after arming',
    );
    process.kill(tg.pid, 'SIGCONT');
    await tg.write(3, 1);
    const vec = new BigUint64Array(30);
    const r = tr.scan({ start: tg.base, end: tg.base + tg.pages * PAGE, flags: 0, categoryMask: 2, returnMask: 2 }, vec);
    // Never WP-scanned: every page reads as written; the point is that the uffd works.
    t.true(r.count >= 1);
    tr.close();
    t.deepEqual(await tg.check(), { bad: 0 });
  }),
);

test.serial('real-time signals queued while arming and freezing are each delivered exactly once', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'precopy-signals-'));
  const bin = path.join(dir, 'signal-target');
  execFileSync('gcc', ['-O2', '-pthread', '-o', bin, path.join(REPO_ROOT, 'test', 'native', 'fixtures', 'signal-target.c')]);
  const target = new ChildLines(bin, []);
  try {
    t.is(await target.line(), 'ready');
    const pid = target.proc.pid!;
    const N = 10000;
    const sender = spawn(bin, ['send', String(pid), String(N), '20'], { stdio: 'ignore' });
    let sent: number | null | undefined;
    sender.once('exit', (code) => (sent = code));
    let rounds = 0;
    while (sent === undefined) {
      arm(pid).close();
      freeze(pid).thaw();
      rounds++;
      await new Promise((r) => setImmediate(r));
    }
    t.is(sent, 0, 'sender queued every signal');
    t.true(rounds >= 10, `${rounds} arm+freeze rounds overlapped the signals`);
    // Signals still in flight are handled by the time the count settles at N; a lost one keeps it
    // below, a duplicated one pushes it above.
    let count = 0;
    await waitFor(`count to reach ${N}`, async () => (count = Number(await target.ask('count'))) >= N).catch(() => {});
    t.is(count, N);
  } finally {
    await target.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
