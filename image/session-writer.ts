// (Over 400 lines on purpose: every change a writer makes — rounds, page batches, the commit,
// failing — in one class next to the checks it makes; the durable order is commit-protocol.ts.)
// A session being received: the one handle that may change it (ImageStore.create and resume take
// the session lock for it, close releases it). To what SessionReader reads it adds the rounds —
// begin, page batches, discards, end — the commit, and failing or aborting the session. Page
// writes are issued in call order but complete in the background so that the next batch can be
// decoded meanwhile; a round's end waits for them, then commit-protocol.ts makes it durable.
//
// The image digest is kept as pages arrive (running-digest.ts), so a commit — inside the
// migration's downtime — costs a comparison and the manifest and state files, not a read of the
// whole image; verify recomputes the digest from disk (SessionReader.digest).

import type { Vma } from '../common/vma';
import { digestHex } from '../common/image-digest';
import { logger } from '../common/log';
import { hashPages } from '../native';
import { ChunkFiles } from './chunk-files';
import { CommitProtocol, type PagesSync } from './commit-protocol';
import { crashPoint } from './crash-hook';
import { atomicWrite } from './durable-file';
import { checkCount, checkFigures, checkLayout, checkRuns, checkText, checkThreads } from './input-checks';
import { planBatch } from './page-batch';
import { PageJournal, emptyJournal, ensureJournalFile, replayJournal, type JournalRef } from './page-journal';
import { encodeProcessState } from './process-state';
import { FORMAT, type ManifestFile, type SessionFiles, type StateFile } from './on-disk';
import { RunningDigest } from './running-digest';
import { loadSession, SessionReader, type LoadedSession } from './session-reader';
import { releaseSession } from './session-lock';
import { StoreError, badState, invalid, ioError } from './store-error';
import { storeCounters } from './store-counters';
import { PHASES, type CommitOutcome, type CommitRequest, type Phase, type RoundAck, type RoundEnd, type StoredRound } from './store-types';

const log = logger('store');
const MASK64 = (1n << 64n) - 1n;
const MAX_REPORT_BYTES = 1 << 20;
/** Rounds whose pages are journaled (page-journal.ts): the ones inside the migration's downtime. */
const JOURNALED: ReadonlySet<Phase> = new Set(['STOP_AND_COPY', 'VERIFY_FIX']);

interface OpenRound {
  round: number;
  phase: Phase;
  bytes: number;
}

interface Inflight {
  lo: number;
  hi: number;
  /** Settles (never rejects) when the batch's writes are done. */
  settled: Promise<void>;
}

const noop = () => undefined;
const now = () => new Date().toISOString();

export class SessionWriter extends SessionReader {
  private current: OpenRound | null = null;
  /** Set by the first write/sync failure: the session is failed and takes no more pages. */
  private broken: StoreError | null = null;
  private readonly inflight = new Set<Inflight>();
  private readonly durable: CommitProtocol;
  /** The digest of what the windows hold, kept as pages change (see ensureDigest). */
  private running: RunningDigest | null = null;
  /** Scratch for the content hashes of a batch's data pages (grown as needed). */
  private hashes = new BigUint64Array(256);
  /** The open round's journal, kept (open) after the round until it is retired. */
  private journal: PageJournal | null = null;
  /** ensureJournalFile was done by this writer. */
  private journalFileReady = false;

  private constructor(id: string, files: SessionFiles, s: LoadedSession) {
    super(id, files, s, new ChunkFiles(files.chunks, s.windows.windowBytes, true));
    this.durable = new CommitProtocol(id, files, this.windows, this.chunks, s.st.gen);
  }

  /** Open a session for writing (ImageStore.create and resume, which hold the session lock). */
  static override async load(files: SessionFiles, id: string): Promise<SessionWriter> {
    const w = new SessionWriter(id, files, await loadSession(files, id));
    const ref = w.st.journal;
    if (ref) await w.serial(() => w.replay(ref));
    return w;
  }

  /** The round whose journal the durable state names (page-journal.ts), until it is retired. */
  get journaledRound(): number | undefined {
    return this.st.journal?.round;
  }

  /** The round being received, if any. */
  get openRound(): number | undefined {
    return this.current?.round;
  }

  // ---- receiving ----

