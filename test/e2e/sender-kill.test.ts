// The real sender CLI SIGKILLed at random moments of migrations of a hot multi-threaded target:
// whatever the sender was doing (opening the session, arming: ptrace injection in the arm helper,
// round 0, later rounds, auto-converge throttling: short freezes, the stop-and-copy freeze, the
// verify pass reading its snapshot after the thaw), the target runs on: alive, no thread stopped
// or traced, no userfaultfd left in its fds, no uffd-wp registration left, its own in-memory
// checksums consistent (`check`), its writers writing, no child, and the verify's snapshot process
// gone. The receiver (a real process, --abandon-after 1) marks the session aborted once nobody
// resumes it; a kill that lands after the commit leaves a committed image that verifies.
//
// The moments: each kill waits for a phase's line in the sender's debug log (PRECOPY_LOG=debug),
// then a random delay; where the kill really landed is read back from everything the sender wrote
// before it died (stderr to a pipe is synchronous in Node). Seeded: the seed is printed, and
// PRECOPY_SEED=N repeats a run. PRECOPY_SOAK=1 runs 10 times as many kills (same checks).
// One receiver and one target serve every kill of a batch.

import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { ImageStore } from '../../image/image-store';
import { startReceiver, type ReceiverHandle } from '../helpers/receiver';
import { Target } from '../helpers/target';
import { childPids, hasExited, threadStates } from '../helpers/procmem';
import { prng, sleep, threadTracers, waitFor } from '../native/native-helpers';
import { describeRun, receiverCli, startSender, tempDir, type Spawner } from '../helpers/migration-cli';
import { assertUnharmed } from './target-health';

const KILLS = 20;
const BATCHES = process.env.PRECOPY_SOAK ? 10 : 1;
const SEED = Number(process.env.PRECOPY_SEED ?? Date.now() % 1_000_000);
const MIB = 64;
/** 4 writer threads at 256 MiB/s in all: a round never catches up (auto-converge throttles). */
const WRITERS = 4;
const WRITE_RATE = 256 << 20;

const NEVER_CONVERGES = ['--downtime-ms', '1', '--max-rounds', '1000'];

interface Plan {
  /** What is aimed at (where the kill really lands is read from the log: Landed). */
  aim: string;
  flags: string[];
  /** The sender's log line to wait for. */
  trigger: RegExp;
  /** Random delay after the trigger, ms. */
  maxDelayMs: number;
}

const PLANS: Plan[] = [
  { aim: 'set-up', flags: NEVER_CONVERGES, trigger: /^link: debug: connected/m, maxDelayMs: 40 },
  { aim: 'arming', flags: NEVER_CONVERGES, trigger: /: migrating pid/m, maxDelayMs: 3 },
  { aim: 'round 0', flags: NEVER_CONVERGES, trigger: /^track: debug: armed pid/m, maxDelayMs: 60 },
  { aim: 'later rounds', flags: NEVER_CONVERGES, trigger: /^migrate: debug: round 1:/m, maxDelayMs: 80 },
  { aim: 'throttling', flags: [...NEVER_CONVERGES, '--auto-converge'], trigger: /^throttle: throttling the target/m, maxDelayMs: 300 },
  { aim: 'freeze', flags: ['--downtime-ms', '1', '--max-rounds', '2'], trigger: /^migrate: debug: stop-and-copy: freeze/m, maxDelayMs: 30 },
  // The target runs again; the verify pass reads the snapshot the capture helper holds.
  { aim: 'verify off the freeze', flags: ['--downtime-ms', '1', '--max-rounds', '2'], trigger: /^migrate: debug: verify: thawed/m, maxDelayMs: 60 },
];

type Landed = 'set-up' | 'arming' | 'round 0' | 'later rounds' | 'throttling' | 'freeze' | 'after commit' | 'verifying';

/** Where the sender was when it died: the last phase its log shows. */
function landed(stderr: string): Landed {
  if (/verify: thawed/.test(stderr)) return 'verifying';
  if (/stop-and-copy: commit/.test(stderr)) return 'after commit';
  if (/stop-and-copy: freeze/.test(stderr)) return 'freeze';
  if (/^throttle: throttling the target/m.test(stderr)) return 'throttling';
  if (/^migrate: debug: round 0:/m.test(stderr)) return 'later rounds';
  if (/^track: debug: armed pid/m.test(stderr)) return 'round 0';
  if (/: migrating pid/.test(stderr)) return 'arming';
  return 'set-up';
}

