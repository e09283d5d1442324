// The copy-on-write snapshot of a frozen target (native/cow_snapshot.h): after the thaw, while the
// target's writers rewrite its memory, the snapshot still holds every private page exactly as the
// frozen target had it; it names what it does not hold (shared memory, MADV_WIPEONFORK and
// MADV_DONTFORK areas); the target gets no child, no SIGCHLD, no child accounting; dropping it (or
// losing its owner) leaves no process behind.

import test from 'ava';
import * as fs from 'node:fs';
import { freezeForRestore } from '../../native';
import { childPids, hasExited, readMem } from '../helpers/procmem';
import { withTarget } from '../helpers/target';
import { sleep, waitFor } from './native-helpers';

const PAGE = 4096;

const inside = (ranges: Float64Array, start: number, end: number): boolean => {
  for (let i = 0; i < ranges.length; i += 2) if (ranges[i] <= start && end <= ranges[i + 1]) return true;
  return false;
};
const overlaps = (ranges: Float64Array, start: number, end: number): boolean => {
  for (let i = 0; i < ranges.length; i += 2) if (ranges[i] < end && start < ranges[i + 1]) return true;
  return false;
};

test.serial('the snapshot holds the frozen memory while the target writes on, and names what it does not hold', (t) =>
  withTarget({ mib: 32, sharedMib: 1 }, async (tg) => {
    const wiped = await tg.mmap(4);
    await tg.madvise(wiped, 4, 'wipeonfork');
    const left = await tg.mmap(4);
    await tg.madvise(left, 4, 'dontfork');
    await tg.countSigchld();
    const before = await tg.childStats();
    await tg.writers(2, 0); // flat out
    const size = tg.pages * PAGE;

    const f = freezeForRestore(tg.pid);
    let snapPid = 0;
    try {
      const frozen = readMem(tg.pid, tg.base, size);
      f.requestSnapshot();
      const snap = f.awaitSnapshot();
      snapPid = snap.pid;
      t.true(snap.pid > 0);
      t.deepEqual(childPids(tg.pid), [], 'the target has no child');
      const status = fs.readFileSync(`/proc/${snap.pid}/status`, 'utf8');
      t.not(Number(/PPid:\s+(\d+)/.exec(status)![1]), tg.pid, "the snapshot is not the target's child");
      t.regex(status, /State:\s+t/, 'the snapshot is held in a tracing stop');

      t.false(overlaps(snap.notHeld, tg.base, tg.base + size), 'the main area is held');
      t.true(inside(snap.notHeld, tg.shared, tg.shared + PAGE), 'shared memory is not held');
      t.true(inside(snap.notHeld, wiped, wiped + 4 * PAGE), 'a MADV_WIPEONFORK area is not held');
      t.true(inside(snap.notHeld, left, left + 4 * PAGE), 'a MADV_DONTFORK area is not held');

      f.thaw();
      await waitFor('the writers rewrite memory', () => !readMem(tg.pid, tg.base, size).equals(frozen));
      await sleep(100);
      t.true(readMem(snap.pid, tg.base, size).equals(frozen), 'the snapshot holds the frozen memory, byte for byte');
    } finally {
      f.thaw();
      f.dropSnapshot();
    }
    await waitFor('the snapshot process exits', () => hasExited(snapPid));
    const after = await tg.childStats();
    t.deepEqual(after, before, 'no SIGCHLD, no child accounting');
    t.deepEqual(childPids(tg.pid), []);
    t.true((await tg.check()).bad === 0);
  }),
);

test.serial('a snapshot whose owner goes away is killed; it never runs', (t) =>
  withTarget({ mib: 8 }, async (tg) => {
    let snapPid = 0;
    {
      const f = freezeForRestore(tg.pid);
      f.requestSnapshot();
      snapPid = f.awaitSnapshot().pid;
      f.thaw();
      // No dropSnapshot(): the helper is killed outright (its tracer): the snapshot, let go,
      // runs its first instruction, which is exit_group.
      const tracer = Number(/TracerPid:\s+(\d+)/.exec(fs.readFileSync(`/proc/${snapPid}/status`, 'utf8'))![1]);
      t.true(tracer > 0);
      process.kill(tracer, 'SIGKILL');
    }
    await waitFor('the snapshot process exits', () => hasExited(snapPid));
    t.deepEqual(childPids(tg.pid), []);
    t.true((await tg.check()).bad === 0);
  }),
);
