// The destination process a handover builds while the rounds arrive (docs/design.md, Handover):
// it follows the target's layout as it changes, it is rebuilt from the image when the session
// resumes after a receiver restart, and when building it fails the handover restores the image
// in full instead. Every case is judged by the workload's own checks at the destination.

import test from 'ava';
import { describeRun } from '../helpers/migration-cli';
import type { DestLink } from '../helpers/dest-host';
import { destAndWorkload, nextSubnet as nextSubnetOf, num, procState, runsOn, until } from '../helpers/handover-run';
import { waitStatus } from '../receiver/restore/helpers/workload';
import * as fs from 'node:fs';

const nextSubnet = (): string => nextSubnetOf(94);

const layoutChurn = test.macro(async (t, link: DestLink) => {
  const { dest, w } = await destAndWorkload(t, nextSubnet(), ['--accept-handover'], ['--workers', '2', '--mib', '96'], {}, link);
  const run = dest.startHandover(w.pid, 'hv-layout');
  // A "grow" every 50 ms while the sender runs: the heap grows, a 1 MiB mapping comes and goes, a
  // thread (and its stack) is created and joined.
  let grows = 0;
  const timer = setInterval(() => {
    if (procState(w.pid) === 'S' || procState(w.pid) === 'R') {
      process.kill(w.pid, 'SIGUSR2');
      grows++;
    }
  }, 50);
  const r = await run.done.finally(() => clearInterval(timer));
  t.is(r.code, 0, describeRun(r));
  t.true(grows >= 3, `${grows} grows during the migration`);
  const h = r.summary!.handover!;
  t.true(h.prebuilt, 'built during pre-copy');
  t.log(
    `${grows} grows; ${r.summary!.rounds.length} rounds; restore ${(h.restoreSeconds * 1000).toFixed(0)} ms of ${(h.totalDowntimeSeconds * 1000).toFixed(0)} ms downtime`,
  );
  await until('the source to be gone', () => procState(w.pid) === null);
  await runsOn(w, t);
  // And it grows on at the destination.
  const there = dest.rootPid(w.pid)!;
  const before = num(w.status()!, 'grow_done');
  process.kill(there, 'SIGUSR2');
  const s = await waitStatus(w.dir, (x) => num(x, 'grow_done') > before, 'a grow at the destination');
  t.is(s.grow_errors, '0');
});

// Over the two-namespace network, and with the link over loopback inside the destination's
// namespace (the process itself always moves between namespaces: see dest-host.ts).
for (const link of ['veth', 'loopback'] as const) {
  test.serial(`the layout changes during pre-copy (brk, mmap, munmap, new threads): the process built meanwhile runs on (link ${link})`, layoutChurn, link);
}

test.serial('building the process fails during pre-copy: the handover restores the image in full', async (t) => {
  for (const at of ['open', 'pages']) {
    const { dest, w } = await destAndWorkload(t, nextSubnet(), ['--accept-handover'], ['--workers', '2', '--mib', '16'], {
      PRECOPY_FAULT_PREBUILD_FAIL_AT: at,
    });
    const r = await dest.handover(w.pid, `hv-fallback-${at}`);
    t.is(r.code, 0, describeRun(r));
    t.false(r.summary!.handover!.prebuilt, `${at}: restored in full`);
    t.regex(dest.receiver.stderr(), new RegExp(`building the process during pre-copy failed at ${at}`));
    await until('the source to be gone', () => procState(w.pid) === null);
    await runsOn(w, t);
  }
});

test.serial('the receiver killed during pre-copy: the session resumes, the process is rebuilt from the image, the handover completes', async (t) => {
  const { dest, w } = await destAndWorkload(t, nextSubnet(), ['--accept-handover'], ['--workers', '2', '--mib', '256']);
  const run = dest.startHandover(w.pid, 'hv-resume', {}, ['--reconnect-timeout', '30']);
  // Kill it once the session holds a durable round (its first round-end on disk).
  const durable = (): number => {
    try {
      return (JSON.parse(fs.readFileSync(`${dest.images}/hv-resume/state.json`, 'utf8')) as { lastDurableRound: number }).lastDurableRound;
    } catch {
      return -1;
    }
  };
  await until('a durable round', () => durable() >= 0, 30_000);
  await dest.restartReceiver();
  const r = await run.done;
  t.is(r.code, 0, describeRun(r));
  t.true(r.summary!.reconnects >= 1, 'the sender resumed the session');
  t.true(r.summary!.handover!.prebuilt, 'rebuilt from the image at the resume, then built on');
  await until('the source to be gone', () => procState(w.pid) === null);
  await runsOn(w, t);
});

test.serial('the sender SIGKILLed during pre-copy and while frozen: the source runs on, the process being built is gone', async (t) => {
  const { dest, w } = await destAndWorkload(t, nextSubnet(), ['--accept-handover'], ['--workers', '2', '--mib', '64']);
  const phases: Array<[string, RegExp, string[]]> = [
    ['pre-copy', /^migrate: debug: round 1:/m, []],
    ['frozen', /^migrate: debug: stop-and-copy: freeze/m, ['--max-rounds', '2']],
  ];
  for (const [phase, trigger, extra] of phases) {
    const run = dest.startHandover(w.pid, `hv-kill-${phase}`, { PRECOPY_LOG: 'debug' }, extra);
    let stderr = '';
    run.child.stderr!.on('data', (d: Buffer | string) => {
      stderr += d.toString();
      if (trigger.test(stderr)) run.child.kill('SIGKILL');
    });
    const r = await run.done;
    t.is(r.signal, 'SIGKILL', `${phase}: killed in that phase\n${describeRun(r)}`);
    await until(`${phase}: the source running again`, () => procState(w.pid) === 'S' || procState(w.pid) === 'R');
    await runsOn(w, t);
    await until(`${phase}: nothing left at the destination`, () => dest.others().length === 0);
    t.is(dest.record(`hv-kill-${phase}`), null, `${phase}: no handover was decided`);
  }
});

test.serial('the link cut while the source is frozen for the final round: the sender resumes, the handover completes, one copy runs', async (t) => {
  const { dest, w } = await destAndWorkload(t, nextSubnet(), ['--accept-handover'], ['--workers', '2', '--mib', '64']);
  // Frozen, the sender waits 1 s (not 10) for a stalled link before it thaws the source and reconnects.
  const env = { PRECOPY_LOG: 'debug', PRECOPY_TEST_FROZEN_PATIENCE_MS: '1000' };
  const run = dest.startHandover(w.pid, 'hv-cut-frozen', env, ['--max-rounds', '2', '--reconnect-timeout', '30']);
  let stderr = '';
  let cut: Promise<void> | null = null;
  run.child.stderr!.on('data', (d: Buffer | string) => {
    stderr += d.toString();
    // The veth link down for 3 s as the freeze starts: the final round cannot reach the receiver.
    if (!cut && /^migrate: debug: stop-and-copy: freeze/m.test(stderr)) {
      cut = dest.pair.cut().then(async () => {
        await new Promise((r) => setTimeout(r, 3000));
        await dest.pair.restore();
      });
    }
  });
  const r = await run.done;
  await cut;
  t.truthy(cut, 'the link was cut while frozen');
  t.is(r.code, 0, describeRun(r));
  t.true(r.summary!.reconnects >= 1, 'the sender resumed the session');
  t.is(r.summary!.handover!.destinationPid, w.pid);
  await until('the source to be gone', () => procState(w.pid) === null);
  t.truthy(dest.rootPid(w.pid));
  await runsOn(w, t);
});
