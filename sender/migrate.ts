// (Over 400 lines on purpose: the migration's state machine. Every step shares the session's
// state (round, layout, journal, freeze); the layers it drives live in their own files.)
// The sender's top-level job: live-migrate one process's memory (CRIU's cr_pre_dump + cr_dump,
// for memory only). migrate() reads as the steps of docs/design.md, Data flow:
//   1. set-up       check the target and our rights, probe the kernel, open the receiver
//                   session, arm tracking (register every VMA)
//   2. round 0      write-protect everything and copy every populated page
//   3. rounds 1..n  re-read the maps, copy new VMAs whole and pages written since the last round
//   4. convergence  after each round: stop when the expected downtime is under target, when the
//                   dirty set stops shrinking, or at --max-rounds; auto-converge throttles
//   5. stop-and-copy freeze, last dirty pages, reconcile the populated set, commit; verify the
//                   image against the frozen memory and fix what differs
//   6. after        resume, stop or kill the target
//   7. failure      thaw, untrack, abort the receiver session, say what happened
//   8. resume       the link broke (receiver restart, network cut): thaw if frozen, reconnect
//                   with backoff, resume the session at the receiver's last durable round, and
//                   go on with pre-copy rounds; the next round re-sends what the receiver lost
// Layers: tracking/scanning (tracking/), staging (stage/), transfer (transfer/), wired by
// round-pipeline.ts; decisions in convergence.ts; output in report/; reconnecting in reconnect.ts,
// what a resume re-sends in stage/round-journal.ts.

import { setImmediate as setImmediateP } from 'node:timers/promises';
import { logger } from '../common/log';
import { UserError } from '../common/errors';
import { digestHex, digestToBuffer } from '../common/image-digest';
import type { HostPort } from '../common/cli';
import type { Vma } from '../common/vma';
import { findSyscallGadget, prepareFreezeForRestore, probeKernel, type CowSnapshot, type KernelFeatures, type PreparedFreeze } from '../native';
import { decide, type ConvergenceOptions, type Decision, type RoundMeasure, type StopReason } from './convergence';
import { FreezeSession, thawAll } from './target/freeze-session';
import { loseWritesForTest } from './target/lost-write-hook';
import { isLinkBreak, reconnect } from './reconnect';
import { pacingFor } from './pacing';
import { runPipeline, STAGE_PAGES, type RoundTotals } from './round-pipeline';
import { heldOutside, runsNotHeld, runsOutside, runsWithin, splitRuns, sumPages, unionRuns } from '../common/page-runs';
import { Throttle } from './target/throttle';
import { checkTarget, estimateMemoryBytes, explainTargetError, forgetTarget, isAlive, type TargetIdentity } from './target/target-process';
import { verifyFrozen } from './verify';
import { checkRestorable } from './capture/restorable';
import type { ProcessState } from '../image/process-state';
import { TrackedProcess } from './tracking/tracked-process';
import { runsToBatches, type RunBatch } from './tracking/run-batch';
import { BatchStager } from './stage/batch-stager';
import { SentPages } from './stage/sent-pages';
import { RoundJournal, type Replay } from './stage/round-journal';
import { createTransfer, describeTarget, type TransferTarget } from './transfer/open-transfer';
import { meteredTransfer } from './transfer/metered-transfer';
import { patientWhileFrozen } from './transfer/frozen-patience';
import type { Phase, PageTransfer, RoundEnd, SessionStart } from './transfer/page-transfer';
import type { FreezeSplit, HandoverFigures, MigrationSummary, RoundRecord, VerifyResult } from './report/figures';
import { GrpcTransfer } from './transfer/grpc-transfer';
import { resolveCommand, runHandover } from './handover/run-handover';
import { targetUid } from './handover/target-uid';
import { SILENT_REPORTER, type MigrationReporter } from './report/reporter';

/** Exit status of a migration given up under --on-no-convergence abort. */
export const EXIT_NO_CONVERGENCE = 3;
const log = logger('migrate');

export interface MigrateOptions {
  pid: number;
  to: TransferTarget;
  /** null: COMMAND-PID-TIMESTAMP. */
  sessionId: string | null;
  sourceHost: string;
  downtimeMs: number;
  maxRounds: number;
  maxPages: number;
  compress: 'lz4' | 'none';
  autoConverge: boolean;
  /** --on-no-convergence abort: give up rather than freeze past the downtime target. */
  abortIfUnmet?: boolean;
  after: 'resume' | 'stop' | 'kill';
  verify: boolean;
  /** --verify-frozen: verify before the thaw even with --after resume (no snapshot). */
  verifyFrozen?: boolean;
  /** --restorable: refuse what a restore cannot recreate before touching the target, and
   *  capture the process's state at the freeze. null: a memory image only. */
  restorable?: { dropConnections: boolean } | null;
  /** --handover (implies restorable): after the commit the receiver starts the process and the
   *  source is killed (docs/design.md, Handover). securityFlags: repeated in `sender resolve`. */
  handover?: { securityFlags: string[] } | null;
  /** --reconnect-timeout: seconds to keep reconnecting after a broken link (0: fail at once;
   *  default 120). */
  reconnectTimeoutSeconds?: number;
  metricsListen?: HostPort | null;
  reporter?: MigrationReporter;
  /** Aborts the migration (the target is thawed, the session aborted). */
  signal?: AbortSignal;
  /** Turn SIGINT/SIGTERM into a clean abort (the CLI). */
  handleSignals?: boolean;
}

