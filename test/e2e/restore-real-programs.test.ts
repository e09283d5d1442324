// Real programs nobody here wrote, migrated with --restorable --after kill through a real receiver
// and started again with `receiver restore` on the same host: redis-server (Debian package
// redis-server, redis-tools beside it) with thousands of keys, and a python3 program whose state
// lives in its interpreter's heap. Each is judged from outside: redis by what it answers on its
// port (through the RESP client of test/helpers/redis.ts), the python program by the progress
// file it goes on appending to.

import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describeRun, receiverCli, runSender, tempDir, useReceiver } from '../helpers/migration-cli';
import { infoServer, Redis, socketFds, startRedis, text } from '../helpers/redis';
import { sleep, waitFor } from '../helpers/wait-for';

const recv = useReceiver(test, 'precopy-e2e-real-');

// ---- processes -------------------------------------------------------------------------------

const processExists = (pid: number): boolean => fs.existsSync(`/proc/${pid}`);

function taskIds(pid: number): number[] {
  return fs
    .readdirSync(`/proc/${pid}/task`)
    .map(Number)
    .sort((a, b) => a - b);
}

/** A restored process is no child of ours (its parent, the restore, has exited): kill it, wait. */
async function killAndWait(pid: number): Promise<void> {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return; // gone
  }
  for (let i = 0; i < 200; i++) {
    try {
      // a zombie nobody reaps yet counts as gone
      if (/^State:\s+Z/m.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))) return;
    } catch {
      return;
    }
    await sleep(10);
  }
}

/** Migrate `child` with --restorable --after kill; resolves once it has died and been reaped
 *  (its pid free again), with the sender's downtime. */
async function migrateAndKill(child: ChildProcess, session: string): Promise<{ downtimeMs: number; totalMs: number; rounds: number }> {
  const exited = new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r(null) : child.once('exit', r)));
  const args = ['--pid', String(child.pid), '--to', recv.receiver().address, '--session', session, '--restorable', '--after', 'kill', '--downtime-ms', '50'];
  const run = await runSender(args);
  if (run.code !== 0 || !run.summary) throw new Error(`migration failed: ${describeRun(run)}`);
  await exited;
  await waitFor(`pid ${child.pid} to be free`, () => (processExists(child.pid!) ? undefined : true));
  return { downtimeMs: run.summary.downtimeSeconds * 1000, totalMs: run.summary.totalSeconds * 1000, rounds: run.summary.precopyRounds };
}

/** `receiver restore`: the pid it printed and its wall time. */
async function restore(session: string, stdio: string): Promise<{ pid: number; ms: number }> {
  const t0 = process.hrtime.bigint();
  const run = await receiverCli(['restore', '--images', recv.images(), session, '--stdio', stdio]);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (run.code !== 0) throw new Error(`receiver restore failed: ${describeRun(run)}`);
  return { pid: Number(run.stdout.trim()), ms };
}

// ---- the tests ---------------------------------------------------------------------------------

