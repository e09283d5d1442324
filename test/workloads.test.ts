// Proves the test workload (bin/target) and the test helpers do what the other tests rely on:
// pages hold what the protocol says, commands change exactly what they claim, and the helpers see
// it through /proc. If these fail, no migration test result means anything.

import test from 'ava';
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Target, withTarget, expectedPage, pageHeader } from './helpers/target';
import { readMem, readMaps, findMap, threadStates, vmFlags, isAlive } from './helpers/procmem';
import { NetPair, listNamespaces, tool } from './helpers/netns';

const PAGE = 4096;

test('ready line describes the main area and every page holds generation 0', (t) =>
  withTarget({ mib: 4, seed: 7 }, async (tg) => {
    t.true(tg.pid > 0);
    t.is(tg.pages, 1024);
    t.is(tg.pageSize, PAGE);
    t.is(tg.shared, 0);
    t.is(tg.file, 0);
    const mem = readMem(tg.pid, tg.base, tg.pages * PAGE);
    for (let i = 0; i < tg.pages; i++) {
      const h = pageHeader(mem.subarray(i * PAGE));
      if (h.index !== i || h.gen !== 0) return t.fail(`page ${i}: header ${JSON.stringify(h)}`);
    }
    // content is the documented PRNG stream, not just the header
    for (const i of [0, 1, 513, 1023]) t.deepEqual(mem.subarray(i * PAGE, (i + 1) * PAGE), expectedPage(7, i, 0));
    const info = await tg.info();
    t.is(info.base, tg.base);
    t.is(info.pages, 1024);
    t.is(info.threads, 1);
    t.deepEqual(await tg.check(), { bad: 0 });
  }));

test('write changes exactly the named pages, one generation each', (t) =>
  withTarget({ mib: 2 }, async (tg) => {
    await tg.write(10, 5);
    await tg.write(12, 1);
    const mem = readMem(tg.pid, tg.base, tg.pages * PAGE);
    for (let i = 0; i < tg.pages; i++) {
      const want = i === 12 ? 2 : i >= 10 && i < 15 ? 1 : 0;
      const h = pageHeader(mem.subarray(i * PAGE));
      if (h.index !== i || h.gen !== want) return t.fail(`page ${i}: ${JSON.stringify(h)}, want gen ${want}`);
    }
    t.deepEqual(mem.subarray(12 * PAGE, 13 * PAGE), expectedPage(1, 12, 2));
    await tg.writep(tg.pageAddr(20), 2);
    t.is(pageHeader(readMem(tg.pid, tg.pageAddr(21), PAGE)).gen, 1);
    await t.throwsAsync(tg.write(tg.pages - 1, 2), { message: /out of range/ });
    await t.throwsAsync(tg.cmd('nonsense'), { message: /err unknown command/ });
    t.deepEqual(await tg.check(), { bad: 0 }, 'target still answers after errors');
  }));

test('check stays clean while writers run, and detects corruption', (t) =>
  withTarget({ mib: 8 }, async (tg) => {
    await tg.writers(2, 0);
    t.is((await tg.info()).threads, 3);
    for (let k = 0; k < 5; k++) t.deepEqual(await tg.check(), { bad: 0 });
    const written = await tg.stopWriters();
    t.true(written > 0);
    t.is((await tg.info()).threads, 1);
    // corrupt one byte of page 77 from outside: check must name it
    const fd = fs.openSync(`/proc/${tg.pid}/mem`, 'r+');
    fs.writeSync(fd, Buffer.from([0xaa ^ readMem(tg.pid, tg.pageAddr(77) + 100, 1)[0]]), 0, 1, tg.pageAddr(77) + 100);
    fs.closeSync(fd);
    t.deepEqual(await tg.check(), { bad: 1, first: 77 });
    // dropped pages read as zeros: a legitimate state, not corruption
    await tg.write(77, 1);
    await tg.dontneed(0, 16);
    t.true(readMem(tg.pid, tg.base, 16 * PAGE).every((b) => b === 0));
    t.deepEqual(await tg.check(), { bad: 0 });
  }));

