// The reading subcommands through the real CLI (dist/receiver/cli.js): list, verify, export, gc,
// their exit statuses, their help, and plain one-line errors (no stack) for user mistakes.

import test from 'ava';
import { spawnSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { ImageStore } from '../../../image/image-store';
import { Model, PS, commitModel, figures, meta, pagesOf, sendBatch, tempDir, vma } from '../../image/store-helpers';

const CLI = path.resolve(__dirname, '..', '..', '..', 'receiver', 'cli.js');
const A = 0x7f0000000000;

function receiver(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, PRECOPY_LOG: 'warn' } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** DIR with sessions: "done" (committed, 8 pages), "busy" (receiving), "dead" (failed). */
async function images(t: import('ava').ExecutionContext): Promise<{ dir: string; model: Model }> {
  const dir = path.join(tempDir(t), 'images');
  const store = new ImageStore(dir);
  const done = await store.create(meta('done', { command: 'myprog' }));
  const model = new Model();
  model.setLayout([vma(A, 8)]);
  await done.beginRound(0, 'STOP_AND_COPY', model.layout);
  await sendBatch(done, model, pagesOf(A, 6), 1, new Set([A + PS]));
  await done.endRound(figures(0));
  await commitModel(done, model);
  await done.close();
  const busy = await store.create(meta('busy'));
  await busy.beginRound(0, 'PRECOPY', model.layout);
  await sendBatch(busy, new Model(), pagesOf(A, 2), 1);
  await busy.endRound(figures(0));
  await busy.close();
  const dead = await store.create(meta('dead'));
  await dead.fail('connection dropped');
  await dead.close();
  return { dir, model };
}

test('list prints a table of sessions, or JSON', async (t) => {
  const { dir } = await images(t);
  const r = receiver('list', '--images', dir);
  t.is(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  t.regex(lines[0], /^SESSION\s+PID\s+COMMAND\s+STATE\s+SIZE\s+ROUNDS\s+WHEN\s+NOTE$/);
  t.is(lines.length, 4);
  t.regex(r.stdout, /^done\s+4242\s+myprog\s+committed\s+24\.0 KiB\s+1\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d/m);
  t.regex(r.stdout, /^busy\s+4242\s+target\s+receiving\s+8\.00 KiB\s+1\s/m);
  t.regex(r.stdout, /^dead\s+.*failed\s+0 B\s+0\s+.*connection dropped$/m);
  const j = receiver('list', '--images', dir, '--json');
  t.deepEqual(
    (JSON.parse(j.stdout) as { meta: { sessionId: string } }[]).map((s) => s.meta.sessionId),
    ['done', 'busy', 'dead'],
  );
  const missing = receiver('list', '--images', path.join(dir, 'nope'));
  t.is(missing.status, 2);
  t.regex(missing.stderr, /^receiver: --images: .* is not a directory\n$/);
});

test('verify: 0 only for a committed, complete image whose digest matches', async (t) => {
  const { dir } = await images(t);
  const ok = receiver('verify', '--images', dir, 'done');
  t.is(ok.status, 0, ok.stdout + ok.stderr);
  t.regex(ok.stdout, /^done: ok: committed, 6 pages .* digest [0-9a-f]{16}\n$/);
  const busy = receiver('verify', '--images', dir, 'busy');
  t.is(busy.status, 1);
  t.regex(busy.stdout, /NOT OK\n {2}- session is receiving, not committed/);
  t.is(receiver('verify', '--images', dir, 'dead').status, 1);

  // One flipped byte in a stored page: the recomputed digest no longer matches.
  const chunk = path.join(dir, 'done', 'chunks', (await fsp.readdir(path.join(dir, 'done', 'chunks')))[0]);
  const fh = await fsp.open(chunk, 'r+');
  const b = Buffer.alloc(1);
  await fh.read(b, 0, 1, 100);
  b[0] ^= 0xff;
  await fh.write(b, 0, 1, 100);
  await fh.close();
  const bad = receiver('verify', '--images', dir, 'done', '--json');
  t.is(bad.status, 1);
  const j = JSON.parse(bad.stdout) as { ok: boolean; problems: string[] };
  t.false(j.ok);
  t.regex(j.problems.join('\n'), /digest recomputed from disk [0-9a-f]{16} differs/);

  // A truncated chunk file: pages missing, not ok.
  await fsp.truncate(chunk, 2 * PS);
  const cut = receiver('verify', '--images', dir, 'done');
  t.is(cut.status, 1);
  t.regex(cut.stdout, /missing from its chunk file/);

  for (const [args, msg] of [
    [['verify', '--images', dir, 'nope'], /^receiver: no session nope in /],
    [['verify', '--images', dir, '../x'], /^receiver: bad session id '\.\.\/x'/],
    [['verify', '--images', dir], /^receiver: expected one SESSION, got 0/],
    [['verify', '--images', dir, 'done', '--bogus'], /^receiver: Unknown option '--bogus'/],
  ] as [string[], RegExp][]) {
    const r = receiver(...args);
    t.is(r.status, 2, args.join(' '));
    t.regex(r.stderr, msg);
    t.notRegex(r.stderr, /\n\s+at /, 'no stack trace');
  }
});

test('export raw and core through the CLI', async (t) => {
  const { dir, model } = await images(t);
  const out = path.join(path.dirname(dir), 'raw');
  const r = receiver('export', '--images', dir, 'done', '--format', 'raw', '--out', out);
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /exported 1 VMAs .* 5 pages sent, 1 zero, 0 from files, 2 never populated/);
  t.true((await fsp.readFile(path.join(out, '7f0000000000-7f0000008000.bin'))).equals(model.vmaBytes(model.layout[0])));
  const core = path.join(path.dirname(dir), 'done.core');
  const c = receiver('export', '--images', dir, 'done', '--format', 'core', '--out', core);
  t.is(c.status, 0, c.stderr);
  t.true((await fsp.stat(core)).size > 8 * PS);

  const again = receiver('export', '--images', dir, 'done', '--out', out);
  t.is(again.status, 2);
  t.regex(again.stderr, /is not empty .* --force/);
  const busy = receiver('export', '--images', dir, 'busy', '--out', path.join(path.dirname(dir), 'b'));
  t.is(busy.status, 2);
  t.regex(busy.stderr, /^receiver: cannot export: session busy is receiving, not committed\n$/);
  t.regex(receiver('export', '--images', dir, 'done').stderr, /--out PATH is required/);
  t.regex(receiver('export', '--images', dir, 'done', '--out', 'x', '--format', 'tar').stderr, /--format must be one of raw, core/);
});

test('gc removes old failed/aborted sessions; committed only when named', async (t) => {
  const { dir } = await images(t);
  const young = receiver('gc', '--images', dir);
  t.is(young.status, 0, young.stderr);
  t.is(young.stdout, 'nothing to remove\n');
  const dry = receiver('gc', '--images', dir, '--older-than', '0', '--dry-run');
  t.is(dry.stdout, 'would remove 1 session(s): dead\n');
  t.true((await fsp.readdir(dir)).includes('dead'));
  const gc = receiver('gc', '--images', dir, '--older-than', '0');
  t.is(gc.stdout, 'removed 1 session(s): dead\n');
  t.deepEqual((await fsp.readdir(dir)).sort(), ['busy', 'done']);
  t.is(receiver('gc', '--images', dir, '--older-than', '0').stdout, 'nothing to remove\n');
  t.is(receiver('gc', '--images', dir, '--older-than', '0', '--state', 'committed').stdout, 'removed 1 session(s): done\n');
  t.deepEqual(await fsp.readdir(dir), ['busy']);
  const bad = receiver('gc', '--images', dir, '--older-than', 'soon');
  t.is(bad.status, 2);
  t.regex(bad.stderr, /--older-than expects a duration like 30s/);
  t.regex(receiver('gc', '--images', dir, '--state', 'zombie').stderr, /--state must be one of receiving, committed, failed, aborted/);
});

test('each subcommand has --help', (t) => {
  for (const cmd of ['list', 'verify', 'export', 'gc']) {
    const r = receiver(cmd, '--help');
    t.is(r.status, 0, cmd);
    t.regex(r.stdout, new RegExp(`^usage: receiver ${cmd} `));
    t.regex(r.stdout, /--images DIR/);
  }
});