const debugSender: Spawner = (cmd, args) => spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PRECOPY_LOG: 'debug' } });

interface Kill {
  session: string;
  landed: Landed;
  killedAt: number;
  /** A thread of the target was in a tracing stop (throttle or stop-and-copy freeze) just before. */
  frozen: boolean;
  /** The arm helper was still injecting into the target when the sender died. */
  midInjection: boolean;
  /** The verify's snapshot process the sender had, if any. */
  snapshot?: number;
  /** First time the receiver was seen holding the session in a final state. */
  settledAt?: number;
  state?: string;
}

/** Polls the receiver's images directory (the store's own reading code) for the kills' sessions. */
class SessionWatch {
  private stopped = false;
  private readonly done: Promise<void>;
  constructor(
    private readonly images: string,
    private readonly kills: Kill[],
  ) {
    this.done = this.loop();
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      await this.poll();
      await sleep(100);
    }
  }

  async poll(): Promise<void> {
    const states = new Map((await new ImageStore(this.images).list()).map((s) => [s.meta.sessionId, s.state as string]));
    for (const k of this.kills) {
      const s = states.get(k.session);
      if (s !== undefined && s !== 'receiving' && k.settledAt === undefined) k.settledAt = performance.now();
      if (s !== undefined) k.state = s;
    }
  }

  /** Until every session that exists is final (or limitMs passed). */
  async settle(limitMs: number): Promise<void> {
    this.stopped = true;
    await this.done;
    const deadline = performance.now() + limitMs;
    for (;;) {
      await this.poll();
      if (performance.now() > deadline || !this.kills.some((k) => k.state === 'receiving')) return;
      await sleep(100);
    }
  }
}

/** The snapshot of a killed sender's verify pass: its helper saw the sender gone and killed it;
 *  the target has no child left (the snapshot never was one). */
async function assertSnapshotGone(t: ExecutionContext, target: Target, snapshot: number, label: string): Promise<void> {
  const gone = await waitFor(`${label}: snapshot ${snapshot} exits`, () => hasExited(snapshot), 20_000).then(
    () => true,
    () => false,
  );
  t.true(gone, `${label}: the snapshot process ${snapshot} is gone`);
  t.deepEqual(childPids(target.pid), [], `${label}: the target has no child`);
}

let receiver: ReceiverHandle;
let images: string;
test.before(async () => {
  images = tempDir('precopy-e2e-kill-');
  // Debug log: when a session is not abandoned, the receiver's reasons go into the failure message.
  receiver = await startReceiver({ images, args: ['--abandon-after', '1'], env: { PRECOPY_LOG: 'debug' } });
});
test.after.always(async () => {
  await receiver?.stop();
  if (images) fs.rmSync(images, { recursive: true, force: true });
});

/** What the receiver logged about a session and its stream (whose peer its start line names). */
function receiverLines(session: string): string {
  const lines = receiver.stderr().split('\n');
  const peer = lines.map((l) => (l.includes(session) ? / started by (\S+) /.exec(l)?.[1] : undefined)).find(Boolean);
  return lines.filter((l) => l.includes(session) || (peer !== undefined && l.includes(peer))).join('\n');
}

/** One sender run of `plan`, SIGKILLed at its moment; returns where it landed. */
async function killOnce(t: ExecutionContext, target: Target, plan: Plan, session: string, delayMs: number): Promise<Kill> {
  const sender = startSender(['--pid', String(target.pid), '--to', receiver.address, '--session', session, ...plan.flags], {
    json: false,
    spawner: debugSender,
  });
  let stderr = '';
  sender.child.stderr!.on('data', (d: Buffer | string) => (stderr += d.toString()));
  while (!plan.trigger.test(stderr) && sender.child.exitCode === null && sender.child.signalCode === null) await sleep(1);
  if (delayMs > 0) await sleep(delayMs);
  const frozen = threadStates(target.pid).some((s) => s.state === 't');
  sender.child.kill('SIGKILL');
  const killedAt = performance.now();
  const run = await sender.done;
  // The kernel detached the dead sender's tracees before its exit was reported: a tracer now is
  // an arm helper finishing an injection the kill interrupted the sender in.
  const midInjection = threadTracers(target.pid).some((x) => x !== 0);
  t.is(run.signal, 'SIGKILL', `${session}: the sender was still running when killed\n${describeRun(run)}`);
  const snapshot = /stop-and-copy: snapshot (\d+)/.exec(run.stderr)?.[1];
  return { session, landed: landed(run.stderr), killedAt, frozen, midInjection, snapshot: snapshot ? Number(snapshot) : undefined };
}

