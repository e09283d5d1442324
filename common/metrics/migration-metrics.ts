// The Prometheus metrics of a migration that both ends export: the receiver (the stable scrape
// target, fed by the RoundEnd and Report messages of every session; receiver/receiver-metrics.ts)
// and the sender (which serves the same set on --metrics-listen while it runs;
// sender/sender-metrics.ts). Each side's class adds the metrics only it can see. Each instance
// owns its own Registry, so two services in one process (tests) never collide in prom-client's
// global registry.
//
// Cardinality is bounded twice: per-session series are removed `retentionMs` after the session
// ends (long enough for a few scrapes and a look at the dashboard), and at most `maxSessions`
// session label values exist at once; a session beyond the cap still counts in the global
// figures but gets no series of its own (precopy_untracked_sessions_total says so). Session ids
// come from the network: the cap is what keeps a hostile client from growing the registry.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { logger } from '../log';
import type { KernelFeatures } from '../../native';

const log = logger('metrics');

export const METRICS_PREFIX = 'precopy_';
export const DEFAULT_RETENTION_MS = 5 * 60 * 1000;
export const DEFAULT_MAX_SESSIONS = 100;
/** Session ids are [A-Za-z0-9._-]{1,64} on the wire; anything longer never becomes a label. */
const MAX_SESSION_ID_LENGTH = 64;

export const RESULTS = ['committed', 'failed', 'aborted'] as const;
export type MigrationResult = (typeof RESULTS)[number];

export interface MigrationMetricsOptions {
  /** How long a finished session's series stay (default 5 minutes). */
  retentionMs?: number;
  /** Most session label values alive at once (default 100). */
  maxSessions?: number;
  /** build_info's version label (default: package.json's version). */
  version?: string;
  /** Also export Node's process metrics (CPU, memory, event loop), prefixed precopy_. */
  processMetrics?: boolean;
}

/** What sessionStarted needs: a SessionStart message satisfies it. */
export interface SessionMeta {
  sessionId: string;
  pageSize: number;
  downtimeTargetSeconds?: number;
  memoryBytes?: number;
}

/** What roundEnded needs: a RoundEnd message (or a stored round record) satisfies it. */
export interface RoundFiguresIn {
  dirtyPages: number;
  zeroPages: number;
  rawBytes: number;
  wireBytes: number;
  durationSeconds: number;
  dirtyRateBytesPerSecond: number;
  transferRateBytesPerSecond: number;
  expectedDowntimeSeconds: number;
  remainingBytes: number;
}

/** What sessionEnded needs: a Report message satisfies it; a bare result word is enough. */
export interface SessionOutcome {
  result: string;
  downtimeSeconds?: number;
  totalSeconds?: number;
  verifyMismatches?: number;
}

interface SessionState {
  pageSize: number;
  /** false: over the cap, no per-session series. */
  labelled: boolean;
  ended: boolean;
  /** Order of the end among sessions (eviction takes the oldest finished first). */
  endSeq: number;
  removal?: NodeJS.Timeout;
}

/** A figure from the wire as a usable number: NaN, ±Infinity and (for counters) negatives → 0. */
const finite = (v: number | undefined): number => (typeof v === 'number' && Number.isFinite(v) ? v : 0);
const nonNegative = (v: number | undefined): number => Math.max(0, finite(v));

/** Unknown result words count as failed, so the result label keeps its three values. */
export function normalizeResult(result: string | undefined): MigrationResult {
  return (RESULTS as readonly string[]).includes(result ?? '') ? (result as MigrationResult) : 'failed';
}

