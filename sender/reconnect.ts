// Reconnecting after a broken link (docs/design.md, Resume): which failures are worth
// a reconnect, and the retry loop that opens the session again with SessionStart.resume. Backoff
// 0.25 s doubling to 5 s, with ±20% jitter (many senders cut off by one receiver restart do not
// all come back in the same instant), until --reconnect-timeout runs out.
// A refusal to resume is final and said plainly: the session is gone, failed, aborted, or it
// was committed already (the commit's answer was lost with the connection).

import * as grpc from '@grpc/grpc-js';
import { logger } from '../common/log';
import { UserError } from '../common/errors';
import { LinkError } from './transfer/migration-link';
import type { PageTransfer, SessionAccepted, SessionStart } from './transfer/page-transfer';

const log = logger('reconnect');

export const FIRST_DELAY_MS = 250;
export const MAX_DELAY_MS = 5000;
const JITTER = 0.2;
const MAX_CONNECT_WAIT_MS = 10_000;
const MIN_CONNECT_WAIT_MS = 1000;

/** A failure a reconnect and resume may cure: the link broke (connection lost, receiver gone or
 *  restarting, a deadline), as opposed to a refusal or a bug. */
export function isLinkBreak(err: unknown): err is LinkError {
  return err instanceof LinkError && err.retryable;
}

/** Delay before attempt `attempt` (1: the second try), jittered. */
export function backoffMs(attempt: number, random = Math.random): number {
  const base = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** Math.max(0, attempt - 1));
  return Math.round(base * (1 - JITTER + 2 * JITTER * random()));
}

export interface Reconnected {
  accepted: SessionAccepted;
  attempts: number;
  seconds: number;
}

/**
 * Open the session again (resume) until the receiver accepts it or `timeoutSeconds` pass. Rejects
 * with a UserError saying why when the receiver refuses the resume or stays unreachable.
 * `beforeAttempt` may throw to stop trying (the target exited meanwhile).
 */
export async function reconnect(
  transfer: PageTransfer,
  start: SessionStart,
  timeoutSeconds: number,
  signal: AbortSignal,
  beforeAttempt: () => void = () => {},
): Promise<Reconnected> {
  const t0 = performance.now();
  const elapsed = () => (performance.now() - t0) / 1000;
  for (let attempt = 1; ; attempt++) {
    signal.throwIfAborted();
    beforeAttempt();
    try {
      // Each attempt waits for the receiver no longer than the time left (and 10 s at most).
      const left = timeoutSeconds * 1000 - elapsed() * 1000;
      const accepted = await transfer.reopen(start, Math.min(MAX_CONNECT_WAIT_MS, Math.max(MIN_CONNECT_WAIT_MS, left)));
      if (!accepted.resumed) throw new UserError(`the receiver did not resume session ${start.sessionId}`, 1);
      return { accepted, attempts: attempt, seconds: elapsed() };
    } catch (err) {
      signal.throwIfAborted();
      if (!worthRetrying(err)) throw refusal(err, start.sessionId);
      const wait = backoffMs(attempt);
      if (elapsed() + wait / 1000 > timeoutSeconds) {
        throw new UserError(
          `could not resume session ${start.sessionId}: ${transfer.description} unreachable for ${elapsed().toFixed(1)}s ` +
            `(--reconnect-timeout ${timeoutSeconds}s; last: ${(err as Error).message})`,
          1,
        );
      }
      log.debug(`resume attempt ${attempt}: ${(err as Error).message}; next in ${(wait / 1000).toFixed(2)}s`);
      await sleep(wait, signal);
    }
  }
}

/** Retry: the link broke again, or the receiver still holds the session for a stream it has not
 *  yet seen die (a takeover normally settles that at once). */
function worthRetrying(err: unknown): boolean {
  if (isLinkBreak(err)) return true;
  return err instanceof LinkError && err.code === grpc.status.FAILED_PRECONDITION && /\bin use\b/.test(err.message);
}

function refusal(err: unknown, id: string): unknown {
  if (!(err instanceof LinkError)) return err;
  if (/\bis committed\b/.test(err.message)) {
    // Only when it may not be reopened: a handover of it was asked for, or an older receiver.
    return new UserError(
      `session ${id} was committed by the receiver before the connection broke (the commit's answer was lost) and cannot be reopened: ` +
        `the image holds the memory as frozen at the stop-and-copy and its digest was checked, but the verify pass did not run ` +
        `and the target was thawed and has run on since. Nothing to fix; migrate again with a new --session for a newer image.`,
      1,
    );
  }
  return new UserError(`the receiver refused to resume session ${id}: ${err.message}`, 1);
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
