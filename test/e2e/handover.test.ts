// Handover (docs/design.md, Handover): `sender migrate --handover` ends with the process running
// at the destination and the source gone. The destination "host" is a network namespace plus a
// PID namespace with the receiver inside both (test/helpers/dest-host.ts); the sender runs in the
// other network namespace of the pair, its target in the root namespaces. Every case ends with
// exactly one copy of the workload running, judged by the workload's own checks.

import test from 'ava';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DestHost } from '../helpers/dest-host';
import { startFdloop } from '../helpers/fdloop';
import { collect, describeRun } from '../helpers/migration-cli';
import { destAndWorkload, nextSubnet as nextSubnetOf, oneLine, procState, runsOn, until } from '../helpers/handover-run';
import { RESTORE_TARGET, startWorkload } from '../receiver/restore/helpers/workload';

const nextSubnet = (): string => nextSubnetOf(93);

/** Where the destination's receiver serves its metrics, inside its network namespace. */
const METRICS_LISTEN = '127.0.0.1:9470';

/** The receiver's handover metrics, as one sample line each reads (`name{labels} value`). */
async function handoverMetrics(dest: DestHost): Promise<Record<string, number>> {
  const text = await dest.nodeInside(`fetch('http://${METRICS_LISTEN}/metrics').then((r) => r.text()).then((s) => process.stdout.write(s))`);
  const value = (sample: string): number =>
    Number(
      text
        .split('\n')
        .find((l) => l.startsWith(`${sample} `))
        ?.slice(sample.length + 1),
    );
  return {
    started: value('precopy_handovers_started_total'),
    succeeded: value('precopy_handovers_succeeded_total'),
    restoreFailed: value('precopy_handovers_rolled_back_total{reason="restore_failed"}'),
    receiverRestart: value('precopy_handovers_rolled_back_total{reason="receiver_restart"}'),
    restores: value('precopy_handover_restore_seconds_count'),
    processes: value('precopy_handed_over_processes'),
  };
}

test.serial('restore_target is handed over: it runs at the destination with its pid, the source is gone', async (t) => {
  const { dest, w } = await destAndWorkload(t, nextSubnet(), ['--accept-handover', '--metrics-listen', METRICS_LISTEN], ['--workers', '2', '--mib', '32']);
  const run = await dest.handover(w.pid, 'hv-target');
  t.is(run.code, 0, describeRun(run));
  const h = run.summary!.handover!;
  t.log(
    `downtime ${(h.totalDowntimeSeconds * 1000).toFixed(0)} ms: freeze->commit ${(h.freezeToCommitSeconds * 1000).toFixed(0)} ms, ` +
      `verify ${(h.verifySeconds * 1000).toFixed(0)} ms, restore ${(h.restoreSeconds * 1000).toFixed(0)} ms${h.prebuilt ? ' (built during pre-copy)' : ''}; image ${(run.summary!.memoryBytes / 2 ** 20).toFixed(0)} MiB`,
  );
  t.true(h.prebuilt, 'the receiver built the process while the rounds arrived');
  const split = [h.freezeSeconds, h.captureSeconds, h.finalRoundSeconds, h.commitSeconds];
  t.true(split.every((x) => x > 0) && Math.abs(split.reduce((a, x) => a + x) - h.freezeToCommitSeconds) < 0.005, `freeze to commit, split: ${split}`);
  t.is(h.destinationPid, w.pid, 'same pid inside the destination PID namespace');
  await until('the source to be gone', () => procState(w.pid) === null);
  const there = dest.rootPid(w.pid);
  t.truthy(there, 'the process exists in the destination namespace');
  t.is(fs.readlinkSync(`/proc/${there}/exe`), RESTORE_TARGET);
  await runsOn(w, t);
  t.is(dest.record('hv-target')?.state, 'running');
  t.deepEqual(
    await handoverMetrics(dest),
    { started: 1, succeeded: 1, restoreFailed: 0, receiverRestart: 0, restores: 1, processes: 1 },
    'the metrics count it',
  );
  // Not tied to the receiver: kill -9 it, the process runs on (reparented to the namespace's init).
  process.kill(dest.receiverPid(), 'SIGKILL');
  await new Promise((r) => setTimeout(r, 300));
  t.truthy(procState(there!), 'alive after the receiver died');
  await runsOn(w, t);
  // A restart that finds the record `starting` (as if the receiver had died during the start)
  // decides from facts: the image's pid runs the image's program, so `running`.
  dest.setRecordState('hv-target', 'starting');
  await dest.restartReceiver();
  t.is(dest.record('hv-target')?.state, 'running');
  t.regex(dest.receiver.stderr(), /handover left starting by an earlier run: running/);
});

