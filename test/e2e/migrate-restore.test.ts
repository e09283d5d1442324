// Migrate with --restorable --after kill through a real receiver, then `receiver restore` the
// committed image on the same host (the pids are free again): the program must go on as if never
// moved, judged by its own checks. Also: what --restorable refuses before touching anything, an
// image that holds memory only, and a round trip (the restored process migrated and restored again).

import test, { type ExecutionContext } from 'ava';
import * as dgram from 'node:dgram';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startReceiver, type ReceiverHandle } from '../helpers/receiver';
import { askFdloop, startFdloop } from '../helpers/fdloop';
import { describeRun, receiverCli, runSender } from '../helpers/migration-cli';
import {
  killRestored,
  processExists,
  RESTORE_TARGET,
  selfCheckFailures,
  startWorkload,
  stubProcesses,
  taskIds,
  waitStatus,
  type Status,
} from '../receiver/restore/helpers/workload';

const images = fs.mkdtempSync(path.join(os.tmpdir(), 'precopy-e2e-restore-'));
let receiver: ReceiverHandle;
test.before(async () => {
  receiver = await startReceiver({ images });
});
test.after.always(async () => {
  await receiver?.stop();
  fs.rmSync(images, { recursive: true, force: true });
});

const num = (s: Status, k: string): number => Number(s[k]);

/** `receiver restore` of a session: the pid it printed. */
async function restore(session: string, extra: string[] = []): Promise<number> {
  const run = await receiverCli(['restore', '--images', images, session, ...extra]);
  if (run.code !== 0) throw new Error(`receiver restore failed: ${describeRun(run)}`);
  return Number(run.stdout.trim());
}

async function waitGone(pid: number): Promise<void> {
  for (let i = 0; i < 400 && processExists(pid); i++) await new Promise((r) => setTimeout(r, 25));
  if (processExists(pid)) throw new Error(`process ${pid} is still there`);
}

async function migrateAndKill(pid: number, session: string, extra: string[] = []): Promise<void> {
  const run = await runSender([
    '--pid',
    String(pid),
    '--to',
    receiver.address,
    '--session',
    session,
    '--restorable',
    '--after',
    'kill',
    '--downtime-ms',
    '50',
    ...extra,
  ]);
  if (run.code !== 0) throw new Error(`migration failed: ${describeRun(run)}`);
  await waitGone(pid);
}

test.serial('threads, AVX registers, signals, locks and TLS go on after a migration and a restore', async (t) => {
  const w = await startWorkload(['--workers', '3', '--mib', '16']);
  const tids = taskIds(w.pid);
  const before = w.status()!;
  await migrateAndKill(w.pid, 'restore-threads');
  const pid = await restore('restore-threads');
  t.teardown(() => killRestored(pid));
  t.is(pid, w.pid, 'same pid');
  t.deepEqual(taskIds(pid), tids, 'same thread ids');
  const s = await waitStatus(w.dir, (x) => num(x, 'iter') > num(before, 'iter') + 5 && num(x, 'avx') > num(before, 'avx') + 5, 'progress after the restore');
  t.deepEqual(selfCheckFailures(s), []);
  process.kill(pid, 'SIGUSR1');
  const s2 = await waitStatus(w.dir, (x) => x.usr1_ok === '1', 'SIGUSR1 handled on the alternate stack');
  t.deepEqual(selfCheckFailures(s2), []);
  t.deepEqual(stubProcesses(), []);
});

/** Exports `session` as a core file and has gdb read a thread's ymm8: it must hold the workload's
 *  AVX canary (g_canary, in memory too), upper half included. */
async function gdbSeesAvxCanary(t: ExecutionContext, session: string): Promise<void> {
  const out = path.join(images, `${session}.core`);
  const run = await receiverCli(['export', '--images', images, session, '--format', 'core', '--out', out]);
  t.is(run.code, 0, describeRun(run));
  const gdb = execFileSync(
    'gdb',
    ['--batch', '-nx', RESTORE_TARGET, out, '-ex', 'p/x *(unsigned long long(*)[4])g_canary', '-ex', 'thread apply all p/x $ymm8.v4_int64'],
    {
      encoding: 'utf8',
    },
  );
  const canary = /^\$1 = (\{.*\})$/m.exec(gdb)?.[1];
  t.truthy(canary, gdb);
  t.true(
    gdb.split('\n').some((l) => /^\$\d+ = /.test(l) && !l.startsWith('$1 ') && l.endsWith(canary!)),
    `a thread's ymm8 equals the canary\n${gdb}`,
  );
}

