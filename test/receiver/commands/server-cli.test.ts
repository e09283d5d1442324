// The `receiver` command line around `serve`: help texts, defaults, and user mistakes (one message
// and the usage on stderr, exit status 2, never a stack trace).

import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import test from 'ava';
import { RECEIVER_CLI, startReceiver } from '../../helpers/receiver';
import { tempDir } from '../../image/store-helpers';

function cli(args: string[], cwd?: string) {
  const r = spawnSync(process.execPath, [RECEIVER_CLI, ...args], { encoding: 'utf8', cwd, timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('receiver --help lists the commands', (t) => {
  const r = cli(['--help']);
  t.is(r.code, 0, r.stderr);
  for (const c of ['serve', 'list', 'verify', 'export', 'gc']) t.regex(r.stdout, new RegExp(`^  ${c} `, 'm'));
});

test('receiver serve --help explains the flags and their defaults', (t) => {
  const r = cli(['serve', '--help']);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /^usage: receiver serve/);
  for (const s of [
    '--listen HOST:PORT',
    'default 127.0.0.1:7070',
    '--images DIR',
    './precopy-images',
    '--metrics-listen HOST:PORT',
    '--abandon-after',
    '--shutdown-grace',
    'receiver listening on HOST:PORT',
  ]) {
    t.true(r.stdout.includes(s), `help mentions ${s}`);
  }
});

const MISTAKES: Array<[string[], RegExp]> = [
  [[], /^receiver: a command is required/],
  [['frobnicate'], /^receiver: unknown command 'frobnicate'/],
  [['serve', '--bogus'], /^receiver: Unknown option '--bogus'/],
  [['serve', '--listen'], /^receiver: Option '--listen <value>' argument missing/],
  [['serve', '--listen', 'nonsense'], /^receiver: --listen expects HOST:PORT, got 'nonsense'/],
  [['serve', '--listen', '127.0.0.1:70000'], /^receiver: --listen: port 70000 is out of range/],
  [['serve', '--abandon-after', 'soon'], /^receiver: --abandon-after expects a whole number, got 'soon'/],
  [['serve', '--shutdown-grace', '4000'], /^receiver: --shutdown-grace must be between 0 and 3600, got 4000/],
  [['serve', 'extra'], /^receiver: Unexpected argument 'extra'/],
];

for (const [args, message] of MISTAKES) {
  test(`receiver ${args.join(' ') || '(nothing)'}: exit 2, a message, no stack`, (t) => {
    const r = cli(args);
    t.is(r.code, 2);
    t.regex(r.stderr, message);
    t.notRegex(r.stderr, /\n\s+at /);
    t.is(r.stdout, '');
  });
}

test('serve: a port in use and an unusable images directory are plain errors', async (t) => {
  const dir = tempDir(t, 'precopy-cli-');
  const running = await startReceiver({ images: path.join(dir, 'images') });
  t.teardown(() => running.stop());
  const busy = cli(['serve', '--listen', running.address, '--images', path.join(dir, 'other')]);
  t.is(busy.code, 2);
  t.regex(busy.stderr, new RegExp(`^receiver: --listen: cannot listen on ${running.address}: address already in use`));
  t.notRegex(busy.stderr, /\n\s+at /);

  const bad = cli(['serve', '--listen', '127.0.0.1:0', '--images', '/dev/null/images']);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /^receiver: --images: cannot use \/dev\/null\/images: not a directory/m);
  t.notRegex(bad.stderr, /\n\s+at /);
});

test('serve: images default to ./precopy-images; exactly one line on stdout', async (t) => {
  const cwd = tempDir(t, 'precopy-cli-');
  const child = spawn(process.execPath, [RECEIVER_CLI, 'serve', '--listen', '127.0.0.1:0'], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  const rl = readline.createInterface({ input: child.stdout! });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  await new Promise<void>((resolve) => rl.once('line', (l) => (lines.push(l), resolve())));
  rl.on('line', (l) => lines.push(l));
  t.regex(lines[0], /^receiver listening on 127\.0\.0\.1:[1-9]\d*$/);
  t.true(existsSync(path.join(cwd, 'precopy-images')));
  child.kill('SIGTERM');
  t.is(await exited, 0);
  t.deepEqual(lines.length, 1);
});