  beginRound(round: number, phase: Phase, layout: Vma[]): Promise<void> {
    return this.serial(async () => {
      this.checkWritable();
      if (this.current) throw badState(`round ${this.current.round} is still open; end it before starting round ${round}`);
      if (!Number.isSafeInteger(round) || round < 0) throw invalid(`bad round number ${String(round)}`);
      if (round <= this.st.lastDurableRound) {
        throw badState(`round ${round} does not come after the last durable round ${this.st.lastDurableRound}`);
      }
      if (!PHASES.includes(phase)) throw invalid(`bad round phase ${String(phase)}`);
      const checked = checkLayout(layout, this.pageSize);
      if (this.st.state === 'committed') {
        // A verify fix-up: the committed image is about to change in place, so it stops being
        // committed first, durably, until the next commit.
        await this.persistState({ state: 'receiving' });
        log.info(`session ${this.id}: committed image reopened for round ${round} (${phase})`);
      }
      // A journal still named by the state goes to the chunk files before new pages go there.
      await this.retireJournal();
      storeCounters.discardedPages += (await this.ensureDigest()).dropOutside(checked);
      this.layoutNow = checked;
      if (JOURNALED.has(phase)) {
        this.journal = await PageJournal.create(this.files.dir, round, this.pageSize);
      } else if (!this.journalFileReady) {
        await ensureJournalFile(this.files.dir); // ahead of the round inside the downtime
      }
      this.journalFileReady = true;
      this.current = { round, phase, bytes: 0 };
    });
  }

  /**
   * Store a batch: runs are (start, count) pairs, zeroMap one bit per page in run order (set =
   * zero page, absent from data), data the non-zero pages back to back. Everything is checked
   * before anything is written. Resolves when the pages are written (into the page cache, not
   * yet durable: endRound makes them so); `data` must not change until then. Calls may overlap
   * (the next batch is checked while this one is written); they apply in call order.
   */
  writePages(runs: ArrayLike<number>, zeroMap: Uint8Array | null, data: Buffer): Promise<void> {
    let written: Promise<void> = Promise.resolve();
    return this.serial(async () => {
      written = this.issueWrites(runs, zeroMap, data);
    }).then(() => written);
  }

  private issueWrites(runs: ArrayLike<number>, zeroMap: Uint8Array | null, data: Buffer): Promise<void> {
    this.checkWritable();
    const cur = this.current;
    if (!cur) throw badState('pages arrived outside a round (no RoundStart)');
    const b = planBatch(runs, zeroMap, data, this.layoutNow, this.windows);
    if (!b) return Promise.resolve();

    // Checked: hash the data pages (the running digest) and mark them all, then write.
    const dataPages = b.pages - b.zeroPages;
    const hashes = this.hashScratch(dataPages);
    if (dataPages > 0) hashPages(data, this.pageSize, hashes);
    this.held().markZero(b.zeroRuns);
    this.held().markData(b.dataRuns, hashes);
    cur.bytes += data.length;
    storeCounters.dataPages += dataPages;
    storeCounters.zeroPages += b.zeroPages;

    // Re-sent pages: an earlier batch still being written to the same addresses must land first.
    const { lo, hi } = b;
    const before = [...this.inflight].filter((f) => f.lo < hi && lo < f.hi).map((f) => f.settled);
    // Appended now, in call order: a page the round sends twice replays with its later copy.
    const journaled = this.journal ? this.journal.append(b.writes, data) : null;
    const done = (async () => {
      if (before.length > 0) await Promise.all(before);
      await Promise.all([journaled, this.chunks.writeAll(b.writes, data)]);
    })().catch((err) => {
      throw this.breakOn(err);
    });
    const entry: Inflight = { lo, hi, settled: done.then(noop, noop) };
    this.inflight.add(entry);
    void entry.settled.then(() => this.inflight.delete(entry));
    crashPoint('write-pages');
    return done;
  }

  /** Forget pages the target no longer has. */
  discard(runs: ArrayLike<number>): Promise<void> {
    return this.serial(async () => {
      this.checkWritable();
      if (!this.current) throw badState('discard arrived outside a round (no RoundStart)');
      checkRuns(runs, this.pageSize, null);
      for (let r = 0; r < runs.length; r += 2) storeCounters.discardedPages += this.held().clear(runs[r], runs[r + 1]);
    });
  }

  /** Make the open round durable (commit-protocol.ts); resolves only once everything is fsynced. */
  endRound(f: RoundEnd): Promise<RoundAck> {
    return this.serial(async () => {
      this.checkWritable();
      const { cur, figures } = await this.closingRound(f);
      return this.persistRound(cur, figures);
    });
  }