test.serial('the core export of a restorable image carries the XSAVE state: gdb reads the AVX canaries', async (t) => {
  await gdbSeesAvxCanary(t, 'restore-threads');
});

test.serial('so does the core export of a memory-only image (every freeze captures the XSAVE area)', async (t) => {
  const w = await startWorkload(['--workers', '1', '--mib', '4']);
  await waitStatus(w.dir, (x) => num(x, 'avx') > 3, 'the AVX thread holds its canaries');
  const run = await runSender(['--pid', String(w.pid), '--to', receiver.address, '--session', 'memory-avx', '--after', 'kill']);
  t.is(run.code, 0, describeRun(run));
  await gdbSeesAvxCanary(t, 'memory-avx');
});

test.serial('file descriptors: epoll over a timerfd, eventfd and sockets, a pipe with unread bytes, a memfd, a log file', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'precopy-fdloop-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const log = path.join(dir, 'progress.log');
  const w = await startFdloop(log);
  const before = await w.ask('status');
  const ticksBefore = Number(/ticks=(\d+)/.exec(before)![1]);
  const exited = new Promise((r) => w.child.once('exit', r));
  await migrateAndKill(w.pid, 'restore-fds');
  await exited;
  const linesAtKill = fs.readFileSync(log, 'utf8').split('\n').length;

  const pid = await restore('restore-fds', ['--stdio', path.join(dir, 'stdio')]);
  t.teardown(() => killRestored(pid));
  t.is(pid, w.pid);
  // The listening socket, the epoll loop and the timer: it answers, and its ticks go on.
  // (Ticks counted after the restore: the count at the kill alone could pass with a dead timer.)
  let status = await w.ask('status');
  t.regex(status, /errors=0$/);
  const ticksRestored = Number(/ticks=(\d+)/.exec(status)![1]);
  t.true(ticksRestored >= ticksBefore, status);
  await new Promise((r) => setTimeout(r, 300));
  status = await w.ask('status');
  t.true(Number(/ticks=(\d+)/.exec(status)![1]) > ticksRestored + 5, `the timer ticks after the restore: ${status}`);
  // The bytes left unread in the pipe, the memfd's content and offset, the eventfd's count.
  t.is(await w.ask('readpipe'), 'pipe ok');
  t.is(await w.ask('memfd'), 'memfd ok');
  t.is(await w.ask('eventfd'), 'eventfd ok');
  // A regular file read up to offset 1000 reads on from there.
  t.is(await w.ask('fileoff'), 'fileoff ok');
  // The signalfd: SIGUSR1 is counted, not delivered.
  process.kill(pid, 'SIGUSR1');
  await new Promise((r) => setTimeout(r, 100));
  t.regex(await w.ask('status'), /sig=1 errors=0$/);
  // The bound UDP socket echoes.
  const sock = dgram.createSocket('udp4');
  t.teardown(() => sock.close());
  const echo = new Promise<string>((resolve) => sock.once('message', (m) => resolve(m.toString())));
  sock.send('hello', w.port + 1, '127.0.0.1');
  t.is(await echo, 'udp hello');
  // The abstract Unix socket listens again under its name (Node cannot connect to an abstract
  // name of exact length, so the kernel's table says it: __SO_ACCEPTCON, owned by the process).
  const inodes = new Set(fs.readdirSync(`/proc/${pid}/fd`).map((fd) => /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1]));
  const unix = fs
    .readFileSync(`/proc/${pid}/net/unix`, 'utf8')
    .split('\n')
    .map((l) => l.trim().split(/\s+/));
  t.true(
    unix.some((f) => f[3] === '00010000' && inodes.has(f[6]) && f[7] === `@precopy-fdloop-${w.port}`),
    'listening Unix socket',
  );
  // The O_APPEND log goes on where it was: a line every 50 ticks (1 s; more on a loaded machine).
  const logLines = (): string[] => fs.readFileSync(log, 'utf8').trim().split('\n');
  const t0 = Date.now();
  const grown = (l: string[]): boolean => l.length >= linesAtKill && /^tick \d+$/.test(l[l.length - 1]);
  while (!grown(logLines()) && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 100));
  const lines = logLines();
  t.true(lines.length >= linesAtKill, `log lines kept, and one more (${lines.length} of ${linesAtKill}; ${await askFdloop(w.port, 'status')})`);
  t.regex(lines[lines.length - 1], /^tick \d+$/);
  t.regex(await askFdloop(w.port, 'status'), /errors=0$/);
});

