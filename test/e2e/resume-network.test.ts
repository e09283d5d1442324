// Resume instead of restart (docs/design.md, Resume) over a real, damaged link: the sender in one network
// namespace, the receiver in another, joined by a veth pair the test makes (test/helpers/netns.ts;
// 10.x addresses, so plaintext needs --insecure on both sides). Each migration must commit an
// image equal to the stopped target's memory; the figures (time, reconnects, rounds) are printed.
//   (a) the link cut for 4 s twice: during a pre-copy round (the connection may ride it out on TCP
//       retransmits, or break and be resumed), and at the start of stop-and-copy, where the target
//       is frozen: the sender must not wait it out frozen (PRECOPY_TEST_FROZEN_PATIENCE_MS=2000
//       stands for the 10 s of production), so it thaws the target, reconnects once the link is
//       back, resumes the session (the receiver's old stream is stale: the resume takes it over)
//       and freezes again later: at least one reconnect;
//   (b) 5% packet loss both ways (nftables numgen: the kernel has no netem);
//   (c) a slow link: 200 Mbit/s token bucket (tc tbf).

import test, { type ExecutionContext } from 'ava';
import * as fs from 'node:fs';
import { Target } from '../helpers/target';
import { NetPair } from '../helpers/netns';
import { startReceiver, type ReceiverHandle } from '../helpers/receiver';
import { killStopped, startSender, tempDir } from '../helpers/migration-cli';
import { assertResumedAndFaithful, roundsStarted, waitFor } from './resume-support';

const SLOW = { rate: '200mbit', burst: '256kb' };

interface Scenario {
  subnet: string;
  name: string;
  /** Shape the link before the migration. */
  setup(pair: NetPair): Promise<void>;
  /** Act while the migration runs (`finished()`: the sender exited). */
  during?(pair: NetPair, receiver: ReceiverHandle, finished: () => boolean, t: ExecutionContext): Promise<void>;
  minReconnects: number;
  /** More sender flags. */
  senderArgs?: string[];
}

async function migrateOver(t: ExecutionContext, s: Scenario): Promise<void> {
  const images = tempDir('precopy-e2e-resume-net-');
  const pair = await NetPair.create({ subnet: s.subnet });
  let target: Target | null = null;
  let receiver: ReceiverHandle | null = null;
  try {
    await s.setup(pair);
    const env = { ...process.env, PRECOPY_LOG: 'debug', PRECOPY_TEST_FROZEN_PATIENCE_MS: '2000' };
    receiver = await startReceiver({ images, listen: `${pair.addr.b}:0`, args: ['--insecure'], spawner: (cmd, args) => pair.spawn('b', cmd, args, { env }) });
    target = await Target.start({ mib: 64, seed: 71 });
    await target.writers(1, 10_000_000);
    const session = `resume-net-${s.name}-${process.pid}`;
    // --downtime-ms 1: never converges while the writer runs; stop-and-copy after 3 rounds a series.
    const sender = startSender(
      [
        '--pid',
        String(target.pid),
        '--to',
        receiver.address,
        '--insecure',
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
        ...(s.senderArgs ?? []),
      ],
      { spawner: (cmd, args) => pair.spawn('a', cmd, args, { env: { ...env, PRECOPY_LOG: 'info' } }) },
    );
    let finished = false;
    const done = sender.done.finally(() => (finished = true));
    if (s.during) await s.during(pair, receiver, () => finished, t);
    const run = await done;
    await assertResumedAndFaithful(t, run, images, session, target.pid, s.minReconnects);
  } finally {
    if (target) killStopped(target.pid);
    await receiver?.stop();
    await pair.destroy();
    fs.rmSync(images, { recursive: true, force: true });
  }
}

/** Cut the link for `ms`, then restore it. */
async function cutFor(pair: NetPair, ms: number, t: ExecutionContext, when: string): Promise<void> {
  await pair.cut();
  t.log(`link cut ${when}`);
  await new Promise((r) => setTimeout(r, ms));
  await pair.restore();
}

test.serial('link cut for 4 s during pre-copy and during stop-and-copy, over 2 streams: resumed, image correct', async (t) => {
  await migrateOver(t, {
    subnet: '10.77.61.0',
    name: 'cut',
    // Two streams: a cut breaks both; the resume reconnects the control stream and its lane.
    senderArgs: ['--streams', '2'],
    // Slow enough that a stop-and-copy round lasts long enough to be cut at its start.
    setup: (pair) => pair.limitRate('a', SLOW.rate, SLOW.burst),
    async during(pair, receiver, finished) {
      await waitFor(() => roundsStarted(receiver.stderr(), 'PRECOPY').includes(1), 'pre-copy round 1', finished);
      await cutFor(pair, 4000, t, 'during pre-copy round 1');
      await waitFor(() => roundsStarted(receiver.stderr(), 'STOP_AND_COPY').length > 0, 'stop-and-copy', finished);
      await cutFor(pair, 4000, t, 'at the start of stop-and-copy (target frozen)');
    },
    minReconnects: 1,
  });
});

test.serial('5% packet loss both ways: image correct', async (t) => {
  await migrateOver(t, {
    subnet: '10.77.62.0',
    name: 'loss',
    async setup(pair) {
      await pair.addLoss('a', 5);
      await pair.addLoss('b', 5);
    },
    minReconnects: 0,
  });
});

test.serial('slow link (tbf 200 Mbit/s): image correct', async (t) => {
  await migrateOver(t, {
    subnet: '10.77.63.0',
    name: 'slow',
    setup: (pair) => pair.limitRate('a', SLOW.rate, SLOW.burst),
    minReconnects: 0,
  });
});
