// --metrics-listen: a PageTransfer decorator that feeds the sender's own SenderMetrics
// (common/metrics) with what it tells the receiver (session start, round ends, the report), so
// the sender serves the same figures as the receiver while it runs. No other coupling.
// It also counts the link's breaks and resumes: migrate.ts's resume step (8.) reopens the session
// through this transfer, once per attempt, and a round's phase says whether the target was frozen.

import type { SenderMetrics } from '../sender-metrics';
import type { PageTransfer, Report, RoundEnd, SessionStart } from './page-transfer';

export function meteredTransfer(inner: PageTransfer, metrics: SenderMetrics): PageTransfer {
  let sessionId = '';
  let frozen = false; // the last round started was a frozen one (stop-and-copy, verify fix-up)
  let broken = false; // reopen attempts under way for a break already counted
  return {
    description: inner.description,
    lanes: inner.lanes,
    async open(start: SessionStart) {
      const accepted = await inner.open(start);
      sessionId = start.sessionId;
      metrics.sessionStarted(start);
      return accepted;
    },
    // A resumed session is the same session: its figures go on.
    async reopen(start: SessionStart, ms?: number) {
      if (!broken) metrics.linkBroken(frozen ? 'frozen' : 'precopy');
      broken = true;
      const accepted = await inner.reopen(start, ms);
      if (accepted.resumed) {
        broken = false;
        metrics.reconnected();
      }
      return accepted;
    },
    cut: (err) => inner.cut(err),
    beginRound(round, phase, layout) {
      frozen = phase !== 'PRECOPY';
      return inner.beginRound(round, phase, layout);
    },
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
