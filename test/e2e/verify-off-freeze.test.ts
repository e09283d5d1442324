// The verify pass off the freeze (`--after resume`, the default): the target runs on right after
// the commit and the pass reads a copy-on-write snapshot of its frozen memory instead
// (docs/design.md, Verify off the freeze). What it must show:
//   - a lost write is still found, re-sent from the snapshot and committed, and the image holds
//     the memory as it was at the freeze;
//   - no trace in the target: no SIGCHLD, no child, no zombie, no child accounting
//     (getrusage(RUSAGE_CHILDREN)), no extra mapping or fd; its own fork()/wait() calls made
//     meanwhile see exactly their own children; the snapshot process is gone afterwards.

import test, { type ExecutionContext } from 'ava';
import * as fs from 'node:fs';
import { spawn } from 'node:child_process';
import { Target } from '../helpers/target';
import { childPids, hasExited, readMaps, readMem } from '../helpers/procmem';
import { describeRun, exportRaw, runSender, startSender, useReceiver, type SenderRun, type Spawner } from '../helpers/migration-cli';
import { waitFor } from '../native/native-helpers';
import { assertUnharmed } from './target-health';

const shared = useReceiver(test, 'precopy-e2e-offfreeze-');
const PAGE = 4096;

let sessions = 0;
const sessionId = (name: string) => `off-${name}-${process.pid}-${sessions++}`;
const debugEnv = { PRECOPY_LOG: 'debug' };

/** The snapshot the sender's debug log names, checked gone. */
async function snapshotGone(t: ExecutionContext, run: SenderRun): Promise<void> {
  const m = /stop-and-copy: snapshot (\d+)/.exec(run.stderr);
  if (!m) return void t.fail(`the sender took no snapshot:\n${describeRun(run)}`);
  await waitFor(`snapshot process ${m[1]} exits`, () => hasExited(Number(m[1])), 10_000);
  t.pass();
}

function offFreeze(t: ExecutionContext, run: SenderRun): void {
  t.is(run.code, 0, describeRun(run));
  const v = run.summary!.verify;
  t.not(v.mode, 'skipped');
  if (v.mode !== 'skipped') t.true(v.offFreeze, `verified while frozen:\n${run.stderr}`);
  t.log(`verify ${JSON.stringify(v)}; frozen ${(run.summary!.frozenSeconds * 1000).toFixed(1)} ms`);
}

test.serial('a lost write is found off the freeze, re-sent from the snapshot; the image holds the frozen memory', async (t) => {
  // Writes come from the test, one command at a time, until the sender's log shows the freeze:
  // every write but the one in flight then is in the frozen memory, and nothing writes the main
  // area after the thaw, so the main area now is what was frozen (but for that one page).
  const target = await Target.start({ mib: 32, seed: 31 });
  try {
    const session = sessionId('lost');
    const debugSpawn: Spawner = (cmd, args) =>
      spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...debugEnv, PRECOPY_FAULT_LOSE_WRITES: '5' } });
    const m = startSender(
      [
        '--pid',
        String(target.pid),
        '--to',
        shared.receiver().address,
        '--session',
        session,
        '--downtime-ms',
        '1',
        '--max-rounds',
        '2',
        '--on-no-convergence',
        'freeze',
      ],
      { spawner: debugSpawn },
    );
    let stderr = '';
    m.child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    let inFlight = -1;
    for (let i = 0; !/stop-and-copy: freeze/.test(stderr) && m.child.exitCode === null; i++) {
      inFlight = (i * 7) % target.pages;
      await target.write(inFlight);
    }
    const run = await m.done;
    offFreeze(t, run);
    const s = run.summary!;
    t.is(s.verify.mode, 'fixed');
    t.true(s.verify.mismatches >= 1 && s.verify.mismatches <= 5, `${s.verify.mismatches} pages re-sent`);
    t.is(s.rounds[s.rounds.length - 1].phase, 'VERIFY_FIX');

    const out = await exportRaw(shared.images(), session);
    try {
      const vma = readMaps(target.pid).find((v) => v.start <= target.base && target.base < v.end)!;
      const image = fs
        .readFileSync(`${out}/${vma.start.toString(16)}-${vma.end.toString(16)}.bin`)
        .subarray(target.base - vma.start, target.base - vma.start + target.pages * PAGE);
      const memory = readMem(target.pid, target.base, target.pages * PAGE);
      let equal = 0;
      for (let p = 0; p < target.pages; p++) {
        if (p === inFlight) continue;
        const a = image.subarray(p * PAGE, (p + 1) * PAGE);
        if (!a.equals(memory.subarray(p * PAGE, (p + 1) * PAGE))) return void t.fail(`main page ${p} differs from the frozen memory`);
        equal++;
      }
      t.log(`${equal} main pages equal to the frozen memory`);
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
    await snapshotGone(t, run);
    await assertUnharmed(t, target);
  } finally {
    await target.kill();
  }
});

