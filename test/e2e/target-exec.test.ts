// The target executes a new program (execve: same pid, new address space) or exits in the middle of
// a migration. The sender must notice, whatever it was doing (a pre-copy round, throttling the
// target with short freezes, the stop-and-copy freeze), abort with one clear line and a non-zero
// exit, and leave no committed image of a mix of two programs: the receiver's session is aborted.
// An exec is the dangerous one: the pid lives on and /proc/PID/maps, process_vm_readv and a fresh
// /proc/PID/mem all show the new program (sender/target-process.ts). The new program (bin/target
// again, same arguments) must run on untraced, unstopped, without our userfaultfd, its own memory
// consistent. (An exit during a pre-copy round: failure.test.ts.)

import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { ImageStore } from '../../image/image-store';
import { checkTarget, explainTargetError, forgetTarget, isAlive, targetState } from '../../sender/target/target-process';
import { Target } from '../helpers/target';
import { prng, sleep } from '../native/native-helpers';
import { describeRun, startSender, useReceiver, type Spawner } from '../helpers/migration-cli';
import { assertUnharmed } from './target-health';

const shared = useReceiver(test, 'precopy-e2e-exec-');

/** The sender with its debug log (the stop-and-copy steps show there). */
const debugSender: Spawner = (cmd, args) => spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PRECOPY_LOG: 'debug' } });

async function sessionOf(id: string) {
  const s = (await new ImageStore(shared.images()).list()).find((x) => x.meta.sessionId === id);
  return s ? { state: s.state, reason: s.reason ?? '' } : undefined;
}

/** Layout of a committed session (the VMAs its image describes). */
async function committedLayout(id: string): Promise<{ start: number; end: number }[]> {
  const img = await new ImageStore(shared.images()).open(id);
  try {
    const v = await img.verify();
    if (!v.ok) throw new Error(`session ${id} does not verify: ${v.problems.join('; ')}`);
    return v.manifest!.layout;
  } finally {
    await img.close();
  }
}

interface Case {
  /** What the test waits for on the sender's stdout (the round table) before acting. */
  waitFor: RegExp;
  flags: string[];
}

const PRECOPY: Case = { waitFor: /^\s+1\s+pre-copy/m, flags: ['--downtime-ms', '1', '--max-rounds', '1000'] };
// --auto-converge with an unreachable downtime: the throttle freezes the target for most of every
// 100 ms; a round showing a throttle % has finished.
const THROTTLED: Case = { waitFor: /\d+%\s*$/m, flags: ['--downtime-ms', '1', '--max-rounds', '1000', '--auto-converge'] };

/** Start a migration, wait for the case's moment, end the target with `act`; the sender must fail
 *  and the session be aborted. */
async function endMidMigration<T>(t: ExecutionContext, target: Target, session: string, c: Case, act: () => Promise<T>) {
  const sender = startSender(['--pid', String(target.pid), '--to', shared.receiver().address, '--session', session, ...c.flags], { json: false });
  t.true(await sender.until(c.waitFor), `the migration reached ${c.waitFor}`);
  const started = performance.now();
  const result = await act();
  const run = await sender.done;
  t.log(`the sender gave up ${((performance.now() - started) / 1000).toFixed(2)} s after the command: ${run.stderr.trim().split('\n').pop()}`);
  t.not(run.code, 0, describeRun(run));
  t.notRegex(run.stderr, /\n\s+at /, 'no stack trace');
  const state = await sessionOf(session);
  t.is(state?.state, 'aborted', `session state ${JSON.stringify(state)}`);
  return { run, result, reason: state?.reason ?? '' };
}

const execMessage = (pid: number) =>
  new RegExp(`^sender: process ${pid} executed a new program during the migration \\(round \\d+\\); nothing was committed$`, 'm');

test.serial('the exec witness: running, then executed, then exited', async (t) => {
  const target = await Target.start({ mib: 4, seed: 60 });
  try {
    checkTarget(target.pid);
    t.is(targetState(target.pid), 'running');
    await target.exec();
    t.is(targetState(target.pid), 'executed');
    t.false(isAlive(target.pid), 'no longer the process we checked');
    t.regex(String(explainTargetError(new Error('x'), target.pid, 3)), /process \d+ executed a new program during the migration \(round 3\)/);
    await target.exit();
    t.is(targetState(target.pid), 'exited');
  } finally {
    forgetTarget(target.pid);
    await target.kill();
  }
});

