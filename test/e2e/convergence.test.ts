// Convergence, end to end. A writer slower than the link converges in a few rounds with the
// downtime under the target; a writer faster than the link is throttled by default until it
// converges with the downtime under the target; with --on-no-convergence freeze it stops on the
// no-progress rule and still yields a correct image; with --on-no-convergence abort the sender
// gives up with the target running, untraced and never frozen, and the session aborted. The slow link is real: sender and receiver in two network
// namespaces joined by a veth pair limited with tc tbf (test/helpers/netns.ts); the target stays in
// the host's namespace (ptrace does not care about network namespaces).
// Targets are generous (a loaded 2-core machine): the assertions are the ones the issue asks for.

import test, { type ExecutionContext } from 'ava';
import * as fs from 'node:fs';
import { Target } from '../helpers/target';
import { startReceiver } from '../helpers/receiver';
import { NetPair } from '../helpers/netns';
import { assertUnharmed } from './target-health';
import { ImageStore } from '../../image/image-store';
import { assertImageEqualsMemory, describeRun, exportRaw, killStopped, runSender, tempDir, type SenderRun, type Spawner } from '../helpers/migration-cli';

const MiB = 1 << 20;

async function fidelity(t: ExecutionContext, images: string, session: string, pid: number): Promise<void> {
  const out = await exportRaw(images, session);
  try {
    assertImageEqualsMemory(t, pid, out);
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
}

function logRounds(t: ExecutionContext, run: SenderRun): void {
  const s = run.summary!;
  for (const r of s.rounds) {
    t.log(
      `round ${r.round} ${r.phase}: ${r.dirtyPages} pages, ${(r.durationSeconds * 1000).toFixed(0)} ms, ` +
        `expected ${(r.expectedDowntimeSeconds * 1000).toFixed(0)} ms, throttle ${r.throttlePercent}%`,
    );
  }
  t.log(`stop: ${s.stopReason} (${s.stopWhy}); downtime ${(s.downtimeSeconds * 1000).toFixed(1)} ms; total ${s.totalSeconds.toFixed(2)} s`);
}

test.serial('a writer slower than the link converges in few rounds, downtime under the target', async (t) => {
  const images = tempDir('precopy-e2e-conv-');
  const receiver = await startReceiver({ images });
  const target = await Target.start({ mib: 128, seed: 31 });
  try {
    await target.writers(1, 5_000_000);
    const session = `conv-slow-${process.pid}`;
    const run = await runSender(['--pid', String(target.pid), '--to', receiver.address, '--session', session, '--downtime-ms', '1000', '--after', 'stop']);
    t.is(run.code, 0, describeRun(run));
    logRounds(t, run);
    const s = run.summary!;
    t.is(s.stopReason, 'downtime');
    t.true(s.precopyRounds <= 4, `${s.precopyRounds} pre-copy rounds`);
    t.true(s.downtimeSeconds < 1, `downtime ${s.downtimeSeconds} s under the 1 s target`);
    t.is(s.verify.mode, 'ok');
    await fidelity(t, images, session, target.pid);
  } finally {
    killStopped(target.pid);
    await receiver.stop();
    fs.rmSync(images, { recursive: true, force: true });
  }
});

// The fast writer: one thread rewriting pages flat out (CPU-bound: 2-7 GB/s here, so freezing it
// for a share of each 100 ms slows it by that share; at 99% it still writes ~100 MB/s) over
// 256 MiB, sender and receiver on a 2 Gbit/s link (~250 MB/s, about what the gRPC path moves
// here). A full copy takes over a second, twice the 600 ms target, and the writer dirties the
// whole area well within that: without auto-converge it cannot converge; throttled at 99% it
// dirties less than half of what the link sends. The commit's fixed cost (the receiver re-reads
// the image to check its digest: ~0.15 s here) stays well under the target.
const LINK = { rate: '2gbit', burst: '1mb' };
const FAST = { mib: 256, threads: 1, rate: 0 };
const TARGET_MS = 600;

async function overLink(t: ExecutionContext, subnet: string, name: string, extra: string[], expectCode = 0): Promise<SenderRun> {
  const images = tempDir('precopy-e2e-link-');
  const pair = await NetPair.create({ subnet });
  let target: Target | null = null;
  try {
    await pair.limitRate('a', LINK.rate, LINK.burst);
    const spawner: Spawner = (cmd, args) => pair.spawn('a', cmd, args);
    // A test network of our own, not loopback: plaintext needs --insecure on both sides.
    const receiver = await startReceiver({ images, listen: `${pair.addr.b}:0`, args: ['--insecure'], spawner: (cmd, args) => pair.spawn('b', cmd, args) });
    try {
      target = await Target.start({ mib: FAST.mib, seed: 32 });
      await target.writers(FAST.threads, FAST.rate);
      const session = `conv-${name}-${process.pid}`;
      const run = await runSender(
        [
          '--pid',
          String(target.pid),
          '--to',
          receiver.address,
          '--session',
          session,
          '--downtime-ms',
          String(TARGET_MS),
          '--after',
          'stop',
          '--insecure',
          ...extra,
        ],
        { spawner },
      );
      t.is(run.code, expectCode, describeRun(run));
      if (expectCode !== 0) {
        // Given up: the target runs on as before, and the receiver's session is aborted.
        await assertUnharmed(t, target, { writers: true });
        const held = (await new ImageStore(images).list()).find((x) => x.meta.sessionId === session);
        t.is(held?.state, 'aborted');
        return run;
      }
      logRounds(t, run);
      await fidelity(t, images, session, target.pid);
      return run;
    } finally {
      await receiver.stop();
    }
  } finally {
    if (target) killStopped(target.pid);
    await pair.destroy();
    fs.rmSync(images, { recursive: true, force: true });
  }
}

test.serial('--on-no-convergence freeze: a writer faster than the link stops on the no-progress rule and still yields a correct image', async (t) => {
  const s = (await overLink(t, '10.77.41.0', 'fast', ['--on-no-convergence', 'freeze'])).summary!;
  t.is(s.stopReason, 'no-progress');
  t.true(s.precopyRounds >= 4, 'no progress is judged over two rounds after round 1');
  t.is(s.maxThrottlePercent, 0);
  t.true(s.memoryBytes >= FAST.mib * MiB);
});

test.serial('by default the same fast writer is throttled until it converges, the downtime under the target', async (t) => {
  const s = (await overLink(t, '10.77.42.0', 'auto', [])).summary!;
  t.is(s.stopReason, 'downtime');
  t.true(s.maxThrottlePercent >= 20, `throttled up to ${s.maxThrottlePercent}%`);
  const throttled = s.rounds.filter((r) => r.throttlePercent > 0).map((r) => r.throttlePercent);
  t.deepEqual(
    [...throttled].sort((a, b) => a - b),
    throttled,
    'the throttle only grows',
  );
  t.true(s.downtimeSeconds < TARGET_MS / 1000, `downtime ${s.downtimeSeconds} s under ${TARGET_MS} ms`);
});

test.serial('--on-no-convergence abort: the same fast writer is never frozen; the sender gives up, the target runs on', async (t) => {
  // A 100 ms target the writer cannot let it meet (the 600 ms one it sometimes nearly does unthrottled).
  const run = await overLink(t, '10.77.43.0', 'abort', ['--on-no-convergence', 'abort', '--downtime-ms', '100'], 3);
  t.regex(
    run.stderr,
    /^sender: gave up after \d+ rounds without freezing the target \(--on-no-convergence abort\): dirty set did not shrink over the last two rounds \(expected downtime \d+ ms, target 100 ms\); the target runs on, untouched \(nothing committed\)$/m,
  );
  t.notRegex(run.stderr, /at .*\.js:\d+/, 'no stack trace');
});
