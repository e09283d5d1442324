// The restorability check (sender/capture/): every kind of fd a restore recreates is read and
// classified, and each thing it cannot recreate is named, on real processes holding them.

import test from 'ava';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { readFdTable } from '../../../sender/capture/fd-table';
import { checkRestorable, restoreProblems } from '../../../sender/capture/restorable';
import { startFdloop } from '../../helpers/fdloop';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'precopy-restorable-'));
test.after.always(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('a process holding only restorable fds passes, and its table holds each kind with its state', async (t) => {
  const w = await startFdloop(path.join(tmp, 'log1'));
  t.teardown(() => w.kill());
  t.deepEqual(restoreProblems(w.pid, { dropConnections: false }), []);
  t.notThrows(() => checkRestorable(w.pid, { dropConnections: false }));

  const { files, refusals } = readFdTable(w.pid, { withContents: true, dropConnections: false });
  t.deepEqual(refusals, []);
  const kinds = files.map((f) => f.kind);
  for (const k of ['stdio', 'eventfd', 'timerfd', 'pipe', 'memfd', 'signalfd', 'chardev', 'file', 'socket', 'epoll'] as const) t.true(kinds.includes(k), k);
  const byKind = <K extends (typeof files)[number]['kind']>(k: K) => files.filter((f) => f.kind === k) as Extract<(typeof files)[number], { kind: K }>[];
  t.deepEqual(
    byKind('eventfd').map((e) => [e.count, e.semaphore]),
    [['3', true]],
  );
  const [timer] = byKind('timerfd');
  t.is(timer.clockid, 1);
  t.is(timer.intervalNs, '20000000');
  t.true(BigInt(timer.valueNs) <= 20_000_000n);
  // The pipe's unread 4 KiB are copied without being consumed: the program still reads them.
  const readEnd = byKind('pipe').find((p) => p.end === 'read')!;
  const expected = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7 + 3) & 0xff));
  t.deepEqual(Buffer.from(readEnd.data, 'base64'), expected);
  t.is(byKind('pipe').length, 2);
  const [memfd] = byKind('memfd');
  t.is(memfd.offset, 100);
  t.deepEqual(Buffer.from(memfd.data, 'base64'), expected);
  t.is(byKind('signalfd')[0].mask, String(1n << 9n)); // SIGUSR1 = 10
  const sockets = byKind('socket');
  const tcp = sockets.find((s) => s.family === 2 && s.type === 1)!;
  t.like(tcp, { listening: true, backlog: 17, reuseAddr: true, dropped: false });
  t.like(
    sockets.find((s) => s.family === 2 && s.type === 2)!,
    { listening: false, dropped: false },
  );
  t.like(
    sockets.find((s) => s.family === 1)!,
    { listening: true, backlog: 5 },
  );
  const [epoll] = byKind('epoll');
  t.is(epoll.watches.length, 5);
  for (const wt of epoll.watches) t.is(BigInt(wt.data), 0x1000000000n + BigInt(wt.tfd));
  t.is(byKind('file')[0].path, path.join(tmp, 'log1'));
  t.regex(await w.ask('readpipe'), /^pipe ok$/);
  t.regex(await w.ask('status'), /errors=0$/);
});

const refusals: [string, string[], RegExp][] = [
  ['inotify', ['--inotify'], /fd \d+ \(anon_inode:inotify\): inotify watches are not restored/],
  ['a child process', ['--child'], /it has child processes \(\d+\): only a single process is restored/],
  ['file locks', ['--lock', 'LOCK'], /it holds 2 file locks: file locks are not restored/],
  ['seccomp', ['--seccomp'], /it runs under seccomp \(mode 2\): seccomp filters are not restored/],
  ['a pipe to another process', ['--outpipe'], /fd \d+ \(pipe:\[\d+\]\): the process holds only the read end of this pipe/],
  ['a connected socket', ['--connect'], /fd \d+ \(socket:\[\d+\]\): a connected socket .*--drop-connections restores it/],
];
for (const [name, flags, why] of refusals) {
  test(`refused before anything is touched: ${name}`, async (t) => {
    const w = await startFdloop(
      path.join(tmp, `log-${name}`),
      flags.map((f) => (f === 'LOCK' ? path.join(tmp, `lock-${name}`) : f)),
    );
    t.teardown(() => w.kill());
    const err = t.throws(() => checkRestorable(w.pid, { dropConnections: false }));
    t.regex(err!.message, new RegExp(`^process ${w.pid} cannot be restored at the destination: `));
    t.regex(err!.message, why);
    // The check took nothing from the process: it runs on and its checks pass.
    t.regex(await w.ask('status'), /errors=0$/);
  });
}

test('--drop-connections turns a connected socket into one restored peerless', async (t) => {
  const w = await startFdloop(path.join(tmp, 'log-drop'), ['--connect']);
  t.teardown(() => w.kill());
  t.deepEqual(restoreProblems(w.pid, { dropConnections: true }), []);
  const sockets = readFdTable(w.pid, { withContents: false, dropConnections: true }).files.filter((f) => f.kind === 'socket');
  t.is(sockets.filter((s) => s.kind === 'socket' && s.dropped).length, 1);
});
