// Resume instead of restart (docs/design.md, Resume): the receiver is killed (kill -9) and started again on the
// same port and images directory three times during ONE migration, at three phases:
//   1. during round 0 of a 256 MiB target (most of the image not durable yet);
//   2. during a later pre-copy round, a writer running;
//   3. at the start of a stop-and-copy round, the target frozen (the sender must thaw it, resume
//      pre-copy, and freeze again later).
// Each time the sender (real CLI) reconnects, resumes the session at the receiver's last durable
// round and re-sends what was lost. The migration must commit, with `reconnects` counting the
// three breaks, and the image must equal the stopped target's memory byte for byte.
// Phases are read from the receiver's debug log ("round N (PHASE) started").
// A crash (PRECOPY_FAULT_STORE_CRASH_AT) in a round whose discards the resume must replay.
// And when the receiver does not come back: the sender gives up after --reconnect-timeout (0: at
// once) with one clear line, the target running on untouched.

import test from 'ava';
import * as fs from 'node:fs';
import { spawn } from 'node:child_process';
import { Target } from '../helpers/target';
import { startReceiver, type ReceiverHandle } from '../helpers/receiver';
import { isAlive, threadStates, tracerPid } from '../helpers/procmem';
import { describeRun, killStopped, startSender, tempDir } from '../helpers/migration-cli';
import { assertResumedAndFaithful, roundsStarted, waitFor } from './resume-support';

test('receiver killed and restarted three times (round 0, a later round, stop-and-copy): image correct', async (t) => {
  const images = tempDir('precopy-e2e-resume-');
  const start = (port = 0) => startReceiver({ images, listen: `127.0.0.1:${port}`, env: { PRECOPY_LOG: 'debug' } });
  let receiver: ReceiverHandle = await start();
  const port = receiver.port;
  const target = await Target.start({ mib: 256, seed: 61 });
  const session = `resume-restart-${process.pid}`;
  try {
    // ~10k pages written a second: the stop-and-copy round has thousands of pages to send (long
    // enough to be caught at its start), every round is smaller than round 0.
    await target.writers(1, 40_000_000);
    // --downtime-ms 1 never converges while the writer runs: after --max-rounds 3 rounds of a
    // series (a resume starts a new series), stop-and-copy.
    const sender = startSender(
      [
        '--pid',
        String(target.pid),
        '--to',
        receiver.address,
        '--session',
        session,
        '--after',
        'stop',
        '--downtime-ms',
        '1',
        '--max-rounds',
        '3',
        '--reconnect-timeout',
        '60',
      ],
      {
        spawner: (cmd, args) =>
          spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PRECOPY_LOG: process.env.RESUME_DEBUG ? 'debug' : 'info' } }),
      },
    );
    let finished = false;
    const done = sender.done.finally(() => (finished = true));
    const restart = async (why: string) => {
      await receiver.kill();
      t.log(`receiver killed ${why}`);
      receiver = await start(port);
    };

    // 1. During round 0: some batches written, most of 256 MiB still to come.
    await waitFor(
      () => roundsStarted(receiver.stderr(), 'PRECOPY').includes(0),
      'round 0',
      () => finished,
    );
    await new Promise((r) => setTimeout(r, 300));
    await restart('during round 0');

    // 2. During a later pre-copy round (the second one the new receiver sees: the first re-sends
    //    what round 0 lost), while the target's writer runs.
    await waitFor(
      () => roundsStarted(receiver.stderr(), 'PRECOPY').length >= 2,
      'a later pre-copy round',
      () => finished,
    );
    await restart('during a later pre-copy round');

    // 3. At the start of stop-and-copy: the target is frozen.
    await waitFor(
      () => roundsStarted(receiver.stderr(), 'STOP_AND_COPY').length > 0,
      'stop-and-copy',
      () => finished,
    );
    await restart('at the start of stop-and-copy (target frozen)');

    const run = await done;
    t.regex(run.stderr, /target thawed; reconnecting/, 'the frozen target was thawed before reconnecting');
    await assertResumedAndFaithful(t, run, images, session, target.pid, 3);
  } finally {
    killStopped(target.pid);
    await receiver.stop();
    fs.rmSync(images, { recursive: true, force: true });
  }
});

