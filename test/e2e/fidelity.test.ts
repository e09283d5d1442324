// Fidelity, end to end: real target processes, the real sender CLI, a real receiver process.
// After `--after stop`, every page of every private or shared-anonymous VMA of the stopped target
// must equal the raw export (`receiver export --format raw`), read through /proc/PID/mem —
// including the copied pages inside read-only private file mappings (RELRO). Each workload keeps
// changing memory while the migration runs; `--downtime-ms 1 --max-rounds N` forces several
// pre-copy rounds so the changes land between rounds, not only before round 0.

import test, { type ExecutionContext } from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Target, type TargetOptions } from '../helpers/target';
import { isAlive, tracerPid } from '../helpers/procmem';
import {
  assertImageEqualsMemory,
  describeRun,
  exportRaw,
  killStopped,
  privateFileCopies,
  runSender,
  startSender,
  tempDir,
  useReceiver,
  type SenderRun,
} from '../helpers/migration-cli';

const shared = useReceiver(test, 'precopy-e2e-fidelity-');

let sessions = 0;
const sessionId = (name: string) => `fid-${name}-${process.pid}-${sessions++}`;

/** Check the committed image of a stopped target against its memory, then clean up. */
async function checkFidelity(t: ExecutionContext, target: Target, session: string, run: SenderRun): Promise<void> {
  t.is(run.code, 0, describeRun(run));
  t.truthy(run.summary);
  t.is(run.summary!.result, 'committed');
  t.true(run.summary!.verify.mode === 'ok' || run.summary!.verify.mode === 'fixed');
  if (run.summary!.verify.mode === 'fixed') t.log(`verify re-sent ${run.summary!.verify.mismatches} pages (lost writes caught)`);
  t.log(`rounds: ${run.summary!.rounds.map((r) => `${r.phase}:${r.dirtyPages}`).join(' ')}; stop: ${run.summary!.stopReason}`);
  const out = await exportRaw(shared.images(), session);
  try {
    assertImageEqualsMemory(t, target.pid, out);
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
}

interface Migrating {
  running(): boolean;
  finished: Promise<unknown>;
}

/**
 * Run step(i) every delayMs while the migration runs (at most `times` steps). A command cannot be
 * answered once the migration froze and stopped the target: the step is raced with the end of the
 * migration, and its failure then is not an error.
 */
async function whileMigrating(m: Migrating, times: number, delayMs: number, step: (i: number) => Promise<void>): Promise<void> {
  for (let i = 0; m.running() && i < times; i++) {
    try {
      await Promise.race([step(i), m.finished]);
    } catch (err) {
      if (m.running()) throw err;
    }
    await new Promise((r) => setTimeout(r, delayMs));
  }
}

/** Start a target, apply `during` while a multi-round migration runs, check the image. */
async function migrateWhile(
  t: ExecutionContext,
  name: string,
  opts: TargetOptions,
  setup: (target: Target) => Promise<void>,
  during: (target: Target, m: Migrating) => Promise<void>,
  afterwards: (target: Target) => void = () => {},
  senderArgs: string[] = ['--downtime-ms', '1', '--max-rounds', '6'],
): Promise<void> {
  const target = await Target.start(opts);
  try {
    await setup(target);
    const session = sessionId(name);
    const sender = startSender(['--pid', String(target.pid), '--to', shared.receiver().address, '--session', session, '--after', 'stop', ...senderArgs]);
    let running = true;
    const finished = sender.done.finally(() => (running = false));
    await during(target, { running: () => running, finished });
    const run = await finished;
    await checkFidelity(t, target, session, run);
    afterwards(target);
  } finally {
    killStopped(target.pid);
  }
}

test('static 256 MiB target: image equals memory, RELRO copies included', async (t) => {
  const target = await Target.start({ mib: 256, seed: 11 });
  try {
    // The RELRO of libc and of the target itself: read-only private file mappings holding pages
    // the dynamic linker wrote (anonymous copies). They must be in the image, not the file's bytes.
    const relro = privateFileCopies(target.pid).filter((v) => v.perms === 'r--p');
    t.true(relro.length > 0, 'the target has RELRO pages (copies in r--p file mappings)');
    const session = sessionId('static');
    const run = await runSender(['--pid', String(target.pid), '--to', shared.receiver().address, '--session', session, '--after', 'stop']);
    await checkFidelity(t, target, session, run);
    t.is(run.summary!.stopReason, 'downtime');
    t.true(run.summary!.memoryBytes >= 256 * 1024 * 1024, `image holds ${run.summary!.memoryBytes} bytes`);
  } finally {
    killStopped(target.pid);
  }
});

// Writers alone: one thread flat out; many threads at a high total rate.
for (const w of [
  { name: 'hot writer at full speed', id: 'hot', seed: 12, threads: 1, rate: 0 },
  { name: 'many writer threads', id: 'threads', seed: 13, threads: 12, rate: 200_000_000 },
]) {
  test(w.name, async (t) => {
    await migrateWhile(
      t,
      w.id,
      { mib: 128, seed: w.seed },
      (tg) => tg.writers(w.threads, w.rate),
      async () => {},
    );
  });
}

test('mmap, munmap, mremap and mprotect churn during the migration', async (t) => {
  await migrateWhile(
    t,
    'churn',
    { mib: 64, seed: 14 },
    (tg) => tg.writers(2, 50_000_000),
    async (tg, m) => {
      // split: mprotect()ed in part, so possibly several VMAs now (tracked and untracked parts
      // do not merge back), which mremap refuses (EFAULT): those are unmapped instead.
      const areas: { addr: number; pages: number; split?: boolean }[] = [];
      await whileMigrating(m, 400, 5, async (i) => {
        const pages = 16 + (i % 7) * 8;
        const addr = await tg.mmap(pages);
        areas.push({ addr, pages });
        if (areas.length > 4) {
          const victim = areas.splice(i % areas.length, 1)[0];
          switch (victim.split && i % 4 === 1 ? 0 : i % 4) {
            case 0:
              await tg.munmap(victim.addr, victim.pages);
              break;
            case 1: {
              const moved = await tg.mremap(victim.addr, victim.pages, victim.pages * 2);
              await tg.writep(moved + victim.pages * 4096, victim.pages);
              areas.push({ addr: moved, pages: victim.pages * 2 });
              break;
            }
            case 2:
              // split the VMA in three, data kept; written again after going back to rw
              await tg.mprotect(victim.addr + 4096, 2, 'r');
              await tg.mprotect(victim.addr + 4096, 2, 'rw');
              await tg.writep(victim.addr, 4);
              areas.push({ ...victim, split: true });
              break;
            default:
              await tg.mprotect(victim.addr, victim.pages, 'none');
              await tg.mprotect(victim.addr, victim.pages, 'rw');
              await tg.writep(victim.addr + 4096, 1);
              areas.push({ ...victim, split: true });
          }
        }
      });
    },
  );
});

test('brk and stack growth during the migration', async (t) => {
  await migrateWhile(
    t,
    'brk-stack',
    { mib: 64, seed: 15 },
    (tg) => tg.writers(1, 20_000_000),
    (tg, m) =>
      whileMigrating(m, 40, 20, async (i) => {
        await tg.brk(64);
        await tg.stack(64 + 64 * (i % 16));
      }),
  );
});

test('THP with MADV_DONTNEED cycles', async (t) => {
  await migrateWhile(
    t,
    'thp',
    { mib: 128, seed: 16, thp: true },
    (tg) => tg.writers(2, 50_000_000),
    (tg, m) =>
      // whole 2 MiB huge pages and 4K pieces of them, dropped and rewritten
      whileMigrating(m, 200, 10, async (i) => {
        const first = ((i * 37) % 60) * 512;
        await tg.dontneed(first, i % 2 === 0 ? 512 : 3);
        if (i % 3 === 0) await tg.write(first, 2);
      }),
  );
});

test('writes to a private file mapping (over the local-file transfer too)', async (t) => {
  const dir = tempDir('precopy-e2e-file-');
  const file = path.join(dir, 'data.bin');
  const pages = 256;
  const content = Buffer.alloc(pages * 4096);
  for (let i = 0; i < content.length; i += 4) content.writeUInt32LE((i * 2654435761) >>> 0, i);
  fs.writeFileSync(file, content);
  try {
    await migrateWhile(
      t,
      'file',
      { mib: 32, seed: 17, file, filePages: pages },
      async (tg) => {
        for (let p = 0; p < pages; p += 5) await tg.filewrite(p);
      },
      (tg, m) => whileMigrating(m, pages, 5, (i) => tg.filewrite((i * 7) % pages)),
    );
    // The same workload into an images directory with no network (--to dir:).
    const target = await Target.start({ mib: 32, seed: 18, file, filePages: pages });
    try {
      for (let p = 0; p < pages; p += 3) await target.filewrite(p);
      const session = sessionId('file-local');
      const run = await runSender(['--pid', String(target.pid), '--to', `dir:${shared.images()}`, '--session', session, '--after', 'stop']);
      await checkFidelity(t, target, session, run);
    } finally {
      killStopped(target.pid);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a child forked during the migration is left alone', async (t) => {
  let child = 0;
  await migrateWhile(
    t,
    'fork',
    { mib: 64, seed: 19 },
    (tg) => tg.writers(1, 20_000_000),
    async (tg, m) => {
      // after round 0 has started: the child appears while the parent is tracked
      await new Promise((r) => setTimeout(r, 300));
      if (m.running()) child = (await Promise.race([tg.fork(), m.finished.then(() => 0)])) as number;
    },
    () => {
      t.true(child > 0, 'the child was forked during the migration');
      t.true(isAlive(child), 'the child runs on');
      t.is(tracerPid(child), 0, 'the child was never traced');
    },
  );
});

test('a lost write is found by the verify pass, re-sent, and the image is right', async (t) => {
  // PRECOPY_FAULT_LOSE_WRITES makes the sender drop dirty pages in the stop-and-copy round, as a
  // kernel that lost those writes would: the commit digest matches what was sent, so only the
  // verify pass over the frozen target can catch it.
  const target = await Target.start({ mib: 32, seed: 21 });
  try {
    await target.writers(1, 50_000_000);
    const session = sessionId('lost');
    const run = await runSender(['--pid', String(target.pid), '--to', shared.receiver().address, '--session', session, '--after', 'stop'], {
      env: { PRECOPY_FAULT_LOSE_WRITES: '5' },
    });
    await checkFidelity(t, target, session, run);
    const s = run.summary!;
    // Dropped pages whose content the receiver already held (rewritten with the same bytes) are no
    // loss: between 1 and 5 mismatches.
    t.is(s.verify.mode, 'fixed');
    t.true(s.verify.mismatches >= 1 && s.verify.mismatches <= 5, `${s.verify.mismatches} pages re-sent`);
    t.is(s.rounds[s.rounds.length - 1].phase, 'VERIFY_FIX');
  } finally {
    killStopped(target.pid);
  }
});

test('--streams 3: pages spread over three streams of one session, writers and churn meanwhile; image equals memory', async (t) => {
  await migrateWhile(
    t,
    'lanes',
    { mib: 96, seed: 17 },
    (tg) => tg.writers(4, 100_000_000),
    async (tg, m) => {
      await whileMigrating(m, 100, 10, async (i) => {
        const addr = await tg.mmap(64 + i);
        await tg.write(i % 32, 2);
        if (i % 3 === 0) await tg.munmap(addr, 64 + i);
      });
    },
    () => {},
    ['--downtime-ms', '1', '--max-rounds', '6', '--streams', '3'],
  );
});