test.serial('redis-server: every key, the port, new clients and writes, and the same process after a restore', async (t) => {
  const dir = tempDir('precopy-redis-');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const { child, port, client: c } = await startRedis(dir);
  t.teardown(() => child.kill('SIGKILL'));

  // 2000 strings of 0 B to 100 KiB of random bytes (\r\n and NULs included), a hash, a list, a
  // key with a TTL; written in pipelines.
  const strings = new Map<string, Buffer>();
  for (let i = 0; i < 2000; i++) {
    const size = i % 97 === 0 ? 65_536 + 37 * i : i % 7 === 0 ? 4000 + i : i % 300;
    strings.set(`key:${i}`, randomBytes(size));
  }
  const hash = new Map<string, string>();
  for (let i = 0; i < 500; i++) hash.set(`field:${i}`, `v${i}-${randomBytes(8).toString('hex')}`);
  const list = Array.from({ length: 500 }, (_, i) => `item ${i} ${randomBytes(6).toString('base64')}`);
  const set = [...strings].map(([k, v]) => ['SET', k, v]);
  for (let i = 0; i < set.length; i += 250) t.true((await c.pipeline(set.slice(i, i + 250))).every((r) => r === 'OK'));
  t.is(await c.cmd('HSET', 'hash', ...[...hash].flat()), 500);
  t.is(await c.cmd('RPUSH', 'list', ...list), 500);
  t.is(await c.cmd('SET', 'expiring', 'soon', 'EX', '3600'), 'OK');
  t.is(await c.cmd('INCRBY', 'counter', '41'), 41);
  t.is(await c.cmd('DBSIZE'), 2004);
  const before = await infoServer(c);
  const tids = taskIds(child.pid!);
  await c.close();
  // A connected client socket would be refused (or dropped): wait until redis closed its side.
  await waitFor('redis to close its client socket', () => (socketFds(child.pid!).length === 1 ? true : undefined));

  const mig = await migrateAndKill(child, 'redis');
  const { pid, ms } = await restore('redis', path.join(dir, 'stdio'));
  t.teardown(() => killAndWait(pid));
  t.log(
    `redis-server ${before.redis_version}, ${tids.length} threads: downtime ${mig.downtimeMs.toFixed(1)} ms, migration ${mig.totalMs.toFixed(0)} ms in ${mig.rounds} pre-copy rounds, restore ${ms.toFixed(0)} ms`,
  );
  t.is(pid, child.pid!, 'same pid');
  t.deepEqual(taskIds(pid), tids, 'same thread ids');

  // The same port, the same server.
  const r = await Redis.connect(port);
  t.teardown(() => r.close());
  const after = await infoServer(r);
  t.is(after.process_id, before.process_id);
  t.is(after.run_id, before.run_id);
  t.true(Number(after.uptime_in_seconds) >= Number(before.uptime_in_seconds), `uptime ${before.uptime_in_seconds} -> ${after.uptime_in_seconds}`);

  // Every key and value.
  t.is(await r.cmd('DBSIZE'), 2004);
  const keys = [...strings.keys()];
  let differ = 0;
  for (let i = 0; i < keys.length; i += 250) {
    const got = await r.pipeline(keys.slice(i, i + 250).map((k) => ['GET', k]));
    got.forEach((v, j) => {
      const want = strings.get(keys[i + j])!;
      if (!Buffer.isBuffer(v) || !v.equals(want)) {
        if (differ++ < 5) t.fail(`${keys[i + j]}: ${want.length} bytes written, got ${Buffer.isBuffer(v) ? `${v.length} different bytes` : String(v)}`);
      }
    });
  }
  t.is(differ, 0, 'every string equal');
  const h = (await r.cmd('HGETALL', 'hash')) as Buffer[];
  const gotHash = new Map<string, string>();
  for (let i = 0; i < h.length; i += 2) gotHash.set(text(h[i]), text(h[i + 1]));
  t.deepEqual(gotHash, hash);
  t.deepEqual(((await r.cmd('LRANGE', 'list', '0', '-1')) as Buffer[]).map(text), list);
  const ttl = (await r.cmd('TTL', 'expiring')) as number;
  t.true(ttl > 3500 && ttl <= 3600, `TTL ${ttl}`);

  // New clients, at once; new writes read back.
  const clients = await Promise.all(Array.from({ length: 8 }, () => Redis.connect(port)));
  t.teardown(() => Promise.all(clients.map((x) => x.close())));
  await Promise.all(
    clients.map(async (x, i) => {
      t.is(await x.cmd('PING'), 'PONG');
      for (let k = 0; k < 10; k++) await x.cmd('INCR', 'counter');
      const v = randomBytes(1000 + i);
      t.is(await x.cmd('SET', `new:${i}`, v), 'OK');
      t.true(((await x.cmd('GET', `new:${i}`)) as Buffer).equals(v));
    }),
  );
  t.is(await r.cmd('INCR', 'counter'), 41 + 8 * 10 + 1);
  t.is(await r.cmd('DBSIZE'), 2004 + 8);
  t.is((await infoServer(clients[0])).process_id, String(pid));

  // redis's background threads work: UNLINK of a big hash is freed by the lazyfree bio thread.
  const lazyfreed = async () => Number(/^lazyfreed_objects:(\d+)/m.exec(text(await r.cmd('INFO', 'memory')))?.[1]);
  const freedBefore = await lazyfreed();
  t.false(Number.isNaN(freedBefore), 'INFO memory has lazyfreed_objects');
  const fields = Array.from({ length: 5000 }, (_, i) => [`f${i}`, `${i}`]).flat();
  t.is(await r.cmd('HSET', 'big', ...fields), 5000);
  t.is(await r.cmd('UNLINK', 'big'), 1);
  await waitFor('the lazyfree thread to free the unlinked hash', async () => ((await lazyfreed()) > freedBefore ? true : undefined), 10_000);
  const log = fs.existsSync(path.join(dir, 'stdio')) ? fs.readFileSync(path.join(dir, 'stdio'), 'utf8') : '';
  t.notRegex(log, /crash|assert|panic/i, 'redis logged nothing alarming after the restore');
});

