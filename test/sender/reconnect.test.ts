// Unit tests of the reconnect loop (sender/reconnect.ts): backoff, which failures are retried, and
// the plain words of a refused resume. The transfer is a scripted PageTransfer (only reopen is
// called); the real link is exercised by test/e2e/resume-*.test.ts.

import test from 'ava';
import * as grpc from '@grpc/grpc-js';
import { UserError } from '../../common/errors';
import { LinkError } from '../../sender/transfer/migration-link';
import { backoffMs, FIRST_DELAY_MS, MAX_DELAY_MS, reconnect } from '../../sender/reconnect';
import type { PageTransfer, SessionAccepted, SessionStart } from '../../sender/transfer/page-transfer';

const START: SessionStart = {
  sessionId: 's1',
  sourceHost: 'h',
  pid: 1,
  pageSize: 4096,
  kernel: 'k',
  command: 'c',
  resume: true,
  memoryBytes: 0,
  downtimeTargetSeconds: 0.3,
};

/** A transfer whose reopen() answers from a script, one entry per call (the last repeats). */
function scripted(answers: (SessionAccepted | Error)[]): PageTransfer & { calls: number } {
  const fail = () => Promise.reject(new Error('not used'));
  const t = {
    calls: 0,
    description: 'receiver at test:1',
    lanes: 1,
    reopen(start: SessionStart): Promise<SessionAccepted> {
      const a = answers[Math.min(t.calls++, answers.length - 1)];
      if (a instanceof Error) return Promise.reject(a);
      return Promise.resolve({ ...a, sessionId: start.sessionId });
    },
    cut() {},
    open: fail,
    beginRound: fail,
    sendBatch: fail,
    discard: fail,
    endRound: fail,
    commit: fail,
    report: fail,
    abort: () => Promise.resolve(),
    close: () => Promise.resolve(),
  };
  return t;
}

const lost = () => new LinkError('connection to receiver at test:1 lost (Connection dropped)', grpc.status.UNAVAILABLE, true);
const refused = (details: string) => new LinkError(`receiver at test:1: ${details} (FAILED_PRECONDITION)`, grpc.status.FAILED_PRECONDITION, false);
const accepted = (round: number): SessionAccepted => ({ sessionId: 's1', resumed: true, lastDurableRound: round });

test('backoff: 0.25 s doubling to 5 s, jittered ±20%', (t) => {
  const mid = () => 0.5;
  t.is(backoffMs(1, mid), FIRST_DELAY_MS);
  t.is(backoffMs(2, mid), 2 * FIRST_DELAY_MS);
  t.is(backoffMs(5, mid), 16 * FIRST_DELAY_MS);
  t.is(backoffMs(6, mid), MAX_DELAY_MS);
  t.is(backoffMs(50, mid), MAX_DELAY_MS);
  t.is(
    backoffMs(1, () => 0),
    0.8 * FIRST_DELAY_MS,
  );
  t.is(
    backoffMs(50, () => 1),
    1.2 * MAX_DELAY_MS,
  );
});

test('a broken link is retried until the receiver takes the session back', async (t) => {
  // The store's "in use" (a stream not yet seen dead) is worth waiting for too.
  const tr = scripted([lost(), refused('session s1 is in use by another stream of this process'), accepted(4)]);
  const back = await reconnect(tr, START, 30, new AbortController().signal);
  t.is(back.accepted.lastDurableRound, 4);
  t.is(back.attempts, 3);
  t.is(tr.calls, 3);
});

test('gives up after the timeout, naming the receiver and the last error', async (t) => {
  const tr = scripted([lost()]);
  const err = await t.throwsAsync(reconnect(tr, START, 0.5, new AbortController().signal), { instanceOf: UserError });
  t.regex(
    err!.message,
    /^could not resume session s1: receiver at test:1 unreachable for [\d.]+s \(--reconnect-timeout 0.5s; last: connection to receiver at test:1 lost/,
  );
  t.true(tr.calls >= 2);
});

test('a session committed already (the commit answer was lost) is said plainly, not retried', async (t) => {
  const tr = scripted([refused('session s1 is committed; only a receiving session can be resumed')]);
  const err = await t.throwsAsync(reconnect(tr, START, 30, new AbortController().signal), { instanceOf: UserError });
  t.regex(err!.message, /^session s1 was committed by the receiver before the connection broke/);
  t.regex(err!.message, /migrate again with a new --session/);
  t.is(tr.calls, 1);
});

test('a failed, aborted or unknown session is refused at once', async (t) => {
  for (const details of ['session s1 is aborted; only a receiving session can be resumed', 'no session s1 in /images']) {
    const tr = scripted([refused(details)]);
    const err = await t.throwsAsync(reconnect(tr, START, 30, new AbortController().signal), { instanceOf: UserError });
    t.is(err!.message, `the receiver refused to resume session s1: receiver at test:1: ${details} (FAILED_PRECONDITION)`);
    t.is(tr.calls, 1);
  }
});

test('an abort (SIGINT) ends the wait between attempts', async (t) => {
  const ctl = new AbortController();
  const tr = scripted([lost()]);
  setTimeout(() => ctl.abort(new UserError('interrupted')), 50);
  await t.throwsAsync(reconnect(tr, START, 30, ctl.signal), { message: 'interrupted' });
});