  /** The open round that `f` ends, its figures checked and its page writes done. */
  private async closingRound(f: RoundEnd): Promise<{ cur: OpenRound; figures: RoundEnd }> {
    const cur = this.current;
    if (!cur) throw badState(`end of round ${f?.round} without its start`);
    const figures = checkFigures(f);
    if (figures.round !== cur.round) throw badState(`end of round ${figures.round} but round ${cur.round} is open`);
    await this.settleWrites();
    if (this.broken) throw this.broken;
    return { cur, figures };
  }

  private async persistRound(cur: OpenRound, figures: RoundEnd): Promise<RoundAck> {
    const bitmaps = this.durable.planBitmaps();
    const counts = this.held().counts();
    const before = this.st.windows;
    const pages = this.pagesSync(true);
    const next = this.nextState({
      journal: pages.journal,
      lastDurableRound: cur.round,
      layout: this.layoutNow,
      windows: bitmaps.index,
      gen: this.durable.gen,
      imagePages: counts.dataPages + counts.zeroPages,
      dataPages: counts.dataPages,
      rounds: [...this.st.rounds, this.roundRecord(cur, figures)],
    });
    await this.durable.round(next, bitmaps, pages.sync);
    this.st = next;
    crashPoint('round-durable');
    this.current = null;
    storeCounters.roundsDurable++;
    await this.durable.forgetUnused(before, this.st.windows);
    return { round: cur.round, pagesStored: counts.dataPages + counts.zeroPages, durableBytes: cur.bytes };
  }

  private roundRecord(cur: OpenRound, figures: RoundEnd): StoredRound {
    return { round: cur.round, phase: cur.phase, endedAt: now(), figures };
  }

  /**
   * Commit the image: drop pages outside the final layout, compare the running digest with the
   * sender's, and only if it matches write the manifest and mark the session committed
   * (commit-protocol.ts). A mismatch returns ok=false and leaves the session receiving, so the
   * sender can fix pages and commit again. With `finalRound`, the commit also ends the open round:
   * its pages, the bitmaps, the manifest and the state reach the disk in one set of fsyncs (on a
   * mismatch the round alone is made durable, as endRound would).
   */
  commit(c: CommitRequest): Promise<CommitOutcome> {
    return this.serial(async () => {
      this.checkWritable();
      const closing = c?.finalRound ? await this.closingRound(c.finalRound) : null;
      if (!closing && this.current) throw badState(`commit while round ${this.current.round} is open`);
      if (this.st.state !== 'receiving') throw badState(`session ${this.id} is ${this.st.state}; start a round before committing again`);
      const layout = checkLayout(c?.layout, this.pageSize);
      const threads = checkThreads(c.threads);
      if (typeof c.imageDigest !== 'bigint' || c.imageDigest < 0n || c.imageDigest > MASK64) throw invalid('image digest must be a 64-bit unsigned value');
      const imagePages = checkCount(c.imagePages, 'image pages');

      const held = await this.ensureDigest();
      storeCounters.discardedPages += held.dropOutside(layout);
      this.layoutNow = layout;
      const got = held.digest();
      crashPoint('commit-digest-checked');
      if (got.digest !== c.imageDigest || got.pages !== imagePages) {
        storeCounters.digestMismatches++;
        const message =
          `digest mismatch: receiver holds ${digestHex(got.digest)} over ${got.pages} pages, ` +
          `sender sent ${digestHex(c.imageDigest)} over ${imagePages} pages; session stays receiving`;
        log.warn(`session ${this.id}: ${message}`);
        if (closing) await this.persistRound(closing.cur, closing.figures);
        return { ok: false, imageDigest: got.digest, imagePages: got.pages, message };
      }

      const bitmaps = this.durable.planBitmaps();
      const counts = held.counts();
      const commit = this.st.commit + 1;
      const pages = this.pagesSync(closing !== null);
      const manifest: ManifestFile = {
        format: FORMAT,
        sessionId: this.id,
        commit,
        committedAt: now(),
        pageSize: this.pageSize,
        layout,
        threads: threads.map((t) => ({
          tid: t.tid,
          regs: t.regs.toString('base64'),
          fpregs: t.fpregs.toString('base64'),
          xstate: t.xstate?.toString('base64'),
        })),
        imageDigest: digestHex(got.digest),
        imagePages: got.pages,
        dataPages: counts.dataPages,
        windows: bitmaps.index,
        process: c.processState ? JSON.parse(encodeProcessState(c.processState).toString('utf8')) : undefined,
      };
      const before = this.st.windows;
      const next = this.nextState({
        state: 'committed',
        commit,
        ...(closing && { lastDurableRound: closing.cur.round, rounds: [...this.st.rounds, this.roundRecord(closing.cur, closing.figures)] }),
        layout,
        windows: bitmaps.index,
        gen: this.durable.gen,
        imagePages: got.pages,
        dataPages: counts.dataPages,
        reason: undefined,
        journal: pages.journal,
      });
      await this.durable.commit(manifest, next, bitmaps, pages.sync);
      this.st = next;
      crashPoint('commit-done');
      if (closing) {
        this.current = null;
        storeCounters.roundsDurable++;
      }
      storeCounters.commits++;
      await this.durable.forgetUnused(before, this.st.windows);
      log.info(`session ${this.id}: committed ${got.pages} pages, digest ${digestHex(got.digest)}`);
      // The journal's pages go to the chunk files after the answer, off the downtime: queued now,
      // so that whatever this writer does next waits for it.
      void this.serial(() => this.retireJournal()).catch((err: unknown) =>
        log.warn(`session ${this.id}: the final-round journal stays until the session is next opened: ${(err as Error).message}`),
      );
      return { ok: true, imageDigest: got.digest, imagePages: got.pages, message: `committed ${got.pages} pages` };
    });
  }

