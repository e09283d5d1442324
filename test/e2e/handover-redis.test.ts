// redis-server handed over (`sender migrate --handover --drop-connections`) while redis-benchmark
// and a writer of ours write to it: at the destination every key written before the migration
// and every SET acknowledged during it is there with its value, redis takes new writes and new
// clients (a benchmark run there), and the source is gone. Twice: the migration link over the
// veth pair of the two-namespace test network, and over loopback (DestHost link 'loopback').
//
// Over loopback, the link only: redis itself always moves to the destination's network namespace.
// The stopped source keeps redis's listening port until it is killed, which is after the
// destination started, so a destination in the source's namespace could not listen on that port
// (the restore would fail and roll back). Clients reach redis at 127.0.0.1:port before (root
// namespace) and after (the destination's namespace).
//
// "The clients reconnect": connections do not move. --drop-connections restores redis's client
// sockets as ones whose peer has gone (redis closes them at once) and killing the source resets
// the clients' ends, so the writer and the benchmark of before see their connection break. The
// clients of after are new connections to the destination's address: a benchmark started there.

import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DestHost, type DestLink } from '../helpers/dest-host';
import { nextSubnet as nextSubnetOf, procState, until } from '../helpers/handover-run';
import { describeRun, tempDir } from '../helpers/migration-cli';
import { info, Redis, startRedis, type RedisServer } from '../helpers/redis';
import { AckedWriter, type DestinationCheck, type KeyValue } from '../helpers/redis-writes';
import { requireProgram } from '../helpers/system-deps';
import { waitFor } from '../helpers/wait-for';

const nextSubnet = (): string => nextSubnetOf(95);
const REDIS_WRITES_JS = path.join(__dirname, '..', 'helpers', 'redis-writes.js');

/** Keys written before the migration: pre:<i> = 100 bytes naming i and the run. */
const PRE_KEYS = 20_000;
const preValue = (salt: string, i: number): string => `${salt}/${i}/`.padEnd(100, '.');

/** Writes and list pushes on random keys, from 4 clients (with -l, until killed). */
const benchmarkArgs = (port: number, more: string[]): string[] => ['-h', '127.0.0.1', '-p', String(port), ...'-t set,lpush -r 100000 -c 4'.split(' '), ...more];

async function commandsProcessed(c: Redis): Promise<number> {
  return Number((await info(c, 'stats')).total_commands_processed);
}

async function loadKeys(r: RedisServer, salt: string): Promise<KeyValue[]> {
  const pre = Array.from({ length: PRE_KEYS }, (_, i): KeyValue => [`pre:${i}`, preValue(salt, i)]);
  for (let i = 0; i < pre.length; i += 1000) {
    const replies = await r.client.pipeline(pre.slice(i, i + 1000).map(([k, v]) => ['SET', k, v]));
    if (!replies.every((x) => x === 'OK')) throw new Error('a SET before the migration was refused');
  }
  return pre;
}