/** Migrate; resolves with the figures once the receiver committed a verified image. */
export async function migrate(opts: MigrateOptions): Promise<MigrationSummary> {
  return new Migration(opts).run();
}

export function defaultSessionId(command: string, pid: number, now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\..*$/, '');
  const name =
    command
      .replace(/[^A-Za-z0-9._-]/g, '_')
      .replace(/^\.+/, '')
      .slice(0, 32) || 'process';
  return `${name}-${pid}-${stamp}`;
}

const now = () => performance.now() / 1000;

export const DEFAULT_RECONNECT_TIMEOUT_SECONDS = 120;
/** Breaks while frozen before giving up: each one costs a stop-and-copy, and a receiver that
 *  cannot take one in time (its disk, the network) would make the migration loop forever. */
const MAX_FROZEN_BREAKS = 3;

class Migration {
  private readonly reporter: MigrationReporter;
  private readonly abortCtl = new AbortController();
  private readonly conv: ConvergenceOptions;
  private readonly startedAt = now();

  private target!: TargetIdentity;
  private features!: KernelFeatures;
  /** A `syscall` instruction of the target, found at set-up so the capture helper need not
   *  search for it while the target is frozen (0: let it search). */
  private gadget = 0;
  private freezeHelper: PreparedFreeze | null = null;
  private sessionId = '';
  private transfer: PageTransfer | null = null;
  private link: GrpcTransfer | null = null;
  /** During a handover's switch: the `sender resolve` command that would settle it. */
  private switching: string | null = null;
  private tracked: TrackedProcess | null = null;
  private sent!: SentPages;
  private stager!: BatchStager;
  private throttle: Throttle | null = null;
  private freeze: FreezeSession | null = null;
  private pageSize = 4096;

  private memoryBytes = 0;
  private layout: Vma[] = [];
  private round = 0;
  private lastRoundStart = 0;
  private readonly history: RoundMeasure[] = [];
  /** Index in history of the first round since the last resume: convergence starts over there. */
  private epoch = 0;
  private journal!: RoundJournal;
  /** Set by a resume, taken by the next round: what the receiver lost. */
  private replay: Replay | null = null;
  private reconnects = 0;
  private frozenBreaks = 0;
  private readonly records: RoundRecord[] = [];
  private committed = false;
  /** --restorable: the process's state beyond memory, captured at the freeze. */
  private processState: ProcessState | null = null;
  /** Where the freeze-to-commit time went (for a handover's report). */
  private freezeSplit: FreezeSplit | null = null;
  private cleanups: (() => void | Promise<void>)[] = [];

  constructor(private readonly opts: MigrateOptions) {
    this.reporter = opts.reporter ?? SILENT_REPORTER;
    this.conv = { downtimeSeconds: opts.downtimeMs / 1000, maxRounds: opts.maxRounds, autoConverge: opts.autoConverge, abortIfUnmet: opts.abortIfUnmet };
    if (opts.signal) {
      const outer = opts.signal;
      if (outer.aborted) this.abortCtl.abort(outer.reason);
      else outer.addEventListener('abort', () => this.abortCtl.abort(outer.reason), { once: true });
    }
  }

  private get signal(): AbortSignal {
    return this.abortCtl.signal;
  }

  async run(): Promise<MigrationSummary> {
    try {
      await this.setUp(); //                                           1. set-up
      let done: { decision: Decision; downtime: number; verify: VerifyResult } | null = null;
      while (!done) {
        try {
          let decision = await this.precopyRound(); //                  2. round 0 (after a resume: 3.)
          while (!decision.stop) decision = await this.precopyRound(); // 3./4. rounds 1..n until converged
          done = { decision, ...(await this.stopAndCopy()) }; //        5. stop-and-copy, commit, verify
        } catch (err) {
          await this.resume(err); //                                    8. link broken: reconnect, resume
        }
      }
      let handover: HandoverFigures | undefined;
      if (this.opts.handover)
        handover = await this.handOver(done.downtime, done.verify); // 6. handover
      else this.afterAction(); //                                        6. after
      return await this.finish(done.decision, done.downtime, done.verify, handover);
    } catch (err) {
      throw await this.fail(err); //                                     7. failure
    } finally {
      for (const c of this.cleanups.reverse()) await c();
    }
  }

  // ------------------------------------------------------------------ 1. set-up

  private async setUp(): Promise<void> {
    const { opts } = this;
    this.target = checkTarget(opts.pid);
    // Before the receiver or the target is touched: everything a restore could not recreate.
    if (opts.restorable) checkRestorable(opts.pid, opts.restorable);
    this.cleanups.push(() => forgetTarget(opts.pid)); // the exec witness (target-process.ts)
    this.features = probeKernel();
    try {
      this.gadget = findSyscallGadget(opts.pid);
    } catch {
      this.gadget = 0; // the helper searches again (and says why, should it need one)
    }
    this.prepareFreezeHelper();
    this.cleanups.push(() => this.freezeHelper?.thaw());
    if (this.features.missing.length > 0) {
      throw new UserError(
        `this kernel (${this.features.kernelRelease}) cannot track a process's writes: missing ` +
          `${this.features.missing.join(', ')}; precopy needs Linux >= 6.7 with userfaultfd write-protect (WP_ASYNC)`,
      );
    }
    this.pageSize = this.features.pageSize;
    if (opts.handleSignals) this.installSignalHandlers();
    this.sessionId = opts.sessionId ?? defaultSessionId(this.target.command, opts.pid);

    // The receiver first: if it cannot be reached, the target has not been touched at all.
    let transfer = await createTransfer(opts.to);
    // The handover's ask goes on the link itself (not through the wrappers below).
    if (transfer instanceof GrpcTransfer) this.link = transfer;
    if (opts.metricsListen) transfer = await this.startMetrics(transfer, opts.metricsListen);
    // A network link must not keep the target frozen through a cut (a local disk is just slow).
    if (opts.to.kind === 'grpc') transfer = patientWhileFrozen(transfer, () => this.freeze !== null);
    this.transfer = transfer;
    this.memoryBytes = estimateMemoryBytes(opts.pid);
    await this.guard(transfer.open(this.sessionStart(false)));
    log.info(`session ${this.sessionId}: migrating pid ${opts.pid} (${this.target.command}) to ${transfer.description}`);

    this.tracked = TrackedProcess.attach(opts.pid, { features: this.features });
    this.sent = new SentPages(this.pageSize);
    this.journal = new RoundJournal(this.pageSize);
    const stager = new BatchStager(
      opts.pid,
      this.pageSize,
      { compress: opts.compress, maxBatchBytes: Math.min(opts.maxPages, STAGE_PAGES) * this.pageSize },
      this.sent,
    );
    this.stager = stager;
    this.cleanups.push(() => stager.close());
    this.throttle = new Throttle(opts.pid);
    this.reporter.round0Started(this.memoryBytes);
  }