for (let batch = 0; batch < BATCHES; batch++) {
  test.serial(
    `sender SIGKILLed at ${KILLS} random moments: the target runs on unharmed, the sessions are aborted (batch ${batch + 1}/${BATCHES})`,
    async (t) => {
      t.timeout(10 * 60_000); // a hang guard for the whole batch (ava's own is 2 min of silence)
      const seed = SEED + batch;
      t.log(`seed ${seed} (PRECOPY_SEED=${SEED} repeats this run)`);
      const rnd = prng(seed);
      const target = await Target.start({ mib: MIB, seed: 80 + batch });
      const kills: Kill[] = [];
      const watch = new SessionWatch(images, kills);
      const started = performance.now();
      try {
        await target.writers(WRITERS, WRITE_RATE);
        // Every plan as often, in a random order.
        const order = Array.from({ length: KILLS }, (_, i) => PLANS[i % PLANS.length]).sort(() => rnd() - 0.5);
        for (const [i, plan] of order.entries()) {
          const session = `kill-${process.pid}-${batch}-${i}`;
          const kill = await killOnce(t, target, plan, session, Math.floor(rnd() * plan.maxDelayMs));
          kills.push(kill);
          const label = `kill ${i} (aimed at ${plan.aim}, landed in ${kill.landed})`;
          await assertUnharmed(t, target, { writers: true, label });
          if (kill.snapshot) await assertSnapshotGone(t, target, kill.snapshot, label);
        }
      } finally {
        await watch.settle(30_000);
        await target.kill();
      }

      // The receiver's view: aborted after --abandon-after; committed (and verifying) only when the
      // kill came after the commit; no session at all only when the sender died before opening one.
      for (const k of kills) {
        if (k.landed === 'after commit' || k.landed === 'verifying' || (k.landed === 'freeze' && k.state === 'committed')) {
          t.is(k.state, 'committed', `${k.session} (${k.landed})`);
          const verify = await receiverCli(['verify', '--images', images, k.session]);
          t.is(verify.code, 0, `${k.session}: ${verify.stdout}${verify.stderr}`);
        } else if (k.state === undefined) {
          t.true(k.landed === 'set-up' || k.landed === 'arming', `${k.session} (${k.landed}): the receiver has no such session`);
        } else {
          const said = receiverLines(k.session);
          t.is(k.state, 'aborted', `${k.session} (${k.landed}); the receiver said:\n${said}`);
        }
      }

      const per: Record<string, number> = {};
      for (const k of kills) per[k.landed] = (per[k.landed] ?? 0) + 1;
      const covered = (names: Landed[]) => names.some((n) => per[n] > 0);
      t.true(covered(['set-up', 'arming']), 'a kill during set-up or arming');
      t.true(covered(['round 0']), 'a kill during round 0');
      t.true(covered(['later rounds']), 'a kill during a later round');
      t.true(covered(['throttling']), 'a kill while throttling');
      t.true(covered(['freeze', 'after commit']), 'a kill during the stop-and-copy');
      t.true(covered(['verifying']), 'a kill during the verify off the freeze');
      t.true(
        kills.some((k) => k.frozen),
        'a kill with the target frozen',
      );
      const toAbort = kills.filter((k) => k.state === 'aborted' && k.settledAt !== undefined).map((k) => (k.settledAt! - k.killedAt) / 1000);
      t.log(`kills per phase: ${JSON.stringify(per)}`);
      t.log(
        `${kills.filter((k) => k.frozen).length} kills with the target frozen, ${kills.filter((k) => k.midInjection).length} with the arm helper mid-injection`,
      );
      t.log(
        `sessions: ${toAbort.length} aborted (kill to aborted: ${Math.min(...toAbort).toFixed(2)}-${Math.max(...toAbort).toFixed(2)} s with --abandon-after 1), ` +
          `${kills.filter((k) => k.state === 'committed').length} committed, ${kills.filter((k) => k.state === undefined).length} never opened`,
      );
      t.log(`${KILLS} kills in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    },
  );
}
