// While the target is frozen, the receiver gets little patience: a call to the transfer that has
// not completed within FROZEN_PATIENCE_MS (10 s) cuts the link as if the connection were lost, so
// the migration thaws the target and resumes instead of keeping it frozen through a network cut
// (the link's own deadlines are minutes long, sized for a running target and a slow disk).
// A PageTransfer decorator; while the target runs, calls pass through untouched.

import { LinkError } from './migration-link';
import * as grpc from '@grpc/grpc-js';
import type { PageTransfer } from './page-transfer';

/** Default patience; PRECOPY_TEST_FROZEN_PATIENCE_MS overrides it (tests). */
export const FROZEN_PATIENCE_MS = 10_000;

export function frozenPatienceMs(env: NodeJS.ProcessEnv = process.env): number {
  const v = Number(env.PRECOPY_TEST_FROZEN_PATIENCE_MS);
  return Number.isFinite(v) && v > 0 ? v : FROZEN_PATIENCE_MS;
}

/** `inner`, with calls made while `frozen()` limited to `ms` each. */
export function patientWhileFrozen(inner: PageTransfer, frozen: () => boolean, ms = frozenPatienceMs()): PageTransfer {
  const limit = <T>(call: () => Promise<T>, what: string): Promise<T> => {
    if (!frozen()) return call();
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        const err = new LinkError(
          `${inner.description} did not answer within ${ms / 1000}s (${what}) while the target was frozen`,
          grpc.status.DEADLINE_EXCEEDED,
          true,
        );
        // Break the link: every other call waiting on it (batches in flight) fails at once too.
        inner.cut(err);
        reject(err);
      }, ms);
      call().then(
        (v) => (clearTimeout(timer), resolve(v)),
        (e) => (clearTimeout(timer), reject(e)),
      );
    });
  };
  return {
    description: inner.description,
    lanes: inner.lanes,
    open: (start) => inner.open(start),
    reopen: (start, ms) => inner.reopen(start, ms),
    cut: (err) => inner.cut(err),
    beginRound: (round, phase, layout) => limit(() => inner.beginRound(round, phase, layout), `start of round ${round}`),
    sendBatch: (b) => limit(() => inner.sendBatch(b), 'a page batch'),
    discard: (runs) => limit(() => inner.discard(runs), 'a discard'),
    endRound: (figures) => limit(() => inner.endRound(figures), `end of round ${figures.round}`),
    commit: (c) => limit(() => inner.commit(c), 'the commit'),
    report: (r) => inner.report(r),
    abort: (reason) => inner.abort(reason),
    close: () => inner.close(),
  };
}