  private sessionStart(resume: boolean): SessionStart {
    return {
      sessionId: this.sessionId,
      sourceHost: this.opts.sourceHost,
      pid: this.opts.pid,
      pageSize: this.pageSize,
      kernel: this.features.kernelRelease,
      command: this.target.command,
      resume,
      memoryBytes: this.memoryBytes,
      downtimeTargetSeconds: this.conv.downtimeSeconds,
      handover: !!this.opts.handover,
      uid: this.opts.handover ? targetUid(this.opts.pid) : 0,
      // Not committed as far as we know: a commit of ours the receiver holds had its answer lost.
      reopenCommitted: resume && !this.committed,
    };
  }

  // ------------------------------------------------------------------ 2./3. pre-copy rounds

  /** One pre-copy round (round 0: everything populated; later: what was written since), then the
   *  convergence decision (4.). */
  private async precopyRound(): Promise<Decision> {
    const tracked = this.tracked!;
    const r = this.round;
    const started = now();
    // Round 0 and the first round after a resume start a convergence series of their own.
    const first = this.history.length === this.epoch;
    const interval = first ? 0 : started - this.lastRoundStart;
    this.lastRoundStart = started;

    const vmaChange = this.refreshLayout();
    await this.guard(this.transfer!.beginRound(r, 'PRECOPY', this.layout));
    if (this.replay && this.replay.discards.length > 0) await this.guard(this.transfer!.discard(this.replay.discards));
    await this.discardHeld(vmaChange.discard);
    const scan = this.journal.track(r, r === 0 ? tracked.initialRuns(this.opts.maxPages) : tracked.dirtyRuns(this.opts.maxPages));
    const source = this.replay ? this.withReplay(scan, this.replay) : scan;
    this.replay = null;
    const totals = await this.pipe(source, r === 0 ? (t) => this.reporter.round0Progress(t.rawBytes + t.zeroPages * this.pageSize) : undefined);
    const sentAt = now();

    const throttle = this.throttle!.currentPercent;
    const measure = (end: number): RoundMeasure => ({
      round: r,
      dirtyPages: totals.dirtyPages,
      pageSize: this.pageSize,
      durationSeconds: end - started,
      intervalSeconds: first ? end - started : interval,
      throttlePercent: throttle,
    });
    // The receiver's round record is our estimate at the end of sending; ours also counts the
    // wait for durability, which the stop-and-copy round pays too.
    const early = decide([...this.history.slice(this.epoch), measure(sentAt)], this.conv);
    await this.guard(this.transfer!.endRound(toRoundEnd(this.figures(r, 'PRECOPY', totals, sentAt - started, early, throttle))));
    this.journal.durable(r);
    const m = measure(now());
    this.history.push(m);
    const decision = decide(this.history.slice(this.epoch), this.conv);
    this.record(this.figures(r, 'PRECOPY', totals, m.durationSeconds, decision, throttle, vmaChange));
    log.debug(`round ${r}: ${decision.why}`);
    if (decision.abort) {
      // Never frozen: the fail step (7.) untracks the target and aborts the session.
      throw new UserError(
        `gave up after ${r + 1} rounds without freezing the target (--on-no-convergence abort): ${decision.why}; ` +
          `the target runs on, untouched (nothing committed)`,
        EXIT_NO_CONVERGENCE,
      );
    }
    if (this.throttle!.failure) throw this.throttle!.failure;
    if (!decision.stop) this.throttle!.set(decision.nextThrottlePercent);
    this.round++;
    return decision;
  }

  /** Re-read the maps (new and changed VMAs are registered and come back wholly dirty). Pages
   *  outside the new layout are dropped by the receiver at RoundStart: forget them too. `discard`:
   *  ranges of VMAs first seen now, where the receiver may hold pages of an earlier object. */
  private refreshLayout(frozen = false): { added: number; removed: number; discard: number[] } {
    this.assertAlive();
    const { diff, layout, discard } = this.tracked!.refresh(frozen);
    const gone = runsOutside(this.layout, layout, this.pageSize);
    if (gone.length > 0) {
      this.sent.forget(gone);
      // The receiver drops them at RoundStart; one that rolls back to an earlier round must again.
      this.journal.discards(this.round, gone);
    }
    this.layout = layout;
    return { added: diff.added.length + diff.changed.length, removed: diff.removed.length, discard };
  }