test('throttled writers write at about the asked rate order of magnitude, and stop', (t) =>
  withTarget({ mib: 4 }, async (tg) => {
    await tg.writers(2, 4096 * 100); // 100 pages/s in total
    await new Promise((r) => setTimeout(r, 300));
    const written = await tg.stopWriters();
    // no timing assertion beyond "it is throttled": flat out would be > 100k pages in 0.3 s
    t.true(written > 0 && written < 5000, `written ${written}`);
    await t.throwsAsync(tg.writers(0, 0), { message: /T must be/ });
  }));

test('mmap, mprotect, mremap, munmap, brk and stack show in /proc/PID/maps', (t) =>
  withTarget({ mib: 1 }, async (tg) => {
    const a = await tg.mmap(8);
    t.like(findMap(tg.pid, a), { perms: 'rw-p', path: '' });
    t.is(pageHeader(readMem(tg.pid, a + 3 * PAGE, PAGE)).gen, 0);
    t.is(pageHeader(readMem(tg.pid, a + 3 * PAGE, PAGE)).index, ((a + 3 * PAGE) / PAGE) >>> 0);

    await tg.mprotect(a, 8, 'r');
    t.like(findMap(tg.pid, a), { perms: 'r--p' });
    await t.throwsAsync(tg.writep(a, 1), { message: /not mapped writable/ });
    await tg.mprotect(a, 8, 'rw');

    const ro = await tg.mmap(2, 'none');
    t.like(findMap(tg.pid, ro), { perms: '---p' });

    const before = readMem(tg.pid, a, 8 * PAGE);
    const b = await tg.mremap(a, 8, 64);
    const vb = findMap(tg.pid, b)!;
    t.true(vb.end - b >= 64 * PAGE);
    t.deepEqual(readMem(tg.pid, b, 8 * PAGE), before, 'mremap keeps the contents');
    await tg.writep(b + 40 * PAGE, 1);
    t.is(pageHeader(readMem(tg.pid, b + 40 * PAGE, PAGE)).gen, 1);

    await tg.munmap(b, 64);
    t.false(readMaps(tg.pid).some((v) => v.start < b + 64 * PAGE && b < v.end));

    const h = await tg.brk(16);
    const heap = findMap(tg.pid, h)!;
    t.is(heap.path, '[heap]');
    t.true(heap.end >= h + 16 * PAGE);
    t.is(pageHeader(readMem(tg.pid, h + 15 * PAGE, PAGE)).gen, 0);

    const stackBefore = readMaps(tg.pid).find((v) => v.path === '[stack]')!;
    await tg.stack(1024);
    const stackAfter = readMaps(tg.pid).find((v) => v.path === '[stack]')!;
    t.true(stackAfter.end - stackAfter.start >= 1024 * 1024, 'stack grew to at least 1 MiB');
    t.true(stackAfter.start <= stackBefore.start);
    t.deepEqual(await tg.check(), { bad: 0 });
  }));

test('thp and shared areas: alignment, MADV_HUGEPAGE flag, shared mapping filled', (t) =>
  withTarget({ mib: 8, thp: true, sharedMib: 2 }, async (tg) => {
    t.is(tg.base % (2 << 20), 0);
    t.true(vmFlags(tg.pid, tg.base)!.includes('hg'));
    const sh = findMap(tg.pid, tg.shared)!;
    t.is(sh.perms, 'rw-s');
    t.is(sh.end - sh.start, 2 << 20);
    const page5 = readMem(tg.pid, tg.shared + 5 * PAGE, PAGE);
    t.deepEqual(page5, expectedPage(1, 5, 0));
    const info = await tg.info();
    t.is(info.shared, tg.shared);
    t.is(info.sharedPages, 512);
  }));