/** The python3 program: a counter, a dict, an 8 MiB bytearray; every ~20 ms one line
 *  `n=<counter> sum=<checksum over all of it>` appended to a file it keeps open. */
const PROGRESS_PY = `
import os, sys, time
os.closerange(3, 65536)  # fds the test runner may leak
M = (1 << 61) - 1
out = open(sys.argv[1], 'a')
d = {}
blob = bytearray(8 << 20)
n = 0
s = 0
while True:
    n += 1
    d[n % 1000] = n * n
    prev = blob[((n - 1) * 4099) % len(blob)]
    blob[(n * 4099) % len(blob)] = n & 0xff
    s = (s * 1000003 + sum(d.values()) + prev) % M
    out.write(f'n={n} sum={s}\\n')
    out.flush()
    time.sleep(0.02)
`;

/** The lines the program must write, recomputed: line n-1 is `n=<n> sum=<s>`. */
function expectedLines(count: number): string[] {
  const M = (1n << 61n) - 1n;
  const d = new Map<number, bigint>();
  let total = 0n; // sum(d.values())
  let s = 0n;
  const out: string[] = [];
  for (let n = 1; n <= count; n++) {
    const v = BigInt(n) * BigInt(n);
    total += v - (d.get(n % 1000) ?? 0n);
    d.set(n % 1000, v);
    const prev = n === 1 ? 0n : BigInt((n - 1) & 0xff); // blob[(n-1)*4099 % len] as tick n-1 left it
    s = (s * 1000003n + total + prev) % M;
    out.push(`n=${n} sum=${s}`);
  }
  return out;
}

test.serial('python3: a counter, a dict and a bytearray go on without a gap or a repeat after a restore', async (t) => {
  const dir = tempDir('precopy-python-');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const script = path.join(dir, 'progress.py');
  fs.writeFileSync(script, PROGRESS_PY);
  const progress = path.join(dir, 'progress.log');
  const lines = (): string[] => (fs.existsSync(progress) ? fs.readFileSync(progress, 'utf8').split('\n').slice(0, -1) : []);

  const child = spawn('python3', [script, progress], { stdio: 'ignore' });
  t.teardown(() => child.kill('SIGKILL'));
  await waitFor('50 progress lines', () => {
    if (child.exitCode !== null) throw new Error(`python3 exited with ${child.exitCode}`);
    return lines().length >= 50 ? true : undefined;
  });
  const cmdline = fs.readFileSync(`/proc/${child.pid}/cmdline`);

  const mig = await migrateAndKill(child, 'python');
  const atKill = lines().length;
  const { pid, ms } = await restore('python', path.join(dir, 'stdio'));
  t.teardown(() => killAndWait(pid));
  t.log(
    `python3: downtime ${mig.downtimeMs.toFixed(1)} ms, migration ${mig.totalMs.toFixed(0)} ms in ${mig.rounds} pre-copy rounds, restore ${ms.toFixed(0)} ms; ${atKill} lines before the kill`,
  );
  t.is(pid, child.pid!, 'same pid');
  t.deepEqual(fs.readFileSync(`/proc/${pid}/cmdline`), cmdline);

  await waitFor('50 more lines after the restore', () => (lines().length >= atKill + 50 ? true : undefined));
  await killAndWait(pid);
  const got = lines();
  const want = expectedLines(got.length);
  const first = got.findIndex((l, i) => l !== want[i]);
  t.is(
    first,
    -1,
    first < 0
      ? ''
      : `line ${first + 1} is ${JSON.stringify(got[first])}, expected ${JSON.stringify(want[first])} (${atKill} lines were written before the kill)`,
  );
  t.true(got.length >= atKill + 50);
});