  /** Drop pages the receiver holds within `runs` (sent earlier; the target no longer has them). */
  private async discardHeld(runs: number[]): Promise<number> {
    if (runs.length === 0) return 0;
    const held = this.sent.forget(runs);
    if (held.length > 0) {
      this.journal.discards(this.round, held);
      await this.guard(this.transfer!.discard(held));
    }
    return sumPages(held);
  }

  /**
   * After a resume, this round's pages, each once, read now: what the receiver lost (journal),
   * what the scan finds written, and every populated page never sent at all — a walk cut short
   * by the break may have write-protected pages it never handed out (a first scan of a VMA arms
   * it in the same ioctl that reports it). The scan is taken whole first (journaled as it goes);
   * the union is journaled at once, so a new break loses nothing either.
   */
  private async *withReplay(scan: AsyncIterable<RunBatch>, replay: Replay): AsyncGenerator<RunBatch> {
    const ps = this.pageSize;
    const scanned = await collectRuns(scan);
    const neverSent = runsNotHeld(this.sent, await collectRuns(this.tracked!.populatedRuns(this.sent)), ps);
    const runs = runsWithin(unionRuns([replay.pages, scanned, neverSent], ps), this.layout, ps);
    this.journal.pages(this.round, runs);
    log.debug(
      `resumed round ${this.round}: ${replay.pageCount} pages lost by the receiver, ${sumPages(scanned)} written, ${sumPages(neverSent)} never sent: ${sumPages(runs)} to send`,
    );
    yield* runsToBatches(runs, this.opts.maxPages, ps);
  }

  private async pipe(source: AsyncIterable<RunBatch> | Iterable<RunBatch>, onProgress?: (t: RoundTotals) => void): Promise<RoundTotals> {
    try {
      return await runPipeline(source, this.stager, this.transfer!, {
        signal: this.signal,
        onProgress,
        pacing: pacingFor(this.opts.to.kind, this.transfer!.lanes),
      });
    } catch (err) {
      this.assertAlive();
      throw err;
    }
  }

  // ------------------------------------------------------------------ 5. stop-and-copy

  private async stopAndCopy(): Promise<{ downtime: number; verify: VerifyResult }> {
    const tracked = this.tracked!;
    const transfer = this.transfer!;
    this.throttle!.stop();
    this.assertAlive();
    const offFreeze = this.verifiesOffFreeze;
    let freeze = this.freezeNow(offFreeze);
    let lap = laps(freeze.frozenAt / 1000);
    const split: FreezeSplit = { freezeSeconds: lap(`freeze (${freeze.threads().length} threads)`), captureSeconds: 0, finalRoundSeconds: 0, commitSeconds: 0 };
    for (let attempt = 1; this.opts.restorable; attempt++) {
      this.processState = freeze.captureState(this.opts.restorable);
      split.captureSeconds = lap(`capture (${this.processState.files.length} fds)`);
      // A thread frozen inside restart_syscall() (the rest of a sleep an earlier stop, the arming
      // or a throttle freeze, interrupted) cannot be restored but as EINTR: that kernel state does
      // not survive. It is past it within one sleep: freeze again a little later, a few times.
      const inRestart = this.processState.threads.filter((th) => th.syscallRestart.syscall === SYS_RESTART_SYSCALL).length;
      if (inRestart === 0 || attempt >= RESTART_SYSCALL_REFREEZES) break;
      log.debug(`stop-and-copy: ${inRestart} threads inside restart_syscall: thawed, freezing again`);
      freeze.release();
      await sleepMs(20);
      freeze = this.freezeNow(offFreeze);
      lap = laps(freeze.frozenAt / 1000);
      split.freezeSeconds = lap(`freeze (${freeze.threads().length} threads)`);
    }

    // Last dirty pages and new VMAs, then the populated set: pages the receiver holds that the
    // target no longer has (MADV_DONTNEED, unmapped and remapped) become holes.
    const r = this.round;
    const started = now();
    const vmaChange = this.refreshLayout(true);
    await this.guard(transfer.beginRound(r, 'STOP_AND_COPY', this.layout));
    // One turn of the event loop: HTTP/2 sends what was written from its own immediate, and the
    // scan below holds this thread for milliseconds. The receiver then prepares the round (its
    // journal) while we scan, instead of after (docs/design.md, Final round).
    await setImmediateP();
    let discarded = await this.discardHeld(vmaChange.discard);
    split.finalRoundSeconds += lap('maps');
    // The reconcile's walk of the populated set runs while the last pages are staged and sent (the
    // target is frozen: the two walks see the same memory). The pages just scanned count as
    // populated whatever that walk says of them (swapped out meanwhile, not yet recorded as sent).
    const scanned: number[] = [];
    let reconcileWalk: Promise<number[]> | null = null;
    const startReconcileWalk = () => (reconcileWalk ??= collectRuns(tracked.populatedRuns(this.sent)));
    const dirty = this.journal.track(r, loseWritesForTest(tracked.dirtyRuns(this.opts.maxPages), this.pageSize));
    let totals: RoundTotals;
    this.stager.frozen = true;
    try {
      totals = await this.pipe(keepRunsThen(dirty, scanned, startReconcileWalk));
    } catch (err) {
      await Promise.allSettled([reconcileWalk]); // the walk holds the tracker until it ends
      throw err;
    } finally {
      this.stager.frozen = false;
    }
    split.finalRoundSeconds += lap(`${totals.dirtyPages} dirty pages`);
    const populated = runsWithin(unionRuns([await startReconcileWalk(), scanned], this.pageSize), this.layout, this.pageSize);
    // The capture helper forks the snapshot while the reconcile and the commit travel (the fork
    // holds the target's mmap lock: it cannot overlap the reads and scans before).
    if (offFreeze) freeze.requestSnapshot();
    discarded += await this.discardHeld(heldOutside(this.sent, populated, this.pageSize));
    split.finalRoundSeconds += lap(`reconcile (${discarded} pages discarded)`);
    await this.endWithCommit(toRoundEnd(this.figures(r, 'STOP_AND_COPY', totals, now() - started, null)));
    split.commitSeconds = lap('commit');
    this.freezeSplit = split;
    const downtime = now() - freeze.frozenAt / 1000;
    this.record(this.figures(r, 'STOP_AND_COPY', totals, now() - started, null, 0, vmaChange, discarded));
    this.round++;
    if (!this.opts.verify) return { downtime, verify: { mode: 'skipped', mismatches: 0, seconds: 0 } };
    const snapshot = offFreeze ? freeze.awaitSnapshot() : null;
    if (snapshot) {
      this.cleanups.push(() => freeze.dropSnapshot());
      lap(`snapshot ${snapshot.pid}`);
    }
    return { downtime, verify: await this.verifyImage(populated, snapshot) };
  }

