// Confinement: session ids are the only part of a message that becomes a path on the receiver
// (DIR/<id>; chunk and bitmap file names are numbers the store makes). Every id that could name
// something outside the images directory, or something in it that is not a session, is refused
// with a clear status, and nothing is created, changed or locked anywhere.

import { mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import test from 'ava';
import * as grpc from '@grpc/grpc-js';
import { validSessionId } from '../../../image/input-checks';
import { startReceiver } from '../../helpers/receiver';
import { receiverCli, describeRun } from '../../helpers/migration-cli';
import { commitOf, exchange, grpcCode, roundEnd, sessionStart } from './server-client';
import { Model, PS, tempDir, vma } from '../../image/store-helpers';

const BAD_IDS: Record<string, string> = {
  dot: '.',
  'dot dot': '..',
  'parent path': '../x',
  'deep parent path': 'a/../../x',
  absolute: '/etc',
  'absolute, long': '/tmp/precopy-escape',
  slash: 'a/b',
  backslash: 'a\\b',
  'hidden name': '.hidden',
  'store temp name': '.tmp-x-0000',
  NUL: 'x\0y',
  'NUL only': '\0',
  newline: 'a\nb',
  space: 'a b',
  'unicode letter': 'séance',
  'fullwidth letters': 'ｓｅｓｓｉｏｎ',
  'one dot leader (looks like .)': '\u2024',
  'two dot leader (looks like ..)': '\u2025',
  'division slash (looks like /)': '..\u2215etc',
  'fraction slash (looks like /)': 'a\u2044b',
  'fullwidth full stop': '\uff0e\uff0e',
  'zero-width space': 'a\u200bb',
  'right-to-left override': 'a\u202eb',
  '65 characters': 'x'.repeat(65),
  '100,000 characters': 'y'.repeat(100_000),
  empty: '',
};

function listTree(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    out.push(p);
    if (e.isDirectory()) out.push(...listTree(p));
  }
  return out.sort();
}

test('session ids that are not plain names are refused; nothing is created anywhere', async (t) => {
  const parent = tempDir(t, 'precopy-paths-');
  const images = path.join(parent, 'images');
  const receiver = await startReceiver({ images });
  t.teardown(() => receiver.stop());
  const before = listTree(parent);

  for (const [what, id] of Object.entries(BAD_IDS)) {
    t.false(validSessionId(id), what);
    for (const resume of [false, true]) {
      const r = await exchange(receiver.address, [{ start: sessionStart(id, { resume }) }]);
      t.is(grpcCode(r.code), 'INVALID_ARGUMENT', `${what} (resume ${resume}): ${r.details}`);
      t.regex(r.details, /^bad session id .*use 1-64 of A-Z a-z 0-9 \. _ -, not starting with '\.'$/s, what);
      t.true(r.details.length < 300, `${what}: the message quotes a bounded part of the id`);
    }
  }
  t.deepEqual(listTree(parent), before);
  t.is(receiver.child.exitCode, null);
});

test('ids of entries in the images directory that are not sessions: refused, left untouched', async (t) => {
  const parent = tempDir(t, 'precopy-paths-');
  const images = path.join(parent, 'images');
  const outside = path.join(parent, 'outside');
  mkdirSync(images);
  mkdirSync(outside);
  writeFileSync(path.join(outside, 'secret'), 'keep me\n');
  writeFileSync(path.join(images, 'notes'), 'a file\n');
  mkdirSync(path.join(images, 'plain'));
  writeFileSync(path.join(images, 'plain', 'data'), 'not a session\n');
  symlinkSync(outside, path.join(images, 'escape'));
  symlinkSync(path.join(outside, 'secret'), path.join(images, 'secretlink'));
  const receiver = await startReceiver({ images });
  t.teardown(() => receiver.stop());
  const before = listTree(parent).map((p) => `${p} ${statSync(p).mtimeMs}`);

  const { ALREADY_EXISTS, NOT_FOUND } = grpc.status;
  const cases: Array<[id: string, resume: boolean, code: grpc.status, details: RegExp]> = [
    ['notes', false, ALREADY_EXISTS, /session notes already exists/],
    ['notes', true, NOT_FOUND, /is not a session directory/],
    ['escape', false, ALREADY_EXISTS, /already exists/],
    ['escape', true, NOT_FOUND, /is not a session directory/],
    ['secretlink', false, ALREADY_EXISTS, /already exists/],
    ['secretlink', true, NOT_FOUND, /is not a session directory/],
    ['plain', false, ALREADY_EXISTS, /already exists/],
    ['plain', true, NOT_FOUND, /session plain not found \(no meta\.json\)/],
  ];
  for (const [id, resume, code, details] of cases) {
    const r = await exchange(receiver.address, [{ start: sessionStart(id, { resume }) }]);
    t.is(grpcCode(r.code), grpcCode(code), `${id} (resume ${resume}): ${r.details}`);
    t.regex(r.details, details);
  }
  t.deepEqual(
    listTree(parent).map((p) => `${p} ${statSync(p).mtimeMs}`),
    before,
    'no entry created, removed or modified (no owner.lock left in plain/)',
  );
  t.is(readFileSync(path.join(outside, 'secret'), 'utf8'), 'keep me\n');
  t.deepEqual(readdirSync(outside), ['secret']);
});

// The one other path a message names: a file-backed VMA's path, read (never written) by
// `receiver export` for pages the process never wrote. Under --file-root it stays under the root.
test("export --file-root: a VMA path with '..' is looked up under the root, not above it", async (t) => {
  const parent = tempDir(t, 'precopy-paths-');
  const images = path.join(parent, 'images');
  const root = path.join(parent, 'rootfs');
  mkdirSync(path.join(parent, 'outside'));
  writeFileSync(path.join(parent, 'outside', 'secret'), Buffer.alloc(2 * PS, 'S'));
  mkdirSync(path.join(root, 'outside'), { recursive: true });
  writeFileSync(path.join(root, 'outside', 'secret'), Buffer.alloc(2 * PS, 'D'));
  const receiver = await startReceiver({ images });
  t.teardown(() => receiver.stop());

  const F = 0x7f7800000000;
  const layout = [vma(F, 2, { perms: 'r--p', path: '/../outside/secret', fileBacked: true })];
  const model = new Model();
  model.setLayout(layout);
  const r = await exchange(receiver.address, [
    { start: sessionStart('dotdot') },
    { roundStart: { round: 0, phase: 'STOP_AND_COPY', layout } },
    { roundEnd: roundEnd(0) },
    { commit: commitOf(model) },
  ]);
  t.is(grpcCode(r.code), 'OK', r.details);

  const out = path.join(parent, 'out');
  const run = await receiverCli(['export', '--images', images, 'dotdot', '--format', 'raw', '--out', out, '--file-root', root]);
  t.is(run.code, 0, describeRun(run));
  const bytes = readFileSync(path.join(out, `${F.toString(16)}-${(F + 2 * PS).toString(16)}.bin`));
  t.true(bytes.equals(Buffer.alloc(2 * PS, 'D')), 'read from ROOT/outside/secret, not from above the root');
});