test.serial('fdloop is handed over: its listening socket, epoll, timer, pipe and memfd work at the destination', async (t) => {
  const dest = await DestHost.create(nextSubnet(), ['--accept-handover']);
  t.teardown(() => dest.destroy());
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'precopy-hv-fdloop-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const f = await startFdloop(path.join(dir, 'progress.log'));
  const ticks0 = Number(/ticks=(\d+)/.exec(await f.ask('status'))![1]);
  const run = await dest.handover(f.pid, 'hv-fdloop');
  t.is(run.code, 0, describeRun(run));
  t.is(run.summary!.handover!.destinationPid, f.pid);
  await until('the source to be gone', () => procState(f.pid) === null);
  // Its control port now listens inside the destination's network namespace.
  const ask = (cmd: string): Promise<string> =>
    dest.nodeInside(
      `const s=require('net').connect(${f.port},'127.0.0.1');let g='';s.on('connect',()=>s.write(${JSON.stringify(cmd + '\n')}));` +
        `s.on('data',d=>g+=d);s.on('close',()=>console.log(g.trim()));s.on('error',e=>{console.log('error '+e.message)})`,
    );
  let status = await ask('status');
  t.regex(status, /errors=0$/);
  await new Promise((r) => setTimeout(r, 300));
  status = await ask('status');
  t.true(Number(/ticks=(\d+)/.exec(status)![1]) > ticks0 + 5, status);
  t.is(await ask('readpipe'), 'pipe ok');
  t.is(await ask('memfd'), 'memfd ok');
  t.is(await ask('eventfd'), 'eventfd ok');
});

