// The receiver's metrics (the stable scrape target): the shared migration set
// (common/metrics/migration-metrics.ts) plus what only the receiver sees: streams refused for its
// token or limits, session takeovers, handovers (receiver/handover/handover-events.ts), and the
// image store's own counters.

import { Counter, Gauge, Histogram } from 'prom-client';
import { METRICS_PREFIX, MigrationMetrics, type MigrationMetricsOptions } from '../common/metrics/migration-metrics';
import { storeCounters } from '../image/store-counters';
import { ROLLBACK_REASONS, type HandoverEvents, type RollbackReason } from './handover/handover-events';

/** Why the receiver refused or ended a stream (its token and limits): a closed set, so the reason
 *  label stays bounded whatever a client sends. */
export const REFUSAL_REASONS = ['unauthenticated', 'too_many_sessions', 'image_too_big'] as const;
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

/** The image store's process-wide counters (image/store-counters.ts), each as a precopy_store_* counter. */
const STORE_COUNTERS: ReadonlyArray<[keyof typeof storeCounters, string, string]> = [
  ['bytesWritten', 'store_written_bytes_total', 'Page bytes the image store wrote into chunk files (zero pages excluded).'],
  ['bytesWrittenDirect', 'store_direct_written_bytes_total', 'Of the page bytes written, those written with O_DIRECT.'],
  ['journalBytes', 'store_journal_written_bytes_total', "Bytes appended to final-round journals (the last round's pages, synced at its commit)."],
  ['journalReplayedPages', 'store_journal_replayed_pages_total', 'Pages written back from a final-round journal when a session was opened after a crash.'],
  ['bytesRead', 'store_read_bytes_total', 'Page bytes the image store read back (digest, export, restore).'],
  ['dataPages', 'store_data_pages_total', 'Pages stored with data.'],
  ['zeroPages', 'store_zero_pages_total', 'Pages stored as zero bits.'],
  ['discardedPages', 'store_discarded_pages_total', 'Pages dropped by Discard messages or layout changes.'],
  ['fsyncs', 'store_fsyncs_total', 'fsync and fdatasync calls the image store issued (files and directories).'],
  ['roundsDurable', 'store_rounds_durable_total', 'Rounds the image store made durable.'],
  ['commits', 'store_commits_total', 'Images committed.'],
  ['digestMismatches', 'store_digest_mismatches_total', "Commits refused because the image's digest differed from the sender's."],
  ['noSpace', 'store_no_space_total', 'Sessions failed because the disk was full.'],
];

/** A restore copies the whole image into the new process: tens of ms for a small one, seconds for GiBs. */
const RESTORE_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export class ReceiverMetrics extends MigrationMetrics implements HandoverEvents {
  private readonly refusedStreams: Counter<'reason'>;
  private readonly takeovers: Counter;
  private readonly handoversStarted: Counter;
  private readonly handoversSucceeded: Counter;
  private readonly handoversRolledBack: Counter<'reason'>;
  private readonly restoreSeconds: Histogram;
  private readonly handedOverProcesses: Gauge;

  constructor(opts: MigrationMetricsOptions = {}) {
    super('receiver', opts);
    const refusedHelp =
      'Migration streams the receiver refused or ended for its token or limits, by reason (unauthenticated, too_many_sessions, image_too_big).';
    this.refusedStreams = this.closedCounter('refused_streams_total', refusedHelp, 'reason', REFUSAL_REASONS);
    this.takeovers = this.counter('session_takeovers_total', 'Resumes that took a session over from a stale stream of this receiver still holding it.');
    this.handoversStarted = this.counter(
      'handovers_started_total',
      'Handover starts the receiver was asked for (HandoverStart); each ends succeeded or rolled back.',
    );
    this.handoversSucceeded = this.counter('handovers_succeeded_total', 'Handovers whose process the receiver started and recorded running.');
    const rolledBackHelp =
      'Handovers decided rolled back (the source runs on), by reason (refused, restore_failed; never_asked: by a Resolve; receiver_restart: at start-up).';
    this.handoversRolledBack = this.closedCounter('handovers_rolled_back_total', rolledBackHelp, 'reason', ROLLBACK_REASONS);
    this.restoreSeconds = new Histogram({
      name: `${METRICS_PREFIX}handover_restore_seconds`,
      help: 'Time to restore a handed-over process here (the image into a new process, up to its start), per successful handover.',
      buckets: RESTORE_BUCKETS,
      registers: [this.registry],
    });
    this.handedOverProcesses = new Gauge({
      name: `${METRICS_PREFIX}handed_over_processes`,
      help: 'Handed-over processes this receiver run started that have not ended (its children; those an earlier run started are not counted).',
      registers: [this.registry],
    });
    for (const [field, name, help] of STORE_COUNTERS) {
      // The store keeps plain numbers (it has no metrics dependency); read them at scrape time.
      new Counter({
        name: `precopy_${name}`,
        help,
        registers: [this.registry],
        collect() {
          this.reset();
          this.inc(storeCounters[field]);
        },
      });
    }
  }

  /** A stream was refused (or ended) for the token or a limit. */
  streamRefused(reason: RefusalReason): void {
    this.refusedStreams.inc({ reason });
  }

  /** A resume took a session over from a stale stream. */
  sessionTakenOver(): void {
    this.takeovers.inc();
  }

  handoverStarted(): void {
    this.handoversStarted.inc();
  }

  handoverSucceeded(restoreSeconds: number): void {
    this.handoversSucceeded.inc();
    this.restoreSeconds.observe(Math.max(0, restoreSeconds));
    this.handedOverProcesses.inc();
  }

  handoverRolledBack(reason: RollbackReason): void {
    this.handoversRolledBack.inc({ reason });
  }

  handedOverProcessEnded(): void {
    this.handedOverProcesses.dec();
  }
}
