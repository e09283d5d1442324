// Crash safety: a child process writing a session through the store is SIGKILLed at named points
// (between rounds, in the middle of a round, at each step of a commit, during a fix-up after a
// commit). Reopened, the session is at its last durable round, verify never says ok for an
// incomplete image, a resumed session completes to an image equal to the model (its running
// digest, rebuilt from disk on resume, is what the commit checks), and committed images (its own
// or other sessions') stay valid.

import test from 'ava';
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { ImageStore, type SessionReader, type SessionState } from '../../image/image-store';
import { exportRaw } from '../../receiver/export/raw-export';
import { vmaRangeName } from '../../common/vma';
import { Model, PS, commitModel, figures, meta, pageBytes, sendBatch, tempDir, vma } from './store-helpers';
import { LAYOUT, ROUNDS, playSteps, simulate, type Step } from './store-crash-scenario';

const CHILD = path.join(__dirname, 'store-crash-child.js');

interface ChildEnd {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function runChild(dir: string, id: string, steps: Step[], crashAt?: string): Promise<ChildEnd> {
  return new Promise((resolve, reject) => {
    const env: NodeJS.ProcessEnv = { ...process.env, PRECOPY_LOG: 'warn' };
    if (crashAt) env.PRECOPY_FAULT_STORE_CRASH_AT = crashAt;
    else delete env.PRECOPY_FAULT_STORE_CRASH_AT;
    const child = spawn(process.execPath, [CHILD, dir, id, ...steps], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    // 'close' comes after the child is reaped, so its pid is dead when the test reopens the session.
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** Pages held by a session as sorted [address, 'data' | 'zero'] pairs, read through readPages. */
async function heldPages(img: SessionReader): Promise<[number, string][]> {
  const out: [number, string][] = [];
  for (const v of LAYOUT) {
    const n = (v.end - v.start) / PS;
    const presence = new Uint8Array(n);
    await img.readPages(v.start, n, Buffer.alloc(n * PS), presence);
    presence.forEach((p, i) => p !== 0 && out.push([v.start + i * PS, p === 1 ? 'data' : 'zero']));
  }
  return out;
}

function modelPresence(m: Model): [number, string][] {
  return [...m.pages].map(([a, c]): [number, string] => [a, c === 'zero' ? 'zero' : 'data']).sort((x, y) => x[0] - y[0]);
}

async function bitmapFiles(sessionDir: string): Promise<string[]> {
  return (await fsp.readdir(path.join(sessionDir, 'bitmaps'))).sort();
}

async function referencedGenerations(sessionDir: string): Promise<string[]> {
  const st = JSON.parse(await fsp.readFile(path.join(sessionDir, 'state.json'), 'utf8')) as { windows: [number, number, number][] };
  return [...new Set(st.windows.map((w) => `${String(w[1]).padStart(8, '0')}.bm`))].sort();
}

async function assertExportEquals(t: import('ava').ExecutionContext, img: SessionReader, model: Model, out: string): Promise<void> {
  await exportRaw(img, out);
  for (const v of model.layout) {
    const got = await fsp.readFile(path.join(out, `${vmaRangeName(v.start, v.end)}.bin`));
    t.true(got.equals(model.vmaBytes(v)), `export of ${vmaRangeName(v.start, v.end)}`);
  }
}

async function crashAndCheck(
  t: import('ava').ExecutionContext,
  crashAt: string,
  steps: Step[],
  expect: { state: SessionState; lastDurableRound: number; durable: (keyof typeof ROUNDS)[]; verifyOk: boolean },
): Promise<{ store: ImageStore; dir: string }> {
  const dir = tempDir(t);
  const store = new ImageStore(path.join(dir, 'images'));

  // A committed image of another session in the same directory: it must stay valid whatever happens.
  const keep = await store.create(meta('keep'));
  const km = new Model();
  km.setLayout([vma(0x600000000000, 4)]);
  await keep.beginRound(0, 'STOP_AND_COPY', km.layout);
  await sendBatch(keep, km, [0x600000000000, 0x600000001000], 1);
  await keep.endRound(figures(0));
  await commitModel(keep, km);
  await keep.close();

  const end = await runChild(store.dir, 'victim', steps, crashAt);
  t.is(end.signal, 'SIGKILL', `child must die at ${crashAt}; stdout: ${end.stdout} stderr: ${end.stderr}`);
  t.regex(end.stderr, new RegExp(`crash point ${crashAt.split('@')[0]} reached`));
  t.notRegex(end.stdout, /finished/);

  const img = await store.open('victim');
  t.is(img.state, expect.state, `state after a crash at ${crashAt}`);
  t.is(img.lastDurableRound, expect.lastDurableRound);
  const durable = simulate(expect.durable);
  t.deepEqual(await heldPages(img), modelPresence(durable), 'held pages are those of the last durable round');
  const v = await img.verify();
  t.is(v.ok, expect.verifyOk, v.problems.join('; '));
  if (!expect.verifyOk) t.true(v.problems.length > 0);
  await img.close();

  const other = await store.open('keep');
  t.true((await other.verify()).ok, 'the other committed session stays valid');
  await other.close();
  return { store, dir };
}

/** Resume the victim and finish the migration; the result must verify and equal the model. */
async function resumeAndFinish(
  t: import('ava').ExecutionContext,
  store: ImageStore,
  dir: string,
  durable: (keyof typeof ROUNDS)[],
  rest: Step[],
  all: (keyof typeof ROUNDS)[],
): Promise<void> {
  const img = await store.resume('victim');
  t.deepEqual(await img.heldDigest(), await img.digest(), 'the running digest rebuilt on resume is the digest from disk');
  const model = simulate(durable);
  await playSteps(img, model, rest);
  await img.close();
  const ro = await store.open('victim');
  const v = await ro.verify();
  t.true(v.ok, v.problems.join('; '));
  const want = simulate(all);
  t.deepEqual(modelPresence(model), modelPresence(want));
  await assertExportEquals(t, ro, want, path.join(dir, 'export'));
  // Nothing the crashed writer left behind survives the resume: only referenced bitmap generations.
  t.deepEqual(await bitmapFiles(ro.dir), await referencedGenerations(ro.dir));
  t.false((await fsp.readdir(ro.dir)).some((n) => n.includes('.tmp-')));
  await ro.close();
}

test('crash between rounds: reopened at the last durable round, resumable', async (t) => {
  const { store, dir } = await crashAndCheck(t, 'round-durable@1', ['r0', 'r1', 'commit'], {
    state: 'receiving',
    lastDurableRound: 0,
    durable: ['r0'],
    verifyOk: false,
  });
  await resumeAndFinish(t, store, dir, ['r0'], ['r1', 'commit'], ['r0', 'r1']);
});

test('crash in the middle of a round (writes in flight): the previous round is the durable state', async (t) => {
  // write-pages is reached once per batch: r0 has 8 batches, so @11 is the third batch of r1.
  const { store, dir } = await crashAndCheck(t, 'write-pages@11', ['r0', 'r1', 'commit'], {
    state: 'receiving',
    lastDurableRound: 0,
    durable: ['r0'],
    verifyOk: false,
  });
  await resumeAndFinish(t, store, dir, ['r0'], ['r1', 'commit'], ['r0', 'r1']);
});

test('crash in round 0 before anything is durable: an empty receiving session', async (t) => {
  const { store, dir } = await crashAndCheck(t, 'write-pages@4', ['r0', 'r1', 'commit'], {
    state: 'receiving',
    lastDurableRound: -1,
    durable: [],
    verifyOk: false,
  });
  await resumeAndFinish(t, store, dir, [], ['r0', 'r1', 'commit'], ['r0', 'r1']);
});

test('crash after the round data is synced but before its state: previous round', async (t) => {
  const { store, dir } = await crashAndCheck(t, 'round-data-synced@2', ['r0', 'r1', 'commit'], {
    state: 'receiving',
    lastDurableRound: 0,
    durable: ['r0'],
    verifyOk: false,
  });
  await resumeAndFinish(t, store, dir, ['r0'], ['r1', 'commit'], ['r0', 'r1']);
});

test('crash after the bitmaps are written but before the state: previous round, orphan bitmaps removed on resume', async (t) => {
  const { store, dir } = await crashAndCheck(t, 'round-bitmaps-written@2', ['r0', 'r1', 'commit'], {
    state: 'receiving',
    lastDurableRound: 0,
    durable: ['r0'],
    verifyOk: false,
  });
  const victim = path.join(store.dir, 'victim');
  t.true((await bitmapFiles(victim)).length > (await referencedGenerations(victim)).length, 'the crashed round left an unreferenced generation');
  await resumeAndFinish(t, store, dir, ['r0'], ['r1', 'commit'], ['r0', 'r1']);
});

test("crash after a round's data is synced: the digest rebuilt on resume covers the pages on disk, new content included", async (t) => {
  const { store, dir } = await crashAndCheck(t, 'round-data-synced@2', ['r0', 'r1', 'commit'], {
    state: 'receiving',
    lastDurableRound: 0,
    durable: ['r0'],
    verifyOk: false,
  });
  // On disk: r0's pages (the durable bitmaps), each data page with the last bytes written at its
  // address — r1's where r1 wrote data in place before the crash, r0's elsewhere.
  const onDisk = simulate(['r0']);
  for (const b of ROUNDS.r1.batches) for (const a of b.addrs) if (!b.zeros.has(a) && onDisk.pages.get(a) !== 'zero') onDisk.pages.set(a, pageBytes(a, b.gen));
  const img = await store.resume('victim');
  t.deepEqual(await img.heldDigest(), onDisk.digest());
  t.notDeepEqual(await img.heldDigest(), simulate(['r0']).digest(), 'the crashed round did change pages in place');
  await img.close();
  await resumeAndFinish(t, store, dir, ['r0'], ['r1', 'commit'], ['r0', 'r1']);
});

for (const point of ['commit-digest-checked', 'commit-manifest-tmp', 'commit-manifest-renamed']) {
  test(`crash during commit at ${point}: still receiving, never verifies, commits after resume`, async (t) => {
    const { store, dir } = await crashAndCheck(t, point, ['r0', 'r1', 'commit'], {
      state: 'receiving',
      lastDurableRound: 1,
      durable: ['r0', 'r1'],
      verifyOk: false,
    });
    await resumeAndFinish(t, store, dir, ['r0', 'r1'], ['commit'], ['r0', 'r1']);
  });
}

// The final round ended by the commit itself (one set of fsyncs): a crash before the commit
// point leaves the previous round durable, and a resumed sender sends that round again.
for (const point of ['commit-data-synced', 'commit-manifest-tmp', 'commit-manifest-renamed']) {
  test(`crash during a commit that ends the final round, at ${point}: the round before is durable`, async (t) => {
    const { store, dir } = await crashAndCheck(t, point, ['r0', 'r1+commit'], {
      state: 'receiving',
      lastDurableRound: 0,
      durable: ['r0'],
      verifyOk: false,
    });
    await resumeAndFinish(t, store, dir, ['r0'], ['r1+commit'], ['r0', 'r1']);
  });
}

test('a commit that ends the final round: committed, the round recorded, valid after a crash right after it', async (t) => {
  const { store, dir } = await crashAndCheck(t, 'commit-done', ['r0', 'r1+commit'], {
    state: 'committed',
    lastDurableRound: 1,
    durable: ['r0', 'r1'],
    verifyOk: true,
  });
  const ro = await store.open('victim');
  t.deepEqual(
    ro.rounds().map((r) => r.round),
    [0, 1],
  );
  await assertExportEquals(t, ro, simulate(['r0', 'r1']), path.join(dir, 'export'));
  await ro.close();
});

// journal-retired: after the commit, the chunk files synced and the state rewritten without the
// final round's journal (image/page-journal.ts): nothing is replayed.
for (const [point, steps] of [
  ['commit-done', ['r0', 'r1', 'commit']],
  ['journal-retired', ['r0', 'r1+commit']],
] as [string, Step[]][]) {
  test(`crash right after the commit (${steps.join(', ')}), at ${point}: the image is committed and valid`, async (t) => {
    const { store, dir } = await crashAndCheck(t, point, steps, {
      state: 'committed',
      lastDurableRound: 1,
      durable: ['r0', 'r1'],
      verifyOk: true,
    });
    const ro = await store.open('victim');
    await assertExportEquals(t, ro, simulate(['r0', 'r1']), path.join(dir, 'export'));
    await ro.close();
  });
}

test('crash during a verify fix-up after a commit: not claimed committed until the next commit', async (t) => {
  // write-pages: 8 (r0) + 4 (r1) + 1 (r2fix) = 13.
  const { store, dir } = await crashAndCheck(t, 'write-pages@13', ['r0', 'r1', 'commit', 'r2fix', 'commit'], {
    state: 'receiving',
    lastDurableRound: 1,
    durable: ['r0', 'r1'],
    verifyOk: false,
  });
  await resumeAndFinish(t, store, dir, ['r0', 'r1'], ['r2fix', 'commit'], ['r0', 'r1', 'r2fix']);
});

test('without a crash point the child finishes and its image verifies', async (t) => {
  const dir = tempDir(t);
  const store = new ImageStore(path.join(dir, 'images'));
  const end = await runChild(store.dir, 'clean', ['r0', 'r1', 'commit']);
  t.is(end.code, 0, end.stderr);
  t.regex(end.stdout, /finished/);
  const img = await store.open('clean');
  t.true((await img.verify()).ok);
  await img.close();
});

// The final-round journal (image/page-journal.ts): a stop-and-copy round's pages are synced in
// one journal file, not in the chunk files, until the writer retires it after the commit. A
// machine crash before that may lose the in-place writes; reopening writes them again from it.

const WINDOW_BYTES = PS * 2 ** 18;

/** Overwrite the chunk-file copies of round `name`'s data pages with garbage: what a machine
 *  crash does to writes that were never synced. */
async function loseInPlaceWrites(sessionDir: string, name: keyof typeof ROUNDS): Promise<number> {
  let n = 0;
  for (const b of ROUNDS[name].batches) {
    for (const a of b.addrs) {
      if (b.zeros.has(a)) continue;
      const w = Math.floor(a / WINDOW_BYTES);
      const file = path.join(sessionDir, 'chunks', `${(w * WINDOW_BYTES).toString(16).padStart(12, '0')}.dat`);
      const fh = await fsp.open(file, 'r+');
      await fh.write(Buffer.alloc(PS, 0xa5), 0, PS, a - w * WINDOW_BYTES);
      await fh.close();
      n++;
    }
  }
  return n;
}

async function stateFile(sessionDir: string): Promise<{ state: string; journal?: { round: number; bytes: number } }> {
  return JSON.parse(await fsp.readFile(path.join(sessionDir, 'state.json'), 'utf8')) as { state: string; journal?: { round: number; bytes: number } };
}

for (const steps of [
  ['r0', 'r1+commit'],
  ['r0', 'r1', 'commit'],
] as Step[][]) {
  test(`crash right after the commit (${steps.join(', ')}), the final round's in-place writes lost: reopening writes them again from the journal`, async (t) => {
    const dir = tempDir(t);
    const store = new ImageStore(path.join(dir, 'images'));
    const end = await runChild(store.dir, 'victim', steps, 'commit-done');
    t.is(end.signal, 'SIGKILL', end.stderr);
    const victim = path.join(store.dir, 'victim');
    const before = await stateFile(victim);
    t.is(before.state, 'committed');
    t.is(before.journal?.round, 1, 'the committed state names the final round journal');
    t.true((await loseInPlaceWrites(victim, 'r1')) > 20);

    const ro = await store.open('victim'); // no live writer: replays the journal first
    t.true((await ro.verify()).ok, 'the image verifies: every page of the final round was written again');
    await assertExportEquals(t, ro, simulate(['r0', 'r1']), path.join(dir, 'export'));
    await ro.close();
    t.is((await stateFile(victim)).journal, undefined, 'the state no longer names it');
    t.is((await fsp.stat(path.join(victim, 'journal.jnl'))).size, 0, 'the journal file is emptied');
  });
}

test('without a crash the journal is retired after the commit: the state names none, the file is empty', async (t) => {
  const dir = tempDir(t);
  const store = new ImageStore(path.join(dir, 'images'));
  const end = await runChild(store.dir, 'clean', ['r0', 'r1+commit', 'r2fix+commit']);
  t.is(end.code, 0, end.stderr);
  const sessionDir = path.join(store.dir, 'clean');
  t.is((await stateFile(sessionDir)).journal, undefined);
  t.is((await fsp.stat(path.join(sessionDir, 'journal.jnl'))).size, 0);
  const ro = await store.open('clean');
  t.true((await ro.verify()).ok);
  await assertExportEquals(t, ro, simulate(['r0', 'r1', 'r2fix']), path.join(dir, 'export'));
  await ro.close();
});

test('a journal the state names but that is damaged: opening says so, and which file', async (t) => {
  const dir = tempDir(t);
  const store = new ImageStore(path.join(dir, 'images'));
  const end = await runChild(store.dir, 'victim', ['r0', 'r1+commit'], 'commit-done');
  t.is(end.signal, 'SIGKILL', end.stderr);
  const journal = path.join(store.dir, 'victim', 'journal.jnl');
  await fsp.truncate(journal, 100);
  const err = await t.throwsAsync(store.open('victim'));
  t.regex(err!.message, /final-round journal .*journal\.jnl is damaged/);
});
