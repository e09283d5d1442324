// SIGKILL of the tracking process, at several points (armed, frozen, mid-freeze, mid-arm), must
// leave the target running and writing, its uffd registration gone, no thread stopped or traced,
// and its fd table as before. The tracker is a child Node process (fixtures/tracker-child.js);
// the target is our own child, so it outlives the tracker.

import test, { type ExecutionContext } from 'ava';
import * as fs from 'node:fs';
import { readMem, threadStates, vmFlags } from '../helpers/procmem';
import { type Target, withTarget } from '../helpers/target';
import { type ChildLines, childNode, prng, sleep, threadTracers, waitFor } from './native-helpers';

const PAGE = 4096;

async function startTracker(mode: string, tg: Target): Promise<ChildLines> {
  const child = childNode('tracker-child.js', [mode, String(tg.pid), String(tg.base), String(tg.base + tg.pages * PAGE)]);
  const line = await child.line();
  if (line !== 'ready') throw new Error(`tracker said ${line}: ${child.stderr}`);
  return child;
}

/** Arming helpers (build/Release/precopy-arm-helper PID) still running for pid. */
function armHelpers(pid: number): number[] {
  const out: number[] = [];
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const argv = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
      if (argv[0].endsWith('/precopy-arm-helper') && argv[1] === String(pid)) out.push(Number(p));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/** The target after its tracker died: untraced, running, writing, unregistered, same fds. */
async function assertRecovered(t: ExecutionContext, tg: Target, fdsBefore: Map<number, string>, label: string) {
  // The kernel detaches on tracer exit; an arming helper that outlives its parent finishes its
  // injection (it cannot be stopped half-way) and exits.
  await waitFor(`${label}: orphaned arming helpers done`, () => armHelpers(tg.pid).length === 0);
  await waitFor(`${label}: every thread untraced`, () => threadTracers(tg.pid).every((x) => x === 0));
  t.deepEqual(
    threadStates(tg.pid).filter((s) => s.state === 't' || s.state === 'T'),
    [],
    `${label}: no thread left stopped`,
  );
  t.false(vmFlags(tg.pid, tg.base)?.includes('uw'), `${label}: uffd-wp registration dropped`);
  t.deepEqual(await tg.fds(), fdsBefore, `${label}: fd table as before`);
  const mem0 = readMem(tg.pid, tg.base, tg.pages * PAGE);
  await waitFor(`${label}: writers keep writing`, () => !readMem(tg.pid, tg.base, tg.pages * PAGE).equals(mem0));
  await tg.write(0, 4);
  t.deepEqual(await tg.check(), { bad: 0 }, `${label}: no torn or lost write`);
}

test.serial('SIGKILL of an armed tracker: registration dropped, target writes on', (t) =>
  withTarget({ mib: 16 }, async (tg) => {
    await tg.blockers();
    await tg.writers(2, 16 << 20);
    const fdsBefore = await tg.fds();
    const child = await startTracker('arm', tg);
    t.true(vmFlags(tg.pid, tg.base)?.includes('uw'), 'armed: main is registered (uw)');
    await child.kill();
    await assertRecovered(t, tg, fdsBefore, 'armed');
    await tg.ping();
    t.is((await tg.sleepStats()).errors, 0);
  }),
);

test.serial('SIGKILL of a tracker holding the target frozen: the kernel detaches, target runs on', (t) =>
  withTarget({ mib: 16 }, async (tg) => {
    await tg.writers(2, 16 << 20);
    const fdsBefore = await tg.fds();
    const child = await startTracker('freeze', tg);
    t.true(
      threadStates(tg.pid).every((s) => s.state === 't'),
      'frozen: every thread in a tracing stop',
    );
    await child.kill();
    await assertRecovered(t, tg, fdsBefore, 'frozen');
  }),
);

for (const mode of ['freeze-loop', 'arm-loop']) {
  test.serial(`SIGKILL of a tracker at random points of a ${mode}`, (t) =>
    withTarget({ mib: 16 }, async (tg) => {
      await tg.blockers();
      await tg.writers(2, 16 << 20);
      const fdsBefore = await tg.fds();
      const rnd = prng(mode.length);
      for (let i = 0; i < 10; i++) {
        const child = await startTracker(mode, tg);
        await sleep(5 + Math.floor(rnd() * 60));
        await child.kill();
        await assertRecovered(t, tg, fdsBefore, `${mode} kill ${i}`);
      }
      await tg.ping();
      t.is((await tg.sleepStats()).errors, 0);
    }),
  );
}
