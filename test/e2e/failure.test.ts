// Failures, end to end: whatever goes wrong, the sender says what happened in one line, exits
// non-zero, leaves the target running untouched (not stopped, not traced, not write-protected) and
// never leaves a committed image behind.

import test from 'ava';
import { spawn } from 'node:child_process';
import * as net from 'node:net';
import { Target } from '../helpers/target';
import { isAlive, threadStates, tracerPid, vmFlags } from '../helpers/procmem';
import { describeRun, receiverCli, runSender, startSender, useReceiver, type Spawner } from '../helpers/migration-cli';

const shared = useReceiver(test, 'precopy-e2e-fail-');

/** The target runs on as if nothing happened: not traced, no thread stopped, no uffd-wp left. */
async function assertUnharmed(t: import('ava').ExecutionContext, target: Target): Promise<void> {
  t.true(isAlive(target.pid));
  t.is(tracerPid(target.pid), 0, 'not traced');
  t.deepEqual(
    threadStates(target.pid).filter((s) => s.state === 'T' || s.state === 't'),
    [],
    'no thread left stopped',
  );
  t.false(vmFlags(target.pid, target.base)?.includes('uw') ?? false, 'no userfaultfd write-protect registration left');
  const check = await target.check();
  t.is(check.bad, 0, 'its pages are consistent');
}

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

test('receiver unreachable: clear error, target unharmed', async (t) => {
  const target = await Target.start({ mib: 16, seed: 41 });
  try {
    await target.writers(1, 5_000_000);
    const port = await freePort();
    const run = await runSender(['--pid', String(target.pid), '--to', `127.0.0.1:${port}`], { json: false });
    t.not(run.code, 0);
    t.regex(run.stderr, new RegExp(`cannot reach receiver at 127\\.0\\.0\\.1:${port} \\(connection refused\\)`), describeRun(run));
    t.notRegex(run.stderr, /\n\s+at /, 'no stack trace');
    t.is(run.stdout, '');
    await assertUnharmed(t, target);
  } finally {
    await target.kill();
  }
});

test('target exits mid-migration: clean abort, clear message, nothing committed', async (t) => {
  const target = await Target.start({ mib: 128, seed: 42 });
  await target.writers(2, 0);
  const session = `fail-exit-${process.pid}`;
  // --downtime-ms 1: keeps iterating, so the exit lands inside a pre-copy round after round 0.
  const sender = startSender(
    ['--pid', String(target.pid), '--to', shared.receiver().address, '--session', session, '--downtime-ms', '1', '--max-rounds', '1000'],
    { json: false },
  );
  t.true(await sender.until(/^\s+1\s+pre-copy/m), 'round 1 finished');
  await target.exit();
  const run = await sender.done;
  t.not(run.code, 0, describeRun(run));
  t.regex(run.stderr, new RegExp(`process ${target.pid} exited during the migration`), describeRun(run));
  t.notRegex(run.stderr, /\n\s+at /, 'no stack trace');
  const verify = await receiverCli(['verify', '--images', shared.images(), session]);
  t.not(verify.code, 0, 'the session is not a committed image');
  const list = await receiverCli(['list', '--images', shared.images()]);
  const line = list.stdout.split('\n').find((l) => l.includes(session)) ?? '';
  t.regex(line, /aborted|failed/, `session state: ${line}`);
});

test('SIGTERM while throttling: the target is thawed and runs on, the session is aborted', async (t) => {
  const target = await Target.start({ mib: 64, seed: 43 });
  try {
    await target.writers(1, 0);
    const session = `fail-term-${process.pid}`;
    const sender = startSender(
      ['--pid', String(target.pid), '--to', shared.receiver().address, '--session', session, '--downtime-ms', '1', '--max-rounds', '1000', '--auto-converge'],
      { json: false },
    );
    // Interrupt while the auto-converge throttle is freezing the target part of the time.
    t.true(await sender.until(/\d+%\s*$/m), 'a throttled round finished');
    sender.child.kill('SIGTERM');
    const run = await sender.done;
    t.not(run.code, 0, describeRun(run));
    t.regex(run.stderr, /interrupted by SIGTERM/);
    await assertUnharmed(t, target);
    const verify = await receiverCli(['verify', '--images', shared.images(), session]);
    t.not(verify.code, 0);
  } finally {
    await target.kill();
  }
});

test('user mistakes get one clear line: dead pid, bad flags, help', async (t) => {
  const dead = await Target.start({ mib: 1 });
  const pid = dead.pid;
  await dead.exit();
  const gone = await runSender(['--pid', String(pid), '--to', shared.receiver().address], { json: false });
  t.not(gone.code, 0);
  t.regex(gone.stderr, new RegExp(`no such process ${pid}`));
  t.notRegex(gone.stderr, /\n\s+at /);

  const bad = await runSender(['--pid', 'abc', '--to', shared.receiver().address], { json: false });
  t.not(bad.code, 0);
  t.regex(bad.stderr, /--pid expects a whole number/);

  const noTo = await runSender(['--pid', '1'], { json: false });
  t.regex(noTo.stderr, /--to is required/);

  const after = await runSender(['--pid', '1', '--to', shared.receiver().address, '--after', 'explode'], { json: false });
  t.regex(after.stderr, /--after must be one of resume, stop, kill/);

  // not root (and no CAP_SYS_PTRACE): nobody, through setpriv (util-linux)
  const nobody: Spawner = (cmd, args) =>
    spawn('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const denied = await runSender(['--pid', String(process.pid), '--to', shared.receiver().address], { json: false, spawner: nobody });
  t.not(denied.code, 0);
  t.regex(denied.stderr, /^sender: permission denied: need root or CAP_SYS_PTRACE$/m, describeRun(denied));

  const help = await runSender(['--help'], { json: false });
  t.is(help.code, 0);
  t.regex(help.stdout, /usage: sender migrate --pid PID --to HOST:PORT/);
  t.regex(help.stdout, /--auto-converge/);
});

test('--after resume (the default) leaves the target running untouched; --after kill kills it once committed', async (t) => {
  const target = await Target.start({ mib: 32, seed: 44 });
  try {
    await target.writers(1, 10_000_000);
    const session = `after-resume-${process.pid}`;
    const run = await runSender(['--pid', String(target.pid), '--to', shared.receiver().address, '--session', session]);
    t.is(run.code, 0, describeRun(run));
    t.is(run.summary!.after, 'resume');
    await assertUnharmed(t, target);
    t.is((await receiverCli(['verify', '--images', shared.images(), session])).code, 0);
  } finally {
    await target.kill();
  }

  const victim = await Target.start({ mib: 32, seed: 45 });
  const session = `after-kill-${process.pid}`;
  const run = await runSender(['--pid', String(victim.pid), '--to', shared.receiver().address, '--session', session, '--after', 'kill']);
  t.is(run.code, 0, describeRun(run));
  t.deepEqual(await victim.waitExit(), { code: null, signal: 'SIGKILL' });
  t.is((await receiverCli(['verify', '--images', shared.images(), session])).code, 0, 'committed before the kill');
});