// A resume that replays discards journaled from both of their sources in one round: what left the
// layout (x, unmapped, higher up) and what the receiver held under a VMA first seen (z, a new
// mapping in y's place, lower down). The receiver crashes as that round becomes durable, so the
// resumed round re-sends them as one Discard, which it refuses unless the runs are sorted and
// disjoint ("run N at ... overlaps or is out of order": the journal once sent them in its order).
test('receiver crashes in a round that discarded an unmapped VMA and a replaced lower one: replayed, image correct', async (t) => {
  const images = tempDir('precopy-e2e-resume-discards-');
  const start = (port = 0, env: NodeJS.ProcessEnv = {}) => startReceiver({ images, listen: `127.0.0.1:${port}`, env: { PRECOPY_LOG: 'debug', ...env } });
  // The 3rd round made durable is round 2, the one after the churn below.
  let receiver: ReceiverHandle = await start(0, { PRECOPY_FAULT_STORE_CRASH_AT: 'round-data-synced@3' });
  const port = receiver.port;
  const target = await Target.start({ mib: 64, seed: 63 });
  const session = `resume-discards-${process.pid}`;
  try {
    // x above y: mmap places each new mapping below the last; y read-only so they stay two VMAs.
    const x = await target.mmap(16);
    const y = await target.mmap(16, 'r');
    t.true(y < x, `y at 0x${y.toString(16)} below x at 0x${x.toString(16)}`);
    await target.writers(1, 40_000_000);
    const sender = startSender([
      '--pid',
      String(target.pid),
      '--to',
      receiver.address,
      '--session',
      session,
      '--after',
      'stop',
      '--downtime-ms',
      '1',
      '--max-rounds',
      '3',
      '--reconnect-timeout',
      '60',
    ]);
    let finished = false;
    const done = sender.done.finally(() => (finished = true));
    // Round 1 has refreshed the layout (round 0 sent x and y); round 2's refresh sees the churn.
    await waitFor(
      () => roundsStarted(receiver.stderr(), 'PRECOPY').includes(1),
      'pre-copy round 1',
      () => finished,
    );
    await target.munmap(y, 16);
    const z = await target.mmap(16);
    await target.munmap(x, 16);
    t.false(roundsStarted(receiver.stderr(), 'PRECOPY').includes(2), 'the churn was done within round 1');
    t.is(z, y, "the new mapping took y's place");
    // (A sender that ended first would leave the receiver waiting: do not wait for it then.)
    const crashed = await Promise.race([receiver.exited, done.then((run) => describeRun(run))]);
    t.like(crashed, { signal: 'SIGKILL' }, receiver.stderr());
    t.regex(receiver.stderr(), /round 2 \(PRECOPY\) started/, 'the crash was in round 2');
    receiver = await start(port);
    const run = await done;
    await assertResumedAndFaithful(t, run, images, session, target.pid, 1);
  } finally {
    killStopped(target.pid);
    await receiver.stop();
    fs.rmSync(images, { recursive: true, force: true });
  }
});

test('receiver gone for good: the sender gives up after --reconnect-timeout, target unharmed', async (t) => {
  const images = tempDir('precopy-e2e-resume-gone-');
  const target = await Target.start({ mib: 32, seed: 62 });
  try {
    await target.writers(1, 10_000_000);
    for (const timeout of ['2', '0']) {
      const receiver = await startReceiver({ images, env: { PRECOPY_LOG: 'debug' } });
      const session = `resume-gone-${timeout}-${process.pid}`;
      const sender = startSender(
        [
          '--pid',
          String(target.pid),
          '--to',
          receiver.address,
          '--session',
          session,
          '--downtime-ms',
          '1',
          '--max-rounds',
          '1000',
          '--reconnect-timeout',
          timeout,
        ],
        { json: false },
      );
      let finished = false;
      const done = sender.done.finally(() => (finished = true));
      await waitFor(
        () => roundsStarted(receiver.stderr(), 'PRECOPY').includes(1),
        'pre-copy round 1',
        () => finished,
      );
      await receiver.kill();
      const run = await done;
      t.is(run.code, 1, describeRun(run));
      t.notRegex(run.stderr, /\n\s+at /, 'no stack trace');
      if (timeout === '0') {
        t.regex(run.stderr, /^sender: connection to receiver at \S+ lost/m, describeRun(run));
        t.notRegex(run.stderr, /reconnecting/);
      } else {
        t.regex(run.stderr, /reconnecting for up to 2s/);
        t.regex(
          run.stderr,
          new RegExp(
            `^sender: could not resume session ${session}: receiver at \\S+ unreachable for [\\d.]+s \\(--reconnect-timeout 2s; last: cannot reach receiver at \\S+ \\(connection refused\\)\\)$`,
            'm',
          ),
          describeRun(run),
        );
      }
      t.log(`--reconnect-timeout ${timeout}: ${run.stderr.trim().split('\n').pop()}`);
      t.true(isAlive(target.pid));
      t.is(tracerPid(target.pid), 0, 'not traced');
      t.deepEqual(
        threadStates(target.pid).filter((x) => x.state === 'T' || x.state === 't'),
        [],
        'no thread left stopped',
      );
      t.is((await target.check()).bad, 0, 'its pages are consistent');
    }
  } finally {
    await target.kill();
    fs.rmSync(images, { recursive: true, force: true });
  }
});