test.serial('no trace in the target: no SIGCHLD, child, zombie, child accounting, mapping or fd', async (t) => {
  const target = await Target.start({ mib: 64, seed: 32 });
  try {
    await target.countSigchld();
    await target.writers(2, 20_000_000);
    const before = { stats: await target.childStats(), fds: [...(await target.fds()).entries()], maps: fs.readFileSync(`/proc/${target.pid}/maps`, 'utf8') };
    const run = await runSender(['--pid', String(target.pid), '--to', shared.receiver().address, '--session', sessionId('trace')], { env: debugEnv });
    offFreeze(t, run);
    await snapshotGone(t, run);
    t.deepEqual(childPids(target.pid), [], 'no child (nor zombie)');
    t.deepEqual(await target.childStats(), before.stats, 'no SIGCHLD, getrusage(RUSAGE_CHILDREN) unchanged');
    t.deepEqual([...(await target.fds()).entries()], before.fds, 'the same fds');
    t.is(fs.readFileSync(`/proc/${target.pid}/maps`, 'utf8'), before.maps, 'the same mappings');
    await assertUnharmed(t, target, { writers: true });
  } finally {
    await target.kill();
  }
});

test.serial("the target's own fork() and wait() during the migration see only their own children", async (t) => {
  const target = await Target.start({ mib: 64, seed: 33 });
  try {
    await target.writers(1, 20_000_000);
    await target.forkLoop(true);
    const run = await runSender(['--pid', String(target.pid), '--to', shared.receiver().address, '--session', sessionId('forks')], { env: debugEnv });
    offFreeze(t, run);
    await snapshotGone(t, run);
    await target.forkLoop(false);
    const stats = await target.childStats();
    t.true(stats.forks > 0, 'the loop forked');
    t.is(stats.anomalies, 0, `its wait() saw a child it did not fork, or missed its own (${stats.forks} forks)`);
    t.deepEqual(childPids(target.pid), []);
    await assertUnharmed(t, target, { writers: true });
  } finally {
    await target.kill();
  }
});

test.serial('--verify-frozen keeps the pass in the freeze; with --no-verify it is refused', async (t) => {
  const target = await Target.start({ mib: 16, seed: 34 });
  try {
    const run = await runSender(['--pid', String(target.pid), '--to', shared.receiver().address, '--session', sessionId('frozen'), '--verify-frozen']);
    t.is(run.code, 0, describeRun(run));
    const v = run.summary!.verify;
    t.is(v.mode, 'ok');
    if (v.mode !== 'skipped') t.false(v.offFreeze);
    const bad = await runSender(['--pid', String(target.pid), '--to', shared.receiver().address, '--verify-frozen', '--no-verify'], { json: false });
    t.is(bad.code, 2, describeRun(bad));
    t.regex(bad.stderr, /--verify-frozen and --no-verify contradict each other/);
    t.notRegex(bad.stderr, /\n\s+at /, 'no stack trace');
    await assertUnharmed(t, target);
  } finally {
    await target.kill();
  }
});

test.serial('a target the snapshot would be handed back to (a child subreaper) is verified while frozen, and the sender says why', async (t) => {
  const target = await Target.start({ mib: 16, seed: 35 });
  try {
    await target.subreaper();
    await target.countSigchld();
    const run = await runSender(['--pid', String(target.pid), '--to', shared.receiver().address, '--session', sessionId('subreaper')], { env: debugEnv });
    t.is(run.code, 0, describeRun(run));
    const v = run.summary!.verify;
    t.is(v.mode, 'ok');
    if (v.mode !== 'skipped') t.false(v.offFreeze);
    t.regex(run.stderr, /the verify pass stays in the freeze: no snapshot of process \d+: it is a child subreaper/);
    t.deepEqual(childPids(target.pid), []);
    t.is((await target.childStats()).sigchld, 0);
    await assertUnharmed(t, target);
  } finally {
    await target.kill();
  }
});