  /**
   * The running digest and page count: what commit compares with the sender's. As of the
   * operations called before (writePages calls apply in call order, before their data is written).
   */
  heldDigest(): Promise<{ digest: bigint; pages: number }> {
    return this.serial(async () => (await this.ensureDigest()).digest());
  }

  /** Keep the sender's final report (for `receiver report`). */
  recordReport(r: object): Promise<void> {
    return this.serial(async () => {
      if (this.closed) throw badState(`session ${this.id} is closed`);
      const text = JSON.stringify(r, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 1);
      if (text === undefined || text.length > MAX_REPORT_BYTES) throw invalid(`report must be a JSON object under ${MAX_REPORT_BYTES} bytes`);
      await atomicWrite(this.files.report, text);
      this.reportRec = JSON.parse(text) as Record<string, unknown>;
    });
  }

  fail(reason: string): Promise<void> {
    return this.serial(() => this.finish('failed', reason));
  }

  abort(reason: string): Promise<void> {
    return this.serial(() => this.finish('aborted', reason));
  }

  /** Resume: forget what a crashed writer left beyond the durable state (a journal no state
   *  names any more included: load replayed and retired any it named). */
  async tidyAfterCrash(): Promise<void> {
    await this.serial(async () => {
      await this.durable.tidy(this.st.windows);
      if (!this.st.journal && !this.journal) await emptyJournal(this.files.dir);
    });
  }

  /** Wait for pending work, close files, and release the session. Idempotent. */
  override async close(): Promise<void> {
    if (this.closed) return;
    await super.close();
    await this.journal?.close().catch(() => undefined);
    this.journal = null;
    await this.durable.settled();
    await releaseSession(this.files.dir);
  }

  // ---- internals ----

  /**
   * A write or sync failed: the session is failed (recorded on disk if at all possible), later
   * calls get the same error. Returns the StoreError to throw.
   */
  protected override breakOn(err: unknown): StoreError {
    const se = super.breakOn(err);
    if (!this.broken && this.st.state === 'receiving') {
      this.broken = se;
      if (se.code === 'NO_SPACE') storeCounters.noSpace++;
      log.error(`session ${this.id} failed: ${se.message}`);
      // Queued: runs after the operation that hit the error.
      void this.serial(() => this.finish('failed', se.message)).catch((e: unknown) =>
        log.error(`session ${this.id}: could not record the failure: ${(e as Error).message}`),
      );
    }
    return se;
  }

  protected override async settleWrites(): Promise<void> {
    while (this.inflight.size > 0) await Promise.all([...this.inflight].map((f) => f.settled));
  }

  /**
   * The running digest. A reopened session (resume after a crash or a broken stream) rebuilds it
   * once from the pages on disk, at its first round or commit — not at resume itself, which may be
   * only to abort it — so that no commit ever reads the image back. A new session has nothing to read.
   */
  private async ensureDigest(): Promise<RunningDigest> {
    if (this.running) return this.running;
    const t0 = process.hrtime.bigint();
    try {
      this.running = await RunningDigest.fromDisk(this.windows, this.pageReader);
    } catch (err) {
      if (err instanceof StoreError && err.code === 'INVALID') throw invalid(`session ${this.id} is damaged: ${err.message}`);
      throw err;
    }
    const d = this.running.digest();
    if (d.pages > 0) {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      log.info(`session ${this.id}: image digest rebuilt from disk: ${d.pages} pages in ${ms.toFixed(0)} ms`);
    }
    return this.running;
  }