test('private file mapping holds the file; filewrite copies one page only', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'precopy-target-'));
  const file = path.join(dir, 'data.bin');
  const content = Buffer.alloc(16 * PAGE);
  for (let i = 0; i < content.length; i++) content[i] = (i * 7 + (i >> 12)) & 0xff;
  fs.writeFileSync(file, content);
  const tg = await Target.start({ mib: 1, file, filePages: 16 });
  try {
    t.not(tg.file, 0);
    t.like(findMap(tg.pid, tg.file), { perms: 'rw-p', path: file, offset: 0 });
    t.deepEqual(readMem(tg.pid, tg.file, 16 * PAGE), content);
    await tg.filewrite(3);
    const after = readMem(tg.pid, tg.file, 16 * PAGE);
    t.is(pageHeader(after.subarray(3 * PAGE)).gen, 1);
    t.deepEqual(after.subarray(0, 3 * PAGE), content.subarray(0, 3 * PAGE));
    t.deepEqual(after.subarray(4 * PAGE), content.subarray(4 * PAGE));
    t.deepEqual(fs.readFileSync(file), content, 'MAP_PRIVATE: the file is untouched');
    await t.throwsAsync(tg.filewrite(16), { message: /out of range/ });
  } finally {
    await tg.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('fork returns a live child that writes its own copy and dies with the target', async (t) => {
  const tg = await Target.start({ mib: 1 });
  let child = 0;
  try {
    child = await tg.fork();
    t.true(isAlive(child));
    t.is(fs.readFileSync(`/proc/${child}/stat`, 'utf8').split(') ')[1].split(' ')[1], String(tg.pid), 'ppid');
    // the child keeps rewriting random pages: wait until some generation moves in its copy only
    let moved = false;
    for (let k = 0; k < 200 && !moved; k++) {
      await new Promise((r) => setTimeout(r, 20));
      const mem = readMem(child, tg.base, tg.pages * PAGE);
      for (let i = 0; i < tg.pages && !moved; i++) moved = pageHeader(mem.subarray(i * PAGE)).gen > 0;
    }
    t.true(moved, 'child wrote its copy');
    const parent = readMem(tg.pid, tg.base, tg.pages * PAGE);
    for (let i = 0; i < tg.pages; i++) t.is(pageHeader(parent.subarray(i * PAGE)).gen, 0);
    t.deepEqual(await tg.check(), { bad: 0 });
  } finally {
    await tg.kill();
  }
  // PR_SET_PDEATHSIG: the child goes when the target goes
  for (let k = 0; k < 500 && isAlive(child); k++) await new Promise((r) => setTimeout(r, 10));
  t.false(isAlive(child));
});

test('blockers, ping, sleepstats and fds', (t) =>
  withTarget({ mib: 1 }, async (tg) => {
    await t.throwsAsync(tg.ping(), { message: /no blockers/ });
    const fdsBefore = await tg.fds();
    t.regex(fdsBefore.get(0)!, /^(pipe|socket):/, 'stdin is the command channel');
    await tg.blockers();
    t.is((await tg.info()).threads, 3);
    await tg.ping();
    await tg.ping();
    await new Promise((r) => setTimeout(r, 250));
    const s = await tg.sleepStats();
    t.true(s.count >= 1, `count ${s.count}`);
    t.is(s.errors, 0);
    // the reader thread sits in read(), the sleeper in clock_nanosleep: both 'S'
    const states = threadStates(tg.pid);
    t.is(states.length, 3);
    t.true(
      states.every((x) => x.state === 'S' || x.state === 'R'),
      JSON.stringify(states),
    );
    const fdsAfter = await tg.fds();
    t.is(fdsAfter.size, fdsBefore.size + 2, 'blockers opened exactly one pipe');
    t.deepEqual(await tg.exit(), { code: 0, signal: null });
    await t.throwsAsync(tg.cmd('info'), { message: /exited/ });
  }));

test('stdin EOF ends the target', async (t) => {
  const tg = await Target.start({ mib: 1 });
  tg.closeStdin();
  t.deepEqual(await tg.waitExit(), { code: 0, signal: null });
});

// A TCP echo across the pair, run with this same node binary inside the namespaces.
const ECHO_SERVER = `
  const s = require('net').createServer((c) => c.pipe(c));
  s.listen(+process.argv[2], process.argv[1], () => console.log('listening'));`;
const CLIENT = `
  const c = require('net').connect(+process.argv[2], process.argv[1]);
  c.setTimeout(+process.argv[3], () => { console.log('timeout'); process.exit(0); });
  c.on('connect', () => c.end('hello'));
  let got = ''; c.on('data', (d) => (got += d));
  c.on('end', () => { console.log('got:' + got); process.exit(0); });
  c.on('error', (e) => { console.log('error:' + e.code); process.exit(0); });`;

async function talk(pair: NetPair, timeoutMs = 5000): Promise<string> {
  const r = await pair.exec('a', process.execPath, ['-e', CLIENT, pair.addr.b, '7000', String(timeoutMs)]);
  return r.stdout.trim();
}

test('netns pair: TCP between the namespaces, rate limit, loss, cut/restore, cleanup', async (t) => {
  const pair = await NetPair.create({ subnet: '10.201.7.0' });
  try {
    t.is(pair.addr.a, '10.201.7.1');
    t.is(pair.addr.b, '10.201.7.2');
    t.true(listNamespaces().includes(pair.ns.a) && listNamespaces().includes(pair.ns.b));
    // the host does not see the veth: it lives only inside the namespaces
    t.false(fs.readdirSync('/sys/class/net').includes(pair.dev.a));

    const server = pair.spawn('b', process.execPath, ['-e', ECHO_SERVER, pair.addr.b, '7000']);
    await new Promise<void>((resolve, reject) => {
      server.stdout!.once('data', () => resolve());
      server.once('exit', (c) => reject(new Error(`echo server exited ${c}`)));
    });
    t.is(await talk(pair), 'got:hello');

    await pair.limitRate('a', '10mbit');
    t.regex((await pair.exec('a', tool('tc'), ['qdisc', 'show', 'dev', pair.dev.a])).stdout, /tbf .*rate 10Mbit/);
    t.is(await talk(pair), 'got:hello');
    await pair.clearRate('a');

    // 100 % loss: deterministic, the SYN never arrives
    await pair.addLoss('a', 30);
    t.regex((await pair.exec('a', tool('nft'), ['list', 'table', 'inet', 'precopy_loss'])).stdout, /numgen random mod 100 < 30 drop/);
    await pair.addLoss('a', 100);
    t.is(await talk(pair, 500), 'timeout');
    await pair.clearLoss('a');
    t.is(await talk(pair), 'got:hello');

    await pair.cut();
    t.regex(await talk(pair, 500), /^(error:ENETUNREACH|timeout)$/);
    await pair.restore();
    t.is(await talk(pair), 'got:hello');
  } finally {
    await pair.destroy();
  }
  t.false(listNamespaces().includes(pair.ns.a));
  t.false(listNamespaces().includes(pair.ns.b));
});

test('netns pairs left by an exiting or SIGKILLed test process are removed', async (t) => {
  const helper = path.join(__dirname, 'helpers', 'netns.js');
  const script = (subnet: string, end: string) =>
    `require(${JSON.stringify(helper)}).NetPair.create({ subnet: '${subnet}' })` + `.then((p) => { console.log(p.ns.a + ' ' + p.ns.b); ${end} });`;

  // normal exit without destroy(): the exit hook deletes them
  const names1 = execFileSync(process.execPath, ['-e', script('10.201.8.0', 'process.exit(0)')], { encoding: 'utf8' })
    .trim()
    .split(' ');
  t.is(names1.length, 2);
  for (const n of names1) t.false(listNamespaces().includes(n));

  // SIGKILL: nothing runs at exit; the next NetPair.create sweeps them
  const child = spawn(process.execPath, ['-e', script('10.201.9.0', 'setInterval(() => {}, 1000)')]);
  const names2 = await new Promise<string[]>((resolve) => child.stdout.once('data', (d: Buffer) => resolve(d.toString().trim().split(' '))));
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  for (const n of names2) t.true(listNamespaces().includes(n));
  const pair = await NetPair.create({ subnet: '10.201.10.0' });
  await pair.destroy();
  for (const n of names2) t.false(listNamespaces().includes(n));
});