test.serial('--drop-connections: a connected socket comes back as one whose peer has gone', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'precopy-fdloop-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const w = await startFdloop(path.join(dir, 'log'), ['--connect']);
  const exited = new Promise((r) => w.child.once('exit', r));
  await migrateAndKill(w.pid, 'restore-dropped', ['--drop-connections']);
  await exited;
  const pid = await restore('restore-dropped');
  t.teardown(() => killRestored(pid));
  // The connected UDP socket's fd is now one end of a pair whose other end is closed.
  const fds = fs.readdirSync(`/proc/${pid}/fd`).map((fd) => fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
  t.is(fds.filter((l) => l.startsWith('socket:')).length, 4, fds.join(' '));
  t.regex(await w.ask('status'), /errors=0$/);
});

test.serial('--restorable refuses what a restore cannot recreate before the target is touched', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'precopy-fdloop-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const w = await startFdloop(path.join(dir, 'log'), ['--inotify']);
  t.teardown(() => w.kill());
  const run = await runSender(['--pid', String(w.pid), '--to', receiver.address, '--session', 'refused-inotify', '--restorable'], { json: false });
  t.is(run.code, 2, describeRun(run));
  t.regex(run.stderr, /^sender: process \d+ cannot be restored at the destination: fd \d+ \(anon_inode:inotify\): inotify watches are not restored\n$/);
  t.false(fs.existsSync(path.join(images, 'refused-inotify')), 'no session was opened');
  t.regex(await w.ask('status'), /errors=0$/);
  t.regex(fs.readFileSync(`/proc/${w.pid}/status`, 'utf8'), /TracerPid:\s+0\n/);
});

test.serial('an image of memory only is not restorable, and says how to make one', async (t) => {
  const w = await startWorkload(['--workers', '1', '--mib', '4']);
  const run = await runSender(['--pid', String(w.pid), '--to', receiver.address, '--session', 'memory-only']);
  t.is(run.code, 0, describeRun(run));
  const r = await receiverCli(['restore', '--images', images, 'memory-only']);
  t.is(r.code, 2);
  t.is(r.stderr, "receiver: session memory-only holds memory only: migrate with 'sender migrate --restorable' to make a restorable image\n");
  process.kill(w.pid, 'SIGKILL');
});

test.serial('a taken pid: one line, nothing left running; --any-pid restores under new ids', async (t) => {
  const w = await startWorkload(['--workers', '2', '--mib', '4']);
  const before = w.status()!;
  // --after stop: the source keeps its pid (stopped), so the image's pid is taken here.
  const run = await runSender(['--pid', String(w.pid), '--to', receiver.address, '--session', 'taken', '--restorable', '--after', 'stop']);
  t.is(run.code, 0, describeRun(run));
  t.teardown(() => process.kill(w.pid, 'SIGKILL'));
  const r = await receiverCli(['restore', '--images', images, 'taken']);
  t.is(r.code, 1);
  t.regex(r.stderr, new RegExp(`^receiver: cannot restore process ${w.pid}: .*pid ${w.pid} is taken.*\\n$`));
  t.deepEqual(stubProcesses(), []);
  // The copy under new ids writes the same status file: it must go on from the frozen state.
  const pid = await restore('taken', ['--any-pid']);
  t.teardown(() => killRestored(pid));
  t.not(pid, w.pid);
  const s = await waitStatus(w.dir, (x) => num(x, 'iter') > num(before, 'iter') + 5, 'progress under new ids');
  t.deepEqual(selfCheckFailures(s), []);
});

test.serial('round trip: a restored process migrates and restores again', async (t) => {
  const w = await startWorkload(['--workers', '2', '--mib', '8']);
  await migrateAndKill(w.pid, 'trip-1');
  const pid1 = await restore('trip-1');
  t.is(pid1, w.pid);
  const s1 = await waitStatus(w.dir, (x) => num(x, 'iter') > 3, 'first restore runs');
  await migrateAndKill(pid1, 'trip-2');
  killRestored(pid1); // reaps it when it was our child
  const pid2 = await restore('trip-2');
  t.teardown(() => killRestored(pid2));
  t.is(pid2, w.pid);
  const s2 = await waitStatus(w.dir, (x) => num(x, 'iter') > num(s1, 'iter') + 5, 'second restore runs on');
  t.deepEqual(selfCheckFailures(s2), []);
});