  /** Freeze the target (through the capture helper when a capture or a snapshot will be asked). */
  private freezeNow(offFreeze: boolean): FreezeSession {
    const helper = this.opts.restorable || offFreeze ? this.takeFreezeHelper() : null;
    return (this.freeze = new FreezeSession(this.opts.pid, helper));
  }

  /** A snapshot moves the verify pass off the freeze when the source runs on after the commit
   *  (docs/design.md, Verify off the freeze); a handover's destination, and a source stopped or
   *  killed after the commit, gain nothing from it. */
  private get verifiesOffFreeze(): boolean {
    return this.opts.verify && !this.opts.verifyFrozen && !this.opts.handover && this.opts.after === 'resume';
  }

  /** The capture helper for the next freeze, started ahead (at set-up, and again after a
   *  freeze the link broke): its start-up is then not frozen time. */
  private takeFreezeHelper(): PreparedFreeze {
    const h = this.freezeHelper ?? prepareFreezeForRestore(this.opts.pid, this.gadget);
    this.freezeHelper = null;
    return h;
  }

  private prepareFreezeHelper(): void {
    if (this.freezeHelper || !(this.opts.restorable || this.verifiesOffFreeze)) return;
    this.freezeHelper = prepareFreezeForRestore(this.opts.pid, this.gadget);
  }

  /**
   * The verify pass: the memory as frozen against what the receiver holds (its digest of the
   * image equals ours, checked at commit); pages that differ are re-sent and committed. With a
   * snapshot, only what it does not hold (shared memory...) is verified while frozen; the target
   * then runs on and the rest is read from the snapshot.
   */
  private async verifyImage(populated: number[], snapshot: CowSnapshot | null): Promise<VerifyResult> {
    const start = now();
    const parts = snapshot ? splitRuns(populated, snapshot.notHeld, this.pageSize) : { inside: populated, outside: [] };
    let mismatches = await this.verifyAndFix(this.opts.pid, parts.inside);
    const frozenSeconds = now() - start;
    if (snapshot) {
      this.afterAction();
      log.debug(`verify: thawed; ${sumPages(parts.outside)} pages verified off the freeze from snapshot ${snapshot.pid}`);
      try {
        mismatches += await this.verifyAndFix(snapshot.pid, parts.outside);
      } finally {
        this.freeze!.dropSnapshot();
      }
    }
    return { mode: mismatches > 0 ? 'fixed' : 'ok', mismatches, seconds: now() - start, offFreeze: snapshot !== null, frozenSeconds };
  }

  /** Verify `runs` of the memory of `pid` (the frozen target or its snapshot), re-send the pages
   *  that differ (read from there) and check again; returns how many were re-sent. */
  private async verifyAndFix(pid: number, runs: number[]): Promise<number> {
    if (runs.length === 0) return 0;
    const differ = await this.differing(pid, runs);
    if (differ.length === 0) return 0;
    const count = sumPages(differ);
    log.warn(`verify: ${count} pages differ from the frozen target (a lost write?): re-sending them`);
    log.debug(
      `verify: first differing runs ${differ
        .slice(0, 8)
        .map((v, i) => (i % 2 ? String(v) : `0x${v.toString(16)}`))
        .join(' ')}`,
    );
    const fixStart = now();
    this.stager.readFrom(pid);
    try {
      await this.guard(this.transfer!.beginRound(this.round, 'VERIFY_FIX', this.layout));
      const fixed = await this.pipe(this.journal.track(this.round, runsToBatches(differ, this.opts.maxPages, this.pageSize)));
      const fix = this.figures(this.round, 'VERIFY_FIX', fixed, now() - fixStart, null);
      await this.endWithCommit(toRoundEnd(fix));
      this.record(fix);
      this.round++;
    } finally {
      this.stager.readFrom(this.opts.pid);
    }
    const again = await this.differing(pid, runs);
    if (again.length > 0) throw new Error(`verify: ${sumPages(again)} pages still differ after re-sending them`);
    return count;
  }