for (const [name, c] of [
  ['a pre-copy round', PRECOPY],
  ['auto-converge throttling (freezes)', THROTTLED],
] as const) {
  test.serial(`the target executes a new program during ${name}: clean abort, clear message, the new program unharmed`, async (t) => {
    const target = await Target.start({ mib: 64, seed: 61 });
    try {
      await target.writers(2, 0);
      const session = `exec-${c === PRECOPY ? 'precopy' : 'throttled'}-${process.pid}`;
      const { run, result: main, reason } = await endMidMigration(t, target, session, c, () => target.exec());
      t.regex(run.stderr, execMessage(target.pid), describeRun(run));
      t.notRegex(run.stderr, /exited|cannot track writes/, 'not mistaken for an exit nor for an untrackable VMA');
      t.regex(reason, /executed a new program/);
      await assertUnharmed(t, target, { main, label: 'the new program' });
    } finally {
      await target.kill();
    }
  });
}

test.serial('the target executes another program (/bin/sleep) during a pre-copy round: clean abort, clear message', async (t) => {
  const target = await Target.start({ mib: 64, seed: 63 });
  try {
    await target.writers(2, 0);
    const { run } = await endMidMigration(t, target, `exec-sleep-${process.pid}`, PRECOPY, () => target.execProgram('/bin/sleep', '60'));
    t.regex(run.stderr, execMessage(target.pid), describeRun(run));
    await assertUnharmed(t, target, { workload: false, label: 'sleep' });
  } finally {
    await target.kill();
  }
});

test.serial('the target exits while throttled: clean abort, clear message', async (t) => {
  const target = await Target.start({ mib: 64, seed: 62 });
  await target.writers(2, 0);
  const { run } = await endMidMigration(t, target, `exit-throttled-${process.pid}`, THROTTLED, () => target.exit());
  t.regex(run.stderr, new RegExp(`^sender: process ${target.pid} exited during the migration \\(round \\d+\\); nothing was committed$`, 'm'), describeRun(run));
});

// The stop-and-copy freeze: every thread is stopped, so an exec cannot happen while frozen; it
// lands either before the freeze (detected then: the check after freezing is final, nothing
// is committed) or after the thaw (the image, committed first, is the old program's). The exec is
// sent as the last pre-copy round ends, with random delays, so both sides of the freeze are hit;
// either way no image may describe the new program.
test.serial('exec racing the stop-and-copy freeze: committed before it, or aborted, never a mix', async (t) => {
  const seed = Number(process.env.PRECOPY_SEED ?? Date.now() % 100000);
  t.log(`seed ${seed} (PRECOPY_SEED=${seed} repeats this run)`);
  const next = prng(seed);
  const outcomes = { committedBefore: 0, abortedBefore: 0 };
  for (let i = 0; i < 4; i++) {
    const target = await Target.start({ mib: 32, seed: 70 + i });
    try {
      await target.writers(2, 0);
      const session = `exec-freeze-${process.pid}-${i}`;
      const sender = startSender(
        ['--pid', String(target.pid), '--to', shared.receiver().address, '--session', session, '--downtime-ms', '1', '--max-rounds', '2'],
        { json: false, spawner: debugSender },
      );
      let stderr = '';
      sender.child.stderr!.on('data', (d: Buffer | string) => (stderr += d.toString()));
      // "round 0: ..." is the decision after round 0 (round 1, the last one, and then the freeze
      // follow); "round 1: ..." is logged right before the freeze.
      const trigger = i % 2 === 0 ? /^migrate: debug: round 0:/m : /^migrate: debug: round 1:/m;
      while (!trigger.test(stderr) && sender.child.exitCode === null) await sleep(2);
      await sleep(next() * 40);
      const oldMain = { start: target.base, end: target.base + target.pages * 4096 };
      const main = await target.exec();
      const run = await sender.done;
      if (run.code === 0) {
        outcomes.committedBefore++;
        const layout = await committedLayout(session);
        t.true(
          layout.some((v) => v.start <= oldMain.start && oldMain.end <= v.end),
          'the committed image holds the first program main area',
        );
        t.false(
          layout.some((v) => v.start < main.base + main.pages * 4096 && main.base < v.end),
          'and nothing of the new program',
        );
      } else {
        outcomes.abortedBefore++;
        t.regex(run.stderr, execMessage(target.pid), describeRun(run));
        t.is((await sessionOf(session))?.state, 'aborted');
      }
      await assertUnharmed(t, target, { main, label: `attempt ${i}` });
    } finally {
      await target.kill();
    }
  }
  t.log(`outcomes: ${JSON.stringify(outcomes)}`);
});