  /** The running digest of a session with a round open (beginRound built it). */
  private held(): RunningDigest {
    if (!this.running) throw badState(`session ${this.id}: no running digest outside a round`);
    return this.running;
  }

  private hashScratch(n: number): BigUint64Array {
    if (this.hashes.length < n) this.hashes = new BigUint64Array(Math.max(n, 2 * this.hashes.length));
    return this.hashes.subarray(0, n);
  }

  private checkWritable(): void {
    if (this.closed) throw badState(`session ${this.id} is closed`);
    if (this.broken) throw this.broken;
    if (this.st.state === 'failed' || this.st.state === 'aborted')
      throw badState(`session ${this.id} is ${this.st.state}${this.st.reason ? `: ${this.st.reason}` : ''}`);
  }

  /** Move to failed/aborted. A committed image stays committed (it is valid whatever happens next). */
  private async finish(state: 'failed' | 'aborted', reason: string): Promise<void> {
    if (this.closed) throw badState(`session ${this.id} is closed`);
    if (this.st.state !== 'receiving') {
      log.info(`session ${this.id}: stays ${this.st.state} (asked to become ${state}: ${reason})`);
      return;
    }
    this.current = null;
    await this.settleWrites();
    reason = checkText(String(reason ?? ''), 'reason').slice(0, 1000);
    try {
      await this.persistState({ state, reason });
    } catch (err) {
      if (ioError(err, '').code !== 'NO_SPACE') throw err;
      // The disk is full and this session is over: give its page data back so its end can be recorded.
      log.warn(`session ${this.id}: disk full; freeing its page data to record that it ${state}`);
      await this.chunks.truncateAll();
      await this.journal?.close().catch(() => undefined);
      this.journal = null;
      await this.persistState({ state, reason, journal: undefined }).catch((e: unknown) => {
        this.st = { ...this.st, state, reason };
        throw e;
      });
      await emptyJournal(this.files.dir);
    }
    log.info(`session ${this.id} ${state}: ${reason}`);
  }

  /**
   * How the pages the next durable state counts on become durable, and the journal it names.
   * `closing`: a round ends with that state. A journaled round syncs its journal alone (its
   * in-place writes stay unsynced, named by the state until retireJournal); a commit after such a
   * round has nothing more to sync and keeps naming it; otherwise the chunk files are synced,
   * which covers any journal's pages too.
   */
  private pagesSync(closing: boolean): { sync: PagesSync; journal: JournalRef | undefined } {
    const j = this.journal;
    if (closing && j?.active) return { sync: () => j.sync(), journal: j.ref };
    if (!closing && this.st.journal) return { sync: () => Promise.resolve(), journal: this.st.journal };
    return { sync: () => this.chunks.syncTouched(), journal: undefined };
  }

  /** The chunk files synced, the state no longer names the journal, its file emptied. */
  private async retireJournal(): Promise<void> {
    const j = this.journal;
    this.journal = null;
    if (this.st.journal) {
      await this.chunks.syncTouched();
      await this.persistState({ journal: undefined });
      crashPoint('journal-retired');
    }
    await j?.discard();
  }

  /** Opening a session whose state names a journal: the crash may have lost the journaled
   *  round's in-place writes; write them again from the journal, then retire it. */
  private async replay(ref: JournalRef): Promise<void> {
    // A failed or aborted session's pages are of no use: its journal is only let go.
    const live = this.st.state === 'receiving' || this.st.state === 'committed';
    const pages = live ? await replayJournal(this.files.dir, ref, this.pageSize, this.chunks, this.windows.windowBytes) : 0;
    storeCounters.journalReplayedPages += pages;
    crashPoint('journal-replayed');
    await this.persistState({ journal: undefined });
    await emptyJournal(this.files.dir);
    log.info(`session ${this.id}: ${pages} pages of round ${ref.round} written again from its journal`);
  }

  /** The current state plus patch (not yet on disk). */
  private nextState(patch: Partial<StateFile>): StateFile {
    return { ...this.st, ...patch, updatedAt: now() };
  }

  /** Replace state.json atomically with the current state plus patch. */
  private async persistState(patch: Partial<StateFile>): Promise<void> {
    const next = this.nextState(patch);
    await this.durable.replaceState(next);
    this.st = next;
  }
}