  private async differing(pid: number, runs: number[]): Promise<number[]> {
    const { differ, unreadable } = await this.guard(verifyFrozen(pid, this.pageSize, runs, this.sent, this.opts.maxPages));
    // The target's own pages may be out of reach (logged by the pass); a snapshot's never are,
    // unless it was killed: then nothing is verified.
    if (pid !== this.opts.pid && unreadable.length > 0 && !isAlive(pid)) {
      throw new Error(`verify: the snapshot process ${pid} of the frozen target vanished (killed?): the committed image is not verified`);
    }
    return differ;
  }

  /**
   * End the open round and commit. A migration sends one Commit that ends the round: its pages
   * become durable with the image, one set of fsyncs less in the downtime. A handover ends the
   * round first and commits once it is durable: should the network fail while the source is
   * frozen, the sender thaws it and reconnects, and what the dead connection still delivers later
   * can then only make a round durable, never commit an image the source has run past (which would
   * leave nothing to hand over; docs/design.md, Wire protocol).
   */
  private async endWithCommit(end: RoundEnd): Promise<void> {
    if (this.opts.handover) {
      await this.guard(this.transfer!.endRound(end));
      this.journal.durable(end.round);
      await this.commit();
    } else {
      await this.commit(end);
      this.journal.durable(end.round);
    }
  }

  /** Commit the image (ending the open round `finalRound` with it, when given). */
  private async commit(finalRound?: RoundEnd): Promise<void> {
    const digest = this.sent.digest();
    const result = await this.guard(
      this.transfer!.commit({
        finalRound,
        layout: this.layout,
        threads: this.freeze!.threads(),
        imageDigest: digest,
        imagePages: this.sent.pages(),
        processState: this.processState ?? undefined,
      }),
    );
    if (!result.ok) throw new Error(`the receiver refused the commit: ${result.message}`);
    if (!result.imageDigest.equals(digestToBuffer(digest))) {
      throw new Error(`the receiver committed digest ${result.imageDigest.toString('hex')}, expected ${digestHex(digest)}`);
    }
    this.committed = true;
  }

  // ------------------------------------------------------------------ 6. after

  private afterAction(): void {
    if (!this.tracked) return; // done already: thawed for the verify off the freeze
    log.debug(`counters: tracking ${JSON.stringify(this.tracked!.stats)}; staging ${JSON.stringify(this.stager.stats)}`);
    // Thaw (or stop, or kill) first, then untrack: closing the userfaultfd clears the
    // write-protection of every page (20-30 ms per GiB, and up to a few hundred ms when the
    // thaw that follows it waits on the same mm), time the target no longer spends frozen.
    const t0 = performance.now();
    this.freeze!.afterAction(this.opts.after);
    const t1 = performance.now();
    this.tracked!.close();
    this.tracked = null;
    log.debug(`after: ${this.opts.after} in ${(t1 - t0).toFixed(1)} ms, untracked in ${(performance.now() - t1).toFixed(1)} ms`);
  }

  /** The switch: untrack, keep the source stopped durably, ask the receiver to start the process,
   *  then kill or continue the source (handover/run-handover.ts). */
  private async handOver(downtime: number, verify: VerifyResult): Promise<HandoverFigures> {
    const to = this.opts.to;
    if (to.kind !== 'grpc' || !this.link) throw new UserError('--handover needs a receiver (--to HOST:PORT)');
    let lap = performance.now();
    const laps: string[] = [];
    const mark = (what: string): void => {
      const t = performance.now();
      laps.push(`${what} ${(t - lap).toFixed(1)} ms`);
      lap = t;
    };
    // The tracking stays registered while the source is stopped: closing it clears the
    // write-protection of every page (tens of ms per GiB), wasted on a source about to be killed.
    // It goes before a continued source runs (beforeResume), or with the killed one's memory.
    const tracked = this.tracked!;
    this.tracked = null;
    const untrack = (): void => tracked.close();
    const freeze = this.freeze!;
    const ask = {
      pid: this.opts.pid,
      sessionId: this.sessionId,
      address: to.address,
      security: to.security,
      securityFlags: this.opts.handover!.securityFlags,
    };
    this.switching = resolveCommand(ask);
    freeze.stopDurably();
    mark('stop durably');
    const link = this.link;
    let out;
    let runningAt = 0;
    let resumedAt = 0;
    try {
      const beforeResume = (): void => {
        untrack();
        resumedAt = performance.now();
      };
      out = await runHandover({ ...ask, ask: (ms) => link.handover(ms), cut: (why) => link.cut(new Error(why)), beforeResume });
      runningAt = now();
      mark('ask and answer, source killed');
    } catch (err) {
      // The bench's rollback figure: from the freeze until the continued source runs again.
      if (resumedAt) log.debug(`handover: rolled back: the source runs again ${(resumedAt - freeze.frozenAt).toFixed(1)} ms after the freeze`);
      throw err;
    } finally {
      untrack();
      this.switching = null;
      log.debug(`handover: ${laps.join(', ')}`);
    }
    return {
      destinationPid: out.destinationPid,
      ...this.freezeSplit!,
      freezeToCommitSeconds: downtime,
      verifySeconds: verify.seconds,
      restoreSeconds: out.restoreSeconds,
      prebuilt: out.prebuilt,
      totalDowntimeSeconds: runningAt - freeze.frozenAt / 1000,
    };
  }

