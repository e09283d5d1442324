// --metrics-listen: a PageTransfer decorator that feeds the sender's own MigrationMetrics
// (common/metrics) with what it tells the receiver (session start, round ends, the report), so
// the sender serves the same figures as the receiver while it runs. No other coupling.

import type { MigrationMetrics } from '../../common/metrics/migration-metrics';
import type { PageTransfer, Report, RoundEnd, SessionStart } from './page-transfer';

export function meteredTransfer(inner: PageTransfer, metrics: MigrationMetrics): PageTransfer {
  let sessionId = '';
  return {
    description: inner.description,
    async open(start: SessionStart) {
      const accepted = await inner.open(start);
      sessionId = start.sessionId;
      metrics.sessionStarted(start);
      return accepted;
    },
    // A resumed session is the same session: its figures go on.
    reopen: (start, ms) => inner.reopen(start, ms),
    cut: (err) => inner.cut(err),
    beginRound: (round, phase, layout) => inner.beginRound(round, phase, layout),
    sendBatch: (b) => inner.sendBatch(b),
    discard: (runs) => inner.discard(runs),
    async endRound(figures: RoundEnd) {
      const ack = await inner.endRound(figures);
      metrics.roundEnded(sessionId, figures);
      return ack;
    },
    commit: (c) => inner.commit(c),
    async report(r: Report) {
      metrics.sessionEnded(sessionId, r);
      await inner.report(r);
    },
    async abort(reason: string) {
      if (sessionId) metrics.sessionEnded(sessionId, { result: 'aborted' });
      await inner.abort(reason);
    },
    close: () => inner.close(),
  };
}