test.serial('a receiver without --accept-handover refuses with one line; the target is never touched', async (t) => {
  const { dest, w } = await destAndWorkload(t, nextSubnet(), [], []);
  const run = await dest.handover(w.pid, 'hv-refused');
  t.is(run.code, 1, describeRun(run));
  t.regex(oneLine(run.stderr)[0] ?? '', /handover refused: this receiver does not accept handovers/);
  t.is(oneLine(run.stderr).length, 1, run.stderr);
  t.regex(dest.receiver.stderr(), /handover refused/);
  t.is(/^TracerPid:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${w.pid}/status`, 'utf8'))?.[1], '0');
  t.not(procState(w.pid), 'T');
  await runsOn(w, t);
});

test.serial('--accept-handover needs an authenticated link: refused at start without a token', async (t) => {
  const images = fs.mkdtempSync(path.join(os.tmpdir(), 'precopy-hv-noauth-'));
  t.teardown(() => fs.rmSync(images, { recursive: true, force: true }));
  const { RECEIVER_CLI } = await import('../helpers/receiver');
  const { spawn } = await import('node:child_process');
  const run = await collect(spawn(process.execPath, [RECEIVER_CLI, 'serve', '--listen', '127.0.0.1:0', '--images', images, '--accept-handover']));
  t.is(run.code, 2, describeRun(run));
  t.regex(run.stderr, /--accept-handover needs an authenticated link/);
});

test.serial('the restore failing at its last step: the source runs on, nothing runs at the destination', async (t) => {
  const { dest, w } = await destAndWorkload(t, nextSubnet(), ['--accept-handover', '--metrics-listen', METRICS_LISTEN], ['--workers', '2', '--mib', '16'], {
    PRECOPY_FAULT_RESTORE_FAIL_AT: 'detach',
  });
  const run = await dest.handover(w.pid, 'hv-fail');
  t.is(run.code, 1, describeRun(run));
  t.regex(run.stderr, /handover failed: .*detach: injected failure.*; the source process \d+ runs on/);
  t.is(oneLine(run.stderr).length, 1, run.stderr);
  t.not(procState(w.pid), 'T');
  await runsOn(w, t);
  t.deepEqual(dest.others(), [], 'no process left at the destination');
  t.is(dest.record('hv-fail')?.state, 'rolled-back');
  t.deepEqual(
    await handoverMetrics(dest),
    { started: 1, succeeded: 0, restoreFailed: 1, receiverRestart: 0, restores: 0, processes: 0 },
    'the metrics count it',
  );
  // The same record left `starting` by a receiver that died: no such process, so rolled back.
  dest.setRecordState('hv-fail', 'starting');
  await dest.restartReceiver();
  t.is(dest.record('hv-fail')?.state, 'rolled-back');
  t.is((await handoverMetrics(dest)).receiverRestart, 1, 'the new run counts its decision');
});

test.serial('the sender killed right after asking: the source stays stopped, `sender resolve` kills it; one copy runs', async (t) => {
  const { dest, w } = await destAndWorkload(t, nextSubnet(), ['--accept-handover'], ['--workers', '2', '--mib', '16']);
  const run = await dest.handover(w.pid, 'hv-die', { PRECOPY_FAULT_HANDOVER_DIE: 'after-ask' });
  t.is(run.signal, 'SIGKILL', describeRun(run));
  t.is(procState(w.pid), 'T', 'the source is stopped');
  await until('the destination to decide', () => dest.record('hv-die')?.state === 'running');
  await new Promise((r) => setTimeout(r, 300));
  t.is(procState(w.pid), 'T', 'the source stays stopped after the sender died');
  const resolve = await dest.resolve('hv-die', w.pid);
  t.is(resolve.code, 0, describeRun(resolve));
  t.regex(resolve.stdout, /runs at the destination .*source process \d+ killed/);
  await until('the source to be gone', () => procState(w.pid) === null);
  t.truthy(dest.rootPid(w.pid));
  await runsOn(w, t);
});

test.serial('a receiver with --handover-users refuses a process of another user; --handover refuses --after', async (t) => {
  const images = fs.mkdtempSync(path.join(os.tmpdir(), 'precopy-hv-users-'));
  t.teardown(() => fs.rmSync(images, { recursive: true, force: true }));
  const token = path.join(images, 'token');
  fs.writeFileSync(token, 'users-test-token\n', { mode: 0o600 });
  const { startReceiver } = await import('../helpers/receiver');
  const receiver = await startReceiver({ images, args: ['--token-file', token, '--accept-handover', '--handover-users', 'nobody'] });
  t.teardown(() => receiver.stop());
  const w = await startWorkload([]);
  t.teardown(() => w.child.kill('SIGKILL'));
  const { runSender } = await import('../helpers/migration-cli');
  const run = await runSender(['--pid', String(w.pid), '--to', receiver.address, '--handover', '--token-file', token]);
  t.is(run.code, 1, describeRun(run));
  t.regex(oneLine(run.stderr)[0] ?? '', /handover refused: uid 0 is not in this receiver's --handover-users/);
  const after = await runSender(['--pid', String(w.pid), '--to', receiver.address, '--handover', '--after', 'kill', '--token-file', token]);
  t.is(after.code, 2, describeRun(after));
  t.regex(after.stderr, /--handover decides what becomes of the source/);
  t.not(procState(w.pid), 'T');
  await runsOn(w, t);
});

test.serial('the link cut right after asking: the sender learns the decision through Resolve; one copy runs', async (t) => {
  const { dest, w } = await destAndWorkload(t, nextSubnet(), ['--accept-handover'], ['--workers', '2', '--mib', '16']);
  const run = await dest.handover(w.pid, 'hv-cut', { PRECOPY_FAULT_HANDOVER_DIE: 'cut-after-ask' });
  const record = dest.record('hv-cut');
  t.log(`record: ${JSON.stringify(record)}`);
  t.regex(run.stderr, /the link broke after asking for the start .*asking the receiver what it decided/);
  if (run.code === 0) {
    // The start went through: the source is gone, the destination runs.
    t.is(record?.state, 'running');
    t.is(run.summary!.handover!.destinationPid, w.pid);
    await until('the source to be gone', () => procState(w.pid) === null);
    t.truthy(dest.rootPid(w.pid));
  } else {
    // The ask was lost with the link: Resolve fenced it off, the source runs on.
    t.is(record?.state, 'rolled-back', describeRun(run));
    t.regex(oneLine(run.stderr)[0] ?? '', /source process \d+ runs on/);
    t.not(procState(w.pid), 'T');
    t.deepEqual(dest.others(), []);
  }
  await runsOn(w, t);
});

test.serial('the sender killed before asking: the source stays stopped, `sender resolve` continues it; nothing starts later', async (t) => {
  const { dest, w } = await destAndWorkload(t, nextSubnet(), ['--accept-handover'], ['--workers', '2', '--mib', '16']);
  const run = await dest.handover(w.pid, 'hv-early', { PRECOPY_FAULT_HANDOVER_DIE: 'before-ask' });
  t.is(run.signal, 'SIGKILL', describeRun(run));
  await new Promise((r) => setTimeout(r, 300));
  t.is(procState(w.pid), 'T', 'the source stays stopped after the sender died');
  t.is(dest.record('hv-early'), null, 'nothing was asked');
  const resolve = await dest.resolve('hv-early', w.pid);
  t.is(resolve.code, 0, describeRun(resolve));
  t.regex(resolve.stdout, /was not started at the destination .*source process \d+ continued/);
  t.is(dest.record('hv-early')?.state, 'rolled-back', 'fenced: a late ask can no longer start it');
  t.not(procState(w.pid), 'T');
  await runsOn(w, t);
  t.deepEqual(dest.others(), []);
});