  private async finish(decision: Decision, downtime: number, verify: VerifyResult, handover?: HandoverFigures): Promise<MigrationSummary> {
    const rawBytesSent = this.records.reduce((a, r) => a + r.rawBytes, 0);
    const bytesSent = this.records.reduce((a, r) => a + r.wireBytes, 0);
    const summary: MigrationSummary = {
      result: 'committed',
      sessionId: this.sessionId,
      pid: this.opts.pid,
      to: describeTarget(this.opts.to),
      pageSize: this.pageSize,
      rounds: this.records,
      precopyRounds: this.history.length,
      stopReason: decision.reason as StopReason,
      stopWhy: decision.why,
      downtimeTargetSeconds: this.conv.downtimeSeconds,
      downtimeSeconds: downtime,
      frozenSeconds: this.freeze!.frozenSeconds(),
      totalSeconds: now() - this.startedAt,
      bytesSent,
      rawBytesSent,
      memoryBytes: this.sent.pages() * this.pageSize,
      imagePages: this.sent.pages(),
      imageDigest: digestHex(this.sent.digest()),
      compressionRatio: bytesSent > 0 ? rawBytesSent / bytesSent : 1,
      verify,
      after: handover ? 'kill' : this.opts.after,
      handover,
      maxThrottlePercent: Math.max(0, ...this.records.map((r) => r.throttlePercent)),
      reconnects: this.reconnects,
    };
    // Best effort: the image is committed and verified whatever happens to the report.
    await this.transfer!.report({
      stopReason: summary.stopReason,
      downtimeSeconds: summary.downtimeSeconds,
      frozenSeconds: summary.frozenSeconds,
      totalSeconds: summary.totalSeconds,
      bytesSent,
      memoryBytes: summary.memoryBytes,
      verify: verify.mode === 'fixed' ? `fixed ${verify.mismatches} pages` : verify.mode,
      verifyMismatches: verify.mismatches,
      result: 'committed',
      error: '',
    }).catch((err: Error) => log.warn(`could not send the final report: ${err.message}`));
    await this.transfer!.close();
    this.reporter.finished(summary);
    return summary;
  }

  // ------------------------------------------------------------------ 7. failure

  /** Thaw, untrack, abort the receiver session; returns the error to throw, said plainly. */
  private async fail(err: unknown): Promise<unknown> {
    this.throttle?.stop();
    this.freeze?.release();
    thawAll('migration failed');
    try {
      this.tracked?.close();
    } catch (e) {
      log.debug(`closing tracking: ${(e as Error).message}`);
    }
    this.tracked = null;
    let explained = explainTargetError(err, this.opts.pid, this.round);
    if (!(explained instanceof UserError) && this.target && !isAlive(this.opts.pid)) {
      explained = new UserError(`process ${this.opts.pid} exited during the migration (round ${this.round}); nothing was committed`, 1);
    }
    const message = (explained as Error)?.message ?? String(explained);
    if (this.transfer) {
      if (this.committed && !this.opts.handover) log.error(`failed after the commit: ${message}`);
      await this.transfer.abort(message);
      await this.transfer.close();
    }
    if (explained instanceof UserError) return explained;
    // Anything else (a refused commit, a broken stream) is not a bug of ours either: one line.
    if (explained instanceof Error && !(explained instanceof TypeError) && !(explained instanceof RangeError)) {
      return new UserError(`migration failed: ${message}`, 1);
    }
    return explained;
  }

  // ------------------------------------------------------------------ 8. resume

  /**
   * The link broke (receiver restart, network cut, a deadline): thaw the target if it is frozen
   * and stop the throttle (it must not wait out a network cut frozen), reconnect with backoff,
   * resume the session at the receiver's last durable round, and hand the next round what the
   * receiver lost since (the journal). Anything else, or no --reconnect-timeout, is rethrown (7.).
   * Tracking goes on throughout: writes made meanwhile are found by the next round's scan.
   */
  private async resume(err: unknown): Promise<void> {
    const timeout = this.opts.reconnectTimeoutSeconds ?? DEFAULT_RECONNECT_TIMEOUT_SECONDS;
    if (!isLinkBreak(err) || timeout <= 0 || this.signal.aborted) throw err;
    if (this.committed) {
      // Broken while re-sending pages the verify pass found different: too late to go back.
      throw new UserError(
        `the link to ${this.transfer!.description} broke while re-sending pages the verify pass found different ` +
          `from the frozen target (${err.message}): the committed image of session ${this.sessionId} lacks their last writes; migrate again`,
        1,
      );
    }
    const wasFrozen = this.freeze !== null;
    this.throttle!.stop();
    this.freeze?.release();
    this.freeze = null;
    this.assertAlive();
    if (wasFrozen && ++this.frozenBreaks > MAX_FROZEN_BREAKS) {
      throw new UserError(
        `the link to ${this.transfer!.description} broke during stop-and-copy ${this.frozenBreaks} times (last: ${err.message}); giving up, the target runs on`,
        1,
      );
    }
    log.warn(`connection to the receiver lost in round ${this.round}: ${err.message}; ${wasFrozen ? 'target thawed; ' : ''}reconnecting for up to ${timeout}s`);
    const back = await this.guard(reconnect(this.transfer!, this.sessionStart(true), timeout, this.signal, () => this.assertAlive()));
    const durable = back.accepted.lastDurableRound;
    this.replay = this.journal.since(durable);
    this.round = Math.max(this.round + 1, durable + 1);
    this.epoch = this.history.length;
    this.reconnects++;
    this.prepareFreezeHelper();
    log.warn(
      `resumed session ${this.sessionId} at durable round ${durable} after ${back.seconds.toFixed(1)} s; re-sending the ${this.replay.pageCount} pages it lost, and what was written meanwhile`,
    );
  }

  // ------------------------------------------------------------------ helpers

