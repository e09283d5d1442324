// The sender's metrics (served on --metrics-listen while it runs): the shared migration set
// (common/metrics/migration-metrics.ts) plus what only the sender sees, its link's breaks and
// reconnects.

import type { Counter } from 'prom-client';
import { MigrationMetrics, type MigrationMetricsOptions } from '../common/metrics/migration-metrics';

/** Where a sender's link broke: while the target ran, or while it was frozen (then thawed first). */
export const BREAK_PHASES = ['precopy', 'frozen'] as const;
export type BreakPhase = (typeof BREAK_PHASES)[number];

export class SenderMetrics extends MigrationMetrics {
  private readonly linkBreaks: Counter<'phase'>;
  private readonly reconnects: Counter;

  constructor(opts: MigrationMetricsOptions = {}) {
    super('sender', opts);
    const breaksHelp = 'Breaks of the link to the receiver the sender tried to resume from, by phase (precopy: target running; frozen: thawed first).';
    this.linkBreaks = this.closedCounter('link_breaks_total', breaksHelp, 'phase', BREAK_PHASES);
    this.reconnects = this.counter('reconnects_total', 'Link breaks after which the sender reconnected and the receiver resumed the session.');
  }

  /** The link broke and a resume is being tried (once per break, not per attempt). */
  linkBroken(phase: BreakPhase): void {
    this.linkBreaks.inc({ phase });
  }

  /** The receiver resumed the session after a break. */
  reconnected(): void {
    this.reconnects.inc();
  }
}
