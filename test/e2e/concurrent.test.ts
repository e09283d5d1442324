// Load: several migrations at once into one receiver process, with the real sender CLI, real
// targets that keep writing, and the fidelity check of every image against its frozen target. And
// --max-sessions under real senders: the one too many is refused with a clear message before it
// touches its target.

import * as fs from 'node:fs';
import * as path from 'node:path';
import test from 'ava';
import { isAlive, threadStates, tracerPid } from '../helpers/procmem';
import { startReceiver } from '../helpers/receiver';
import { Target } from '../helpers/target';
import { assertImageEqualsMemory, describeRun, exportRaw, killStopped, runSender, startSender, tempDir } from '../helpers/migration-cli';

const MIGRATIONS = 8;
const TARGET_MIB = 32;

test(`${MIGRATIONS} migrations at once into one receiver: all commit, every image equals its frozen target`, async (t) => {
  const images = tempDir('precopy-e2e-concurrent-');
  t.teardown(() => fs.rmSync(images, { recursive: true, force: true }));
  const receiver = await startReceiver({ images });
  t.teardown(() => receiver.stop());
  const targets = await Promise.all(Array.from({ length: MIGRATIONS }, (_, i) => Target.start({ mib: TARGET_MIB, seed: 100 + i })));
  t.teardown(() => targets.forEach((tg) => killStopped(tg.pid)));
  // Each keeps writing at a modest rate (1 MB/s), so rounds after round 0 have work.
  await Promise.all(targets.map((tg) => tg.writers(1, 1_000_000)));

  const t0 = performance.now();
  const runs = await Promise.all(
    targets.map((tg, i) => runSender(['--pid', String(tg.pid), '--to', receiver.address, '--session', `conc-${i}`, '--after', 'stop'])),
  );
  const total = (performance.now() - t0) / 1000;
  t.log(`${MIGRATIONS} x ${TARGET_MIB} MiB migrated at once in ${total.toFixed(1)} s`);

  for (const [i, run] of runs.entries()) {
    t.is(run.code, 0, describeRun(run));
    const s = run.summary!;
    t.is(s.result, 'committed');
    t.log(
      `conc-${i}: downtime ${(s.downtimeSeconds * 1000).toFixed(0)} ms, frozen ${(s.frozenSeconds * 1000).toFixed(0)} ms, ` +
        `${s.rounds.length} rounds, total ${s.totalSeconds.toFixed(1)} s, stop: ${s.stopReason}`,
    );
    const out = await exportRaw(images, `conc-${i}`);
    try {
      assertImageEqualsMemory(t, targets[i].pid, out);
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  }
  t.is(receiver.child.exitCode, null);
});

test('--max-sessions 2 and three senders: the third is refused with RESOURCE_EXHAUSTED, its target unharmed', async (t) => {
  const images = tempDir('precopy-e2e-maxsessions-');
  t.teardown(() => fs.rmSync(images, { recursive: true, force: true }));
  // --max-rate keeps the first two sessions open (round 0 of 32 MiB at 2 MiB/s: 15 s at least,
  // whatever the machine's speed) while the third sender starts and tries.
  const receiver = await startReceiver({ images, args: ['--max-sessions', '2', '--max-rate', '2M'] });
  t.teardown(() => receiver.stop());
  const targets = await Promise.all([0, 1, 2].map((i) => Target.start({ mib: 32, seed: 200 + i })));
  t.teardown(() => targets.forEach((tg) => killStopped(tg.pid)));
  await targets[2].writers(1, 1_000_000);

  const first = [0, 1].map((i) => startSender(['--pid', String(targets[i].pid), '--to', receiver.address, '--session', `max-${i}`, '--after', 'stop']));
  // Both sessions are open on the receiver before the third sender starts.
  for (let i = 0; i < 600 && !(receiver.stderr().includes('session max-0: started') && receiver.stderr().includes('session max-1: started')); i++) {
    await new Promise((r) => setTimeout(r, 50));
  }
  t.regex(receiver.stderr(), /session max-1: started/);

  const third = await runSender([
    '--pid',
    String(targets[2].pid),
    '--to',
    receiver.address,
    '--session',
    'max-2',
    '--after',
    'stop',
    '--reconnect-timeout',
    '5',
  ]);
  t.not(third.code, 0, describeRun(third));
  t.true(third.stderr.includes(`receiver at ${receiver.address}: too many sessions at once (2; --max-sessions) (RESOURCE_EXHAUSTED)`), describeRun(third));
  t.false(/\n\s+at .*\(/.test(third.stderr), 'no stack trace');
  t.log(third.stderr.trim().split('\n').slice(-1)[0]);
  t.false(fs.existsSync(path.join(images, 'max-2')), 'no session was created for it');

  // The third target runs on: alive, not traced, not stopped, its memory consistent.
  const pid = targets[2].pid;
  t.true(isAlive(pid));
  t.is(tracerPid(pid), 0);
  t.false(
    threadStates(pid).some((s) => s.state === 'T' || s.state === 't'),
    'no thread left stopped',
  );
  t.deepEqual(await targets[2].check(), { bad: 0 });
  t.true((await targets[2].stopWriters()) > 0, 'its writers kept writing');

  // The first two complete, exactly.
  for (const [i, s] of first.entries()) {
    const run = await s.done;
    t.is(run.code, 0, describeRun(run));
    const out = await exportRaw(images, `max-${i}`);
    try {
      assertImageEqualsMemory(t, targets[i].pid, out);
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  }
});