function packageVersion(): string {
  try {
    // dist/common/metrics/ → source tree root
    const pkg = JSON.parse(fs.readFileSync(path.resolve(__dirname, '..', '..', '..', 'package.json'), 'utf8'));
    return typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
}

export abstract class MigrationMetrics {
  readonly registry = new Registry();
  private readonly retentionMs: number;
  private readonly maxSessions: number;
  private readonly sessions = new Map<string, SessionState>();
  private closed = false;
  private endCount = 0;

  // ---- global
  private readonly migrations: Counter<'result'>;
  private readonly inProgress: Gauge;
  private readonly downtime: Histogram;
  private readonly migrationDuration: Histogram;
  private readonly roundDuration: Histogram;
  private readonly zeroPages: Counter;
  private readonly compressionIn: Counter;
  private readonly compressionOut: Counter;
  private readonly verifyMismatches: Counter;
  private readonly untracked: Counter;
  private readonly kernelInfo: Gauge<string>;
  // ---- per session
  private readonly rounds: Counter<'session'>;
  private readonly roundDirty: Gauge<'session'>;
  private readonly transferred: Counter<'session'>;
  private readonly remaining: Gauge<'session'>;
  private readonly dirtyRate: Gauge<'session'>;
  private readonly transferRate: Gauge<'session'>;
  private readonly expectedDowntime: Gauge<'session'>;
  private readonly downtimeTarget: Gauge<'session'>;
  private readonly sessionDowntime: Gauge<'session'>;
  private readonly perSession: Array<Counter<'session'> | Gauge<'session'>>;

  /** role: build_info's role label, which side serves these metrics. */
  protected constructor(role: 'sender' | 'receiver', opts: MigrationMetricsOptions = {}) {
    this.retentionMs = opts.retentionMs ?? DEFAULT_RETENTION_MS;
    this.maxSessions = opts.maxSessions ?? DEFAULT_MAX_SESSIONS;
    const registers = [this.registry];
    const p = METRICS_PREFIX;
    const counter = (name: string, help: string) => this.counter(name, help);
    const histogram = (name: string, help: string, buckets: number[]) => new Histogram({ name: p + name, help, buckets, registers });
    const sessionGauge = (name: string, help: string) => new Gauge({ name: p + name, help, labelNames: ['session'] as const, registers });
    const sessionCounter = (name: string, help: string) => new Counter({ name: p + name, help, labelNames: ['session'] as const, registers });
    const closedCounter = <L extends string>(name: string, help: string, label: L, values: readonly string[]) => this.closedCounter(name, help, label, values);

    this.migrations = closedCounter('migrations_total', 'Migrations finished, by result (committed, failed, aborted).', 'result', RESULTS);
    this.inProgress = new Gauge({ name: `${p}migrations_in_progress`, help: 'Migrations started and not yet finished.', registers });
    this.downtime = histogram(
      'downtime_seconds',
      'Time the target process was frozen for the final copy, per migration.',
      [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    );
    this.migrationDuration = histogram(
      'migration_duration_seconds',
      'Wall time of a whole migration, from the first round to the end.',
      [0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600],
    );
    this.roundDuration = histogram(
      'round_duration_seconds',
      'Wall time of one copy round (scan, read, send).',
      [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    );
    this.zeroPages = counter('zero_pages_total', 'All-zero pages sent as bits instead of bytes.');
    this.compressionIn = counter('compression_input_bytes_total', 'Page bytes before compression (zero pages excluded).');
    this.compressionOut = counter('compression_output_bytes_total', 'Page payload bytes after compression, as sent on the wire.');
    this.verifyMismatches = counter('verify_mismatches_total', 'Pages the verify pass found different from the frozen process and re-sent.');
    this.untracked = counter('untracked_sessions_total', 'Sessions that got no per-session series because the session label cap was reached.');
    new Gauge({
      name: `${p}build_info`,
      help: 'Always 1; labels say which precopy build and Node.js serve these metrics.',
      labelNames: ['version', 'role', 'node_version'],
      registers,
    }).set({ version: opts.version ?? packageVersion(), role, node_version: process.version }, 1);
    this.kernelInfo = new Gauge({
      name: `${p}kernel_features_info`,
      help: 'Always 1 once probed; labels say which kernel features precopy found on this host.',
      labelNames: ['kernel_release', 'page_size', 'pagemap_scan', 'userfaultfd', 'uffd_wp_async', 'uffd_wp_unpopulated'],
      registers,
    });

    this.rounds = sessionCounter('rounds_total', 'Copy rounds finished in the session.');
    this.roundDirty = sessionGauge('round_dirty_bytes', 'Bytes found written in the last round (zero pages included).');
    this.transferred = sessionCounter('transferred_bytes_total', 'Page payload bytes sent in the session (after compression).');
    this.remaining = sessionGauge('remaining_bytes', "Dirty bytes left when the last round ended: the next round's work.");
    this.dirtyRate = sessionGauge('dirty_rate_bytes_per_second', 'Rate at which the target dirtied memory during the last round.');
    this.transferRate = sessionGauge('transfer_rate_bytes_per_second', 'Rate at which page bytes were sent during the last round.');
    this.expectedDowntime = sessionGauge('expected_downtime_seconds', 'Downtime a freeze would cost now: remaining bytes over the measured transfer rate.');
    this.downtimeTarget = sessionGauge('downtime_target_seconds', 'The downtime target the sender converges towards.');
    this.sessionDowntime = sessionGauge('session_downtime_seconds', 'Final downtime of a finished session.');
    this.perSession = [
      this.rounds,
      this.roundDirty,
      this.transferred,
      this.remaining,
      this.dirtyRate,
      this.transferRate,
      this.expectedDowntime,
      this.downtimeTarget,
      this.sessionDowntime,
    ];

    if (opts.processMetrics) collectDefaultMetrics({ register: this.registry, prefix: p });
  }

  /** Record the kernel features probed on this host (native probeKernel()). */
  kernelFeatures(f: Pick<KernelFeatures, 'kernelRelease' | 'pageSize' | 'pagemapScan' | 'userfaultfd' | 'uffdWpAsync' | 'uffdWpUnpopulated'>): void {
    this.kernelInfo.reset();
    this.kernelInfo.set(
      {
        kernel_release: f.kernelRelease,
        page_size: String(f.pageSize),
        pagemap_scan: String(f.pagemapScan),
        userfaultfd: String(f.userfaultfd),
        uffd_wp_async: String(f.uffdWpAsync),
        uffd_wp_unpopulated: String(f.uffdWpUnpopulated),
      },
      1,
    );
  }

  /** A session started (or resumed after a broken stream: its series go on where they were). */
  sessionStarted(meta: SessionMeta): void {
    const id = meta.sessionId;
    let s = this.sessions.get(id);
    if (s && !s.ended) {
      s.pageSize = nonNegative(meta.pageSize) || s.pageSize;
    } else {
      if (s?.removal) clearTimeout(s.removal);
      s = { pageSize: nonNegative(meta.pageSize) || 4096, labelled: s?.labelled ?? this.admit(id), ended: false, endSeq: 0 };
      this.sessions.set(id, s);
      this.inProgress.inc();
    }
    if (s.labelled && meta.downtimeTargetSeconds !== undefined && finite(meta.downtimeTargetSeconds) > 0) {
      this.downtimeTarget.set({ session: id }, finite(meta.downtimeTargetSeconds));
    }
  }

  /** One round's figures, as the sender computed them (RoundEnd). */
  roundEnded(sessionId: string, r: RoundFiguresIn): void {
    const s = this.sessions.get(sessionId);
    this.roundDuration.observe(nonNegative(r.durationSeconds));
    this.zeroPages.inc(nonNegative(r.zeroPages));
    this.compressionIn.inc(nonNegative(r.rawBytes));
    this.compressionOut.inc(nonNegative(r.wireBytes));
    if (!s?.labelled) return;
    const session = { session: sessionId };
    this.rounds.inc(session);
    this.roundDirty.set(session, nonNegative(r.dirtyPages) * s.pageSize);
    this.transferred.inc(session, nonNegative(r.wireBytes));
    this.remaining.set(session, nonNegative(r.remainingBytes));
    this.dirtyRate.set(session, nonNegative(r.dirtyRateBytesPerSecond));
    this.transferRate.set(session, nonNegative(r.transferRateBytesPerSecond));
    this.expectedDowntime.set(session, nonNegative(r.expectedDowntimeSeconds));
  }

  /**
   * The session is over: with the sender's Report, or a bare `{ result: 'failed' | 'aborted' }`
   * when the stream ended without one. Idempotent; its series go after the retention time.
   */
  sessionEnded(sessionId: string, outcome: SessionOutcome): void {
    const s = this.sessions.get(sessionId);
    if (!s || s.ended) return;
    s.ended = true;
    s.endSeq = ++this.endCount;
    this.inProgress.dec();
    const result = normalizeResult(outcome.result);
    this.migrations.inc({ result });
    const downtime = nonNegative(outcome.downtimeSeconds);
    if (result === 'committed' || downtime > 0) {
      this.downtime.observe(downtime);
      if (s.labelled) this.sessionDowntime.set({ session: sessionId }, downtime);
    }
    if (outcome.totalSeconds !== undefined) this.migrationDuration.observe(nonNegative(outcome.totalSeconds));
    this.verifyMismatches.inc(nonNegative(outcome.verifyMismatches));
    if (this.closed) return this.removeSession(sessionId);
    s.removal = setTimeout(() => this.removeSession(sessionId), this.retentionMs);
    s.removal.unref(); // a pending removal never keeps a finished sender or test alive
  }

  /** Drop a session's series now (also what the retention timer does). */
  removeSession(sessionId: string): void {
    const s = this.sessions.get(sessionId);
    if (!s) return;
    if (s.removal) clearTimeout(s.removal);
    if (!s.ended) this.inProgress.dec();
    this.sessions.delete(sessionId);
    if (s.labelled) for (const m of this.perSession) m.remove({ session: sessionId });
  }

  /** Session ids that have per-session series now. */
  labelledSessions(): string[] {
    return [...this.sessions].filter(([, s]) => s.labelled).map(([id]) => id);
  }

  /** The exposition text (what /metrics serves). */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  /** Cancel pending removals (the series stay until the registry goes). */
  close(): void {
    this.closed = true;
    for (const s of this.sessions.values()) if (s.removal) clearTimeout(s.removal);
  }

  /** A counter of this registry, named with the precopy_ prefix. */
  protected counter(name: string, help: string): Counter {
    return new Counter({ name: METRICS_PREFIX + name, help, registers: [this.registry] });
  }

  /** A counter over a closed set of label values, each with a zero series from the start, so
   *  rate()/increase() and "by label" panels and alerts see the first event. */
  protected closedCounter<L extends string>(name: string, help: string, label: L, values: readonly string[]): Counter<L> {
    const c = new Counter<L>({ name: METRICS_PREFIX + name, help, labelNames: [label], registers: [this.registry] });
    for (const v of values) c.inc({ [label]: v } as Partial<Record<L, string>>, 0);
    return c;
  }

  /** Whether a new session may have its own label value; makes room by dropping the oldest finished one. */
  private admit(id: string): boolean {
    if (id.length === 0 || id.length > MAX_SESSION_ID_LENGTH) return this.refuse(id, 'its id is not a valid label value');
    let labelled = 0;
    let oldestEnded: string | undefined;
    let oldestAt = Infinity;
    for (const [sid, s] of this.sessions) {
      if (!s.labelled) continue;
      labelled++;
      if (s.ended && s.endSeq < oldestAt) {
        oldestAt = s.endSeq;
        oldestEnded = sid;
      }
    }
    if (labelled < this.maxSessions) return true;
    if (oldestEnded === undefined) return this.refuse(id, `${this.maxSessions} sessions already have series`);
    this.removeSession(oldestEnded);
    return true;
  }

  private refuse(id: string, why: string): false {
    this.untracked.inc();
    log.warn(`session ${JSON.stringify(id.slice(0, MAX_SESSION_ID_LENGTH))}: no per-session metrics (${why})`);
    return false;
  }
}