  /** The figures of a round (d: the convergence decision after a pre-copy round). */
  private figures(
    round: number,
    phase: Phase,
    t: RoundTotals,
    seconds: number,
    d: Decision | null,
    throttle = 0,
    vmas = { added: 0, removed: 0 },
    discardedPages = 0,
  ): RoundRecord {
    return {
      round,
      phase,
      dirtyPages: t.dirtyPages,
      zeroPages: t.zeroPages,
      rawBytes: t.rawBytes,
      wireBytes: t.wireBytes,
      batches: t.batches,
      durationSeconds: seconds,
      dirtyRateBytesPerSecond: d?.dirtyRateBytesPerSecond ?? 0,
      bandwidthBytesPerSecond: d?.bandwidthBytesPerSecond ?? (seconds > 0 ? (t.dirtyPages * this.pageSize) / seconds : 0),
      expectedDowntimeSeconds: d?.expectedDowntimeSeconds ?? 0,
      throttlePercent: throttle,
      newVmas: vmas.added,
      vanishedVmas: vmas.removed,
      discardedPages,
    };
  }

  private record(rec: RoundRecord): void {
    this.records.push(rec);
    this.reporter.roundDone(rec);
  }

  private assertAlive(): void {
    if (!isAlive(this.opts.pid)) {
      throw new UserError(`process ${this.opts.pid} exited during the migration (round ${this.round}); nothing was committed`, 1);
    }
  }

  /** Await p unless the migration is aborted first (SIGINT, SIGTERM, the caller's signal). */
  private guard<T>(p: Promise<T>): Promise<T> {
    const s = this.signal;
    p.catch(() => {}); // rejected after an abort: already handled by the failure path
    if (s.aborted) return Promise.reject(s.reason);
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => reject(s.reason);
      s.addEventListener('abort', onAbort, { once: true });
      p.then(
        (v) => (s.removeEventListener('abort', onAbort), resolve(v)),
        (e) => (s.removeEventListener('abort', onAbort), reject(e)),
      );
    });
  }

  private installSignalHandlers(): void {
    const onSignal = (sig: NodeJS.Signals) => {
      if (this.switching !== null) {
        // The handover's switch is not interrupted: the source is stopped and only the
        // receiver's decision may end or continue it. A second signal leaves it stopped.
        if (this.signal.aborted) {
          process.stderr.write(
            `sender: interrupted during the handover; the source process ${this.opts.pid} is left stopped; finish with: ${this.switching}\n`,
          );
          process.exit(130);
        }
        log.warn(`${sig}: the handover is being decided; waiting for the receiver's answer (a second ${sig} leaves the source stopped)`);
        this.abortCtl.abort(new UserError(`interrupted by ${sig}`, 130));
        return;
      }
      if (this.signal.aborted) {
        // Second signal: do not wait for the receiver any more.
        thawAll(`second ${sig}`);
        process.exit(130);
      }
      log.warn(`${sig}: aborting the migration (the target is thawed and keeps running)`);
      this.abortCtl.abort(new UserError(`interrupted by ${sig}: migration aborted, nothing was committed`, 130));
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    this.cleanups.push(() => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    });
  }

  private async startMetrics(inner: PageTransfer, listen: HostPort): Promise<PageTransfer> {
    const { SenderMetrics } = await import('./sender-metrics');
    const { startMetricsServer } = await import('../common/metrics/metrics-server');
    const metrics = new SenderMetrics();
    metrics.kernelFeatures(this.features);
    const server = await startMetricsServer(metrics.registry, listen);
    this.cleanups.push(async () => {
      metrics.close();
      await server.close();
    });
    return meteredTransfer(inner, metrics);
  }
}

/** The RoundEnd message of a round's figures (remaining: what was dirtied while it ran). */
function toRoundEnd(r: RoundRecord): RoundEnd {
  return {
    round: r.round,
    dirtyPages: r.dirtyPages,
    zeroPages: r.zeroPages,
    rawBytes: r.rawBytes,
    wireBytes: r.wireBytes,
    durationSeconds: r.durationSeconds,
    dirtyRateBytesPerSecond: r.dirtyRateBytesPerSecond,
    transferRateBytesPerSecond: r.bandwidthBytesPerSecond,
    expectedDowntimeSeconds: Number.isFinite(r.expectedDowntimeSeconds) ? r.expectedDowntimeSeconds : 0,
    remainingBytes: r.dirtyRateBytesPerSecond * r.durationSeconds,
    throttlePercent: r.throttlePercent,
    batches: r.batches,
  };
}

/** Debug timing of the steps of the downtime: "stop-and-copy: freeze 2.1 ms, maps 0.4 ms, ...";
 *  each lap answers its seconds. */
/** x86_64 restart_syscall(2), and how many freezes may find a thread inside it (stopAndCopy). */
const SYS_RESTART_SYSCALL = 219;
const RESTART_SYSCALL_REFREEZES = 6;

const sleepMs = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function laps(from: number): (label: string) => number {
  let last = from;
  return (label) => {
    const t = now();
    const s = t - last;
    log.debug(`stop-and-copy: ${label} ${(s * 1000).toFixed(1)} ms`);
    last = t;
    return s;
  };
}

/** Pass `source` through, appending its runs to `into`, and call `then` once it is exhausted. */
async function* keepRunsThen(source: AsyncIterable<RunBatch>, into: number[], then: () => unknown): AsyncGenerator<RunBatch> {
  for await (const b of source) {
    for (const v of b.runs) into.push(v);
    yield b;
  }
  then();
}

async function collectRuns(source: AsyncIterable<RunBatch>): Promise<number[]> {
  const out: number[] = [];
  for await (const b of source) for (const v of b.runs) out.push(v);
  return out;
}
