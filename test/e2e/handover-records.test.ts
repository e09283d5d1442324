// The receiver's handover bookkeeping without a migration: the policy, the Resolve fencing (a
// session with no record is closed to a late start), and a restart deciding `starting` records
// from facts (receiver/handover/).

import test from 'ava';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Handovers } from '../../receiver/handover/handovers';
import { handoverRefusal, parseHandoverUsers, type HandoverPolicy } from '../../receiver/handover/handover-policy';
import { readRecord, writeRecord } from '../../receiver/handover/handover-record';
import type { SessionReader } from '../../image/session-reader';
import type { HandoverEvents } from '../../receiver/handover/handover-events';
import type { HandoverResult } from '../../proto/messages';

const POLICY: HandoverPolicy = { accept: true, uids: null, authenticated: true, stdio: '/dev/null' };

/** HandoverEvents that note each call as one word (`rolledBack:never_asked`). */
function recorder(): HandoverEvents & { seen: string[] } {
  const seen: string[] = [];
  return {
    seen,
    handoverStarted: () => seen.push('started'),
    handoverSucceeded: () => seen.push('succeeded'),
    handoverRolledBack: (reason) => seen.push(`rolledBack:${reason}`),
    handedOverProcessEnded: () => seen.push('ended'),
  };
}

function imagesDir(t: { teardown(f: () => void): void }, sessions: string[]): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'precopy-hv-records-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  for (const s of sessions) fs.mkdirSync(path.join(dir, s));
  return dir;
}

test('the policy: off, unauthenticated, a user not listed', (t) => {
  t.regex(handoverRefusal({ ...POLICY, accept: false }, 0)!, /does not accept handovers/);
  t.regex(handoverRefusal({ ...POLICY, authenticated: false }, 0)!, /not authenticated/);
  t.regex(handoverRefusal({ ...POLICY, uids: new Set([1000]) }, 0)!, /uid 0 is not in/);
  t.is(handoverRefusal({ ...POLICY, uids: new Set([0]) }, 0), null);
});

test('--handover-users takes names from the passwd file and numbers', (t) => {
  const dir = imagesDir(t, []);
  const passwd = path.join(dir, 'passwd');
  fs.writeFileSync(passwd, 'root:x:0:0::/root:/bin/sh\nalice:x:1001:1001::/home/alice:/bin/sh\n');
  t.deepEqual([...parseHandoverUsers('alice,42', passwd)], [1001, 42]);
  t.throws(() => parseHandoverUsers('bob', passwd), { message: /no user 'bob'/ });
});

test('Resolve of a session with no record fences it: rolled back, and a late start is refused', async (t) => {
  const dir = imagesDir(t, ['s1']);
  const events = recorder();
  const h = new Handovers(POLICY, dir, events);
  const r = await h.resolve('s1');
  t.is(r.state, 'rolled-back');
  t.is((await readRecord(dir, 's1'))?.state, 'rolled-back');
  let late: HandoverResult | undefined;
  await h.start({ id: 's1' } as SessionReader, async (r) => {
    t.is(late, undefined, 'answered once');
    late = r;
  });
  if (!late) return t.fail('no answer');
  t.false(late.ok);
  t.regex(late.message, /already handed over \(rolled-back/);
  t.is((await h.resolve('nope')).state, 'rolled-back', 'an unknown session: nothing can run');
  t.deepEqual(events.seen, ['rolledBack:never_asked', 'started', 'rolledBack:refused'], 'the metrics are told');
});

test('a restart decides `starting` records from facts: the live image process -> running, none -> rolled back', async (t) => {
  const dir = imagesDir(t, ['alive', 'gone', 'other']);
  // This test process stands in for a restored one: its pid, running its program.
  await writeRecord(dir, 'alive', { state: 'starting', pid: 0, reason: '', expectedPid: process.pid, exePath: fs.readlinkSync('/proc/self/exe') });
  await writeRecord(dir, 'gone', { state: 'starting', pid: 0, reason: '', expectedPid: 2 ** 22 - 3, exePath: '/bin/true' });
  // The pid exists but runs another program (pid reuse): not it.
  await writeRecord(dir, 'other', { state: 'starting', pid: 0, reason: '', expectedPid: process.pid, exePath: '/bin/true' });
  const events = recorder();
  await new Handovers(POLICY, dir, events).recover(['alive', 'gone', 'other']);
  const alive = await readRecord(dir, 'alive');
  t.is(alive?.state, 'running');
  t.is(alive?.pid, process.pid);
  t.is((await readRecord(dir, 'gone'))?.state, 'rolled-back');
  t.is((await readRecord(dir, 'other'))?.state, 'rolled-back');
  t.deepEqual(events.seen, ['rolledBack:receiver_restart', 'rolledBack:receiver_restart'], 'a running decision is not counted (not our child)');
});