async function handoverUnderWrites(t: ExecutionContext, link: DestLink): Promise<void> {
  const benchmark = requireProgram('redis-benchmark');
  const dest = await DestHost.create(nextSubnet(), ['--accept-handover'], {}, link);
  t.teardown(() => dest.destroy());
  const dir = tempDir('precopy-hv-redis-');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const redis = await startRedis(dir);
  t.teardown(() => redis.child.kill('SIGKILL'));
  const pid = redis.child.pid!;
  const salt = randomBytes(6).toString('hex');
  const pre = await loadKeys(redis, salt);
  const runId = (await info(redis.client, 'server')).run_id;
  const exe = fs.readlinkSync(`/proc/${pid}/exe`);

  // The load of before: the benchmark (looping until killed) and our writer, each on its own
  // connections; wait until both are under way.
  const bench = spawn(benchmark, benchmarkArgs(redis.port, ['-n', '100000', '-l', '-q']), { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => bench.kill('SIGKILL'));
  let benchOut = '';
  for (const s of [bench.stdout, bench.stderr]) s.on('data', (d: Buffer) => (benchOut = (benchOut + d.toString()).slice(-2000)));
  const writer = new AckedWriter(await Redis.connect(redis.port), salt);
  t.teardown(() => writer.stop());
  const loaded = await commandsProcessed(redis.client);
  await waitFor('the benchmark and the writer to be under way', async () =>
    (await commandsProcessed(redis.client)) > loaded + 5000 && writer.acked.length > 100 ? true : undefined,
  );

  const atStart = { commands: await commandsProcessed(redis.client), acked: writer.acked.length };
  const run = await dest.handover(pid, `hv-redis-${link}`, {}, ['--drop-connections']);
  t.is(run.code, 0, describeRun(run));
  const h = run.summary!.handover!;
  const ms = (s: number): string => `${(s * 1000).toFixed(0)} ms`;
  t.log(
    `downtime ${ms(h.totalDowntimeSeconds)}: freeze->commit ${ms(h.freezeToCommitSeconds)}, verify ${ms(h.verifySeconds)}, ` +
      `restore ${ms(h.restoreSeconds)}${h.prebuilt ? ' (built during pre-copy)' : ''}; migration ${ms(run.summary!.totalSeconds)}, ` +
      `${run.summary!.precopyRounds} pre-copy rounds, image ${(run.summary!.memoryBytes / 2 ** 20).toFixed(0)} MiB`,
  );
  t.true(h.prebuilt, 'the receiver built the process while the rounds arrived');
  t.is(h.destinationPid, pid, 'same pid inside the destination PID namespace');
  await until('the source to be gone', () => procState(pid) === null);
  t.is(fs.readlinkSync(`/proc/${dest.rootPid(pid)}/exe`), exe, 'redis-server runs in the destination namespace');

  // The connections of before broke (see the header); what they had acknowledged is what the
  // destination must hold.
  const writerEnd = await writer.stop();
  const during = writer.acked.length - atStart.acked;
  t.log(`writer: ${writer.acked.length} SETs acknowledged, ${during} of them during the migration; then: ${writerEnd}`);
  t.true(during > 0, 'the writer wrote during the migration');
  t.regex(writerEnd, /closed|reset|ECONNRESET/, 'the writer lost its connection with the source');
  const benchExit = await new Promise<string>((r) => (bench.exitCode !== null ? r(`exit ${bench.exitCode}`) : setTimeout(() => r('still running'), 1000)));
  const benchLast = benchOut
    .split(/[\r\n]/)
    .filter(Boolean)
    .slice(-2);
  t.log(`benchmark of before: ${benchExit}, last output ${JSON.stringify(benchLast)}`);

  // Every key of before, every acknowledged SET, and one never written: the check must find
  // that one wrong, or it could not find a lost key either.
  const never: KeyValue = ['never:written', 'a value'];
  const expectFile = path.join(dir, 'expected.json');
  fs.writeFileSync(expectFile, JSON.stringify([...pre, ...writer.expected(), never]));
  const check = JSON.parse(
    await dest.nodeInside(`require(${JSON.stringify(REDIS_WRITES_JS)}).checkKeysAt(${redis.port}, ${JSON.stringify(expectFile)})`),
  ) as DestinationCheck;
  t.log(
    `checked ${check.checked - 1} keys at the destination (${pre.length} of before, ${writer.acked.length} acknowledged): wrong ${JSON.stringify(check.wrong.slice(0, 10))}`,
  );
  t.deepEqual(check.wrong, [never[0]], 'every key of before and every acknowledged SET is there with its value');
  t.is(check.processId, pid, 'INFO server: the same pid');
  t.is(check.runId, runId, 'INFO server: the same run (not a new redis)');
  t.true(check.newWrite, 'a new key written and read back at the destination');
  const ops = check.commandsProcessed - atStart.commands;
  t.log(
    `commands processed: ${atStart.commands} when the handover began, ${check.commandsProcessed} at the destination (${ops} during the migration, ${during} of them the writer's)`,
  );
  t.true(ops > during + 1000, 'the benchmark wrote during the migration too');

  // New clients at the destination's address: a benchmark run there to its end.
  const after = await dest.pair.exec('b', benchmark, benchmarkArgs(redis.port, ['-n', '20000', '--csv']));
  const rps = Object.fromEntries([...after.stdout.matchAll(/^"(\w+)","([\d.]+)"/gm)].map((m) => [m[1], Number(m[2])]));
  t.log(`benchmark at the destination: ${JSON.stringify(rps)} requests/s`);
  t.true(rps.SET > 0 && rps.LPUSH > 0, after.stdout);
}

test.serial('redis-server under redis-benchmark writes is handed over (link over the veth pair): every acknowledged key there', handoverUnderWrites, 'veth');
test.serial('redis-server under redis-benchmark writes is handed over (link over loopback): every acknowledged key there', handoverUnderWrites, 'loopback');
