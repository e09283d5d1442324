// One session's image: the pages received so far, the round being received, and the durable
// state on disk. Every operation runs in arrival order (one queue per session); page writes are
// issued in order but complete in the background so that the next batch can be decoded meanwhile.
//
// Durability protocol of a round (endRound): wait for the round's page writes, fdatasync the
// chunk files touched, write the changed presence bitmaps as a new generation file (fsync), then
// replace state.json (last durable round, layout, window index) atomically. A crash before that
// rename leaves the previous round's state; pages overwritten in place meanwhile were dirtied
// after that round, so a resuming sender sends them again and the commit digest proves the result.

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { Vma } from '../../common/vma';
import { digestHex } from '../../common/image-digest';
import { logger } from '../../common/log';
import { countBits, nextBit, testBit } from './bitmap';
import { ChunkFiles } from './chunk-files';
import { crashPoint } from './crash-hook';
import { digestFromDisk } from './disk-digest';
import { atomicWrite, fsyncDir, readJson, writeFileSynced } from './durable-file';
import { checkCount, checkFigures, checkLayout, checkRuns, checkText, checkThreads } from './input-checks';
import { FORMAT, decodeManifest, generationOf, type ManifestFile, type RoundRecord, type SessionFiles, type StateFile, type WindowIndex } from './on-disk';
import { PageWindows, WINDOW_PAGES } from './page-windows';
import { encodeGeneration, loadWindows } from './bitmap-generations';
import { releaseSession } from './session-lock';
import { StoreError, badState, invalid, ioError } from './store-error';
import { storeCounters } from './store-counters';
import {
  ROUND_PHASES,
  type CommitOutcome,
  type CommitRequest,
  type ImageManifest,
  type RoundDurable,
  type RoundFigures,
  type RoundPhase,
  type SessionMeta,
  type SessionState,
  type VerifyResult,
} from './store-types';

const log = logger('store');
const MASK64 = (1n << 64n) - 1n;
const MAX_REPORT_BYTES = 1 << 20;
/** Address windows a session may hold pages in (64 KiB of bitmaps each: 256 MiB at most). */
const MAX_WINDOWS = 4096;

interface OpenRound {
  round: number;
  phase: RoundPhase;
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
const hex = (n: number) => `0x${n.toString(16)}`;

export class SessionImage {
  private st: StateFile;
  private layoutNow: Vma[];
  private current: OpenRound | null = null;
  /** Set by the first write/sync failure: the session is failed and takes no more pages. */
  private broken: StoreError | null = null;
  private readonly inflight = new Set<Inflight>();
  private tail: Promise<unknown> = Promise.resolve();
  private closed = false;
  private nextGen: number;
  private reportRec: Record<string, unknown> | undefined;
  private readonly chunks: ChunkFiles;

  private constructor(
    readonly id: string,
    readonly meta: SessionMeta,
    private readonly files: SessionFiles,
    st: StateFile,
    private readonly windows: PageWindows,
    /** Opened by create/resume (owns the session) rather than open (reads only). */
    readonly writable: boolean,
    report: Record<string, unknown> | undefined,
  ) {
    this.st = st;
    this.layoutNow = st.layout;
    this.nextGen = st.gen + 1;
    this.reportRec = report;
    this.chunks = new ChunkFiles(files.chunks, windows.windowBytes, writable);
  }

  /** Read a session from disk (ImageStore calls this; writers must hold the session lock). */
  static async load(files: SessionFiles, id: string, writable: boolean): Promise<SessionImage> {
    let meta: SessionMeta | undefined;
    let st: StateFile | undefined;
    try {
      meta = await readJson<SessionMeta>(files.meta);
      st = await readJson<StateFile>(files.state);
    } catch (err) {
      if (err instanceof SyntaxError) throw invalid(`session ${id}: corrupt metadata: ${err.message}`);
      throw ioError(err, `session ${id}`);
    }
    if (!meta || !st) throw new StoreError('NOT_FOUND', `session ${id} not found (no ${!meta ? 'meta' : 'state'}.json)`);
    if (st.format !== FORMAT) throw invalid(`session ${id}: state format ${st.format} is not supported (expected ${FORMAT})`);
    const windows = new PageWindows(meta.pageSize);
    await loadWindows(files, st.windows, windows);
    const report = await readJson<Record<string, unknown>>(files.report).catch(() => undefined);
    return new SessionImage(id, meta, files, st, windows, writable, report);
  }

  // ---- read-only views ----

  get state(): SessionState {
    return this.st.state;
  }
  get lastDurableRound(): number {
    return this.st.lastDurableRound;
  }
  /** The current round's layout (the last durable one between rounds, the committed one after commit). */
  get layout(): Vma[] {
    return this.layoutNow;
  }
  get dir(): string {
    return this.files.dir;
  }
  get pageSize(): number {
    return this.meta.pageSize;
  }
  get updatedAt(): string {
    return this.st.updatedAt;
  }
  get reason(): string | undefined {
    return this.st.reason;
  }
  /** The round being received, if any. */
  get openRound(): number | undefined {
    return this.current?.round;
  }
  /** Pages held in memory now (data + zero), including the open round's. */
  get imagePages(): number {
    const c = this.windows.counts();
    return c.dataPages + c.zeroPages;
  }
  /** Round records kept on disk. */
  rounds(): RoundFigures[] {
    return this.st.rounds.map((r) => ({ ...r.figures }));
  }
  /** Round records with their phase and end time. */
  roundRecords(): RoundRecord[] {
    return this.st.rounds.map((r) => ({ ...r, figures: { ...r.figures } }));
  }
  /** The sender's final report, if it was recorded. */
  report(): Record<string, unknown> | undefined {
    return this.reportRec;
  }

  // ---- receiving ----

  beginRound(round: number, phase: RoundPhase, layout: Vma[]): Promise<void> {
    return this.serial(async () => {
      this.checkWritable();
      if (this.current) throw badState(`round ${this.current.round} is still open; end it before starting round ${round}`);
      if (!Number.isSafeInteger(round) || round < 0) throw invalid(`bad round number ${String(round)}`);
      if (round <= this.st.lastDurableRound) {
        throw badState(`round ${round} does not come after the last durable round ${this.st.lastDurableRound}`);
      }
      if (!ROUND_PHASES.includes(phase)) throw invalid(`bad round phase ${String(phase)}`);
      const checked = checkLayout(layout, this.pageSize);
      if (this.st.state === 'committed') {
        // A verify fix-up: the committed image is about to change in place, so it stops being
        // committed first, durably, until the next commit.
        await this.persistState({ state: 'receiving' });
        log.info(`session ${this.id}: committed image reopened for round ${round} (${phase})`);
      }
      storeCounters.discardedPages += this.windows.dropOutside(checked);
      this.layoutNow = checked;
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
    const ps = this.pageSize;
    const total = checkRuns(runs, ps, this.layoutNow);
    if (!Buffer.isBuffer(data)) throw invalid('page data must be a Buffer');
    const zm = zeroMap && zeroMap.length > 0 ? zeroMap : null;
    let zeros = 0;
    if (zm) {
      const want = Math.ceil(total / 8);
      if (zm.length !== want) throw invalid(`zero map has ${zm.length} bytes for ${total} pages (expected ${want})`);
      zeros = countBits(zm, 0, total);
      if (countBits(zm, total, zm.length * 8) !== 0) throw invalid('zero map has bits set beyond the last page');
    }
    const expected = (total - zeros) * ps;
    if (data.length !== expected) {
      throw invalid(`page data is ${data.length} bytes; ${total - zeros} non-zero pages of ${ps} bytes need ${expected}`);
    }
    if (total === 0) return Promise.resolve();
    this.checkWindowBudget(runs);

    // Checked: mark the pages and plan one pwrite per contiguous run of non-zero pages.
    const writes: [window: number, pos: number, off: number, len: number][] = [];
    let off = 0;
    const storeData = (addr: number, n: number) => {
      this.windows.markData(addr, n);
      for (const [w, first, k] of this.windows.split(addr, n)) {
        writes.push([w, first * ps, off, k * ps]);
        off += k * ps;
      }
    };
    let idx = 0;
    for (let r = 0; r < runs.length; r += 2) {
      const start = runs[r];
      const count = runs[r + 1];
      if (!zm) storeData(start, count);
      else {
        for (let i = 0; i < count; ) {
          const zero = testBit(zm, idx + i);
          const j = nextBit(zm, idx + i, idx + count, !zero) - idx;
          if (zero) this.windows.markZero(start + i * ps, j - i);
          else storeData(start + i * ps, j - i);
          i = j;
        }
      }
      idx += count;
    }
    cur.bytes += expected;
    storeCounters.dataPages += total - zeros;
    storeCounters.zeroPages += zeros;

    // Re-sent pages: an earlier batch still being written to the same addresses must land first.
    const lo = runs[0];
    const hi = runs[runs.length - 2] + runs[runs.length - 1] * ps;
    const before = [...this.inflight].filter((f) => f.lo < hi && lo < f.hi).map((f) => f.settled);
    const done = (async () => {
      if (before.length > 0) await Promise.all(before);
      await Promise.all(writes.map(([w, pos, o, len]) => this.chunks.write(w, pos, data, o, len)));
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
      for (let r = 0; r < runs.length; r += 2) storeCounters.discardedPages += this.windows.clear(runs[r], runs[r + 1]);
    });
  }

  /** Make the open round durable; resolves only once everything is fsynced. */
  endRound(f: RoundFigures): Promise<RoundDurable> {
    return this.serial(async () => {
      this.checkWritable();
      const cur = this.current;
      if (!cur) throw badState(`end of round ${f?.round} without its start`);
      const figures = checkFigures(f);
      if (figures.round !== cur.round) throw badState(`end of round ${figures.round} but round ${cur.round} is open`);
      await this.drainWrites();
      if (this.broken) throw this.broken;
      await this.chunks.syncTouched();
      crashPoint('round-data-synced');
      const index = await this.persistBitmaps();
      crashPoint('round-bitmaps-written');
      const counts = this.windows.counts();
      const rec: RoundRecord = { round: cur.round, phase: cur.phase, endedAt: now(), figures };
      await this.persistState({
        lastDurableRound: cur.round,
        layout: this.layoutNow,
        windows: index,
        gen: this.nextGen - 1,
        imagePages: counts.dataPages + counts.zeroPages,
        dataPages: counts.dataPages,
        rounds: [...this.st.rounds, rec],
      });
      crashPoint('round-durable');
      this.current = null;
      storeCounters.roundsDurable++;
      await this.tidy();
      return { round: cur.round, pagesStored: counts.dataPages + counts.zeroPages, durableBytes: cur.bytes };
    });
  }

  /**
   * Commit the image: drop pages outside the final layout, recompute the digest from disk, and
   * only if it matches write the manifest atomically and mark the session committed. A mismatch
   * returns ok=false and leaves the session receiving, so the sender can fix pages and commit again.
   */
  commit(c: CommitRequest): Promise<CommitOutcome> {
    return this.serial(async () => {
      this.checkWritable();
      if (this.current) throw badState(`commit while round ${this.current.round} is open`);
      if (this.st.state !== 'receiving') throw badState(`session ${this.id} is ${this.st.state}; start a round before committing again`);
      const layout = checkLayout(c?.layout, this.pageSize);
      const threads = checkThreads(c.threads);
      if (typeof c.imageDigest !== 'bigint' || c.imageDigest < 0n || c.imageDigest > MASK64) throw invalid('image digest must be a 64-bit unsigned value');
      const imagePages = checkCount(c.imagePages, 'image pages');

      storeCounters.discardedPages += this.windows.dropOutside(layout);
      this.layoutNow = layout;
      let got: { digest: bigint; pages: number };
      try {
        got = await this.computeDigest();
      } catch (err) {
        if (err instanceof StoreError && err.code === 'INVALID') {
          return { ok: false, imageDigest: 0n, imagePages: 0, message: `image incomplete: ${err.message}` };
        }
        throw err;
      }
      crashPoint('commit-digest-checked');
      if (got.digest !== c.imageDigest || got.pages !== imagePages) {
        storeCounters.digestMismatches++;
        const message =
          `digest mismatch: receiver computed ${digestHex(got.digest)} over ${got.pages} pages, ` +
          `sender sent ${digestHex(c.imageDigest)} over ${imagePages} pages; session stays receiving`;
        log.warn(`session ${this.id}: ${message}`);
        return { ok: false, imageDigest: got.digest, imagePages: got.pages, message };
      }

      const index = await this.persistBitmaps();
      const counts = this.windows.counts();
      const commit = this.st.commit + 1;
      const manifest: ManifestFile = {
        format: FORMAT,
        sessionId: this.id,
        commit,
        committedAt: now(),
        pageSize: this.pageSize,
        layout,
        threads: threads.map((t) => ({ tid: t.tid, regs: t.regs.toString('base64'), fpregs: t.fpregs.toString('base64') })),
        imageDigest: digestHex(got.digest),
        imagePages: got.pages,
        dataPages: counts.dataPages,
        windows: index,
      };
      await atomicWrite(this.files.manifest, JSON.stringify(manifest, null, 1), { beforeRename: () => crashPoint('commit-manifest-tmp') });
      crashPoint('commit-manifest-renamed');
      await this.persistState({
        state: 'committed',
        commit,
        layout,
        windows: index,
        gen: this.nextGen - 1,
        imagePages: got.pages,
        dataPages: counts.dataPages,
        reason: undefined,
      });
      crashPoint('commit-done');
      storeCounters.commits++;
      await this.tidy();
      log.info(`session ${this.id}: committed ${got.pages} pages, digest ${digestHex(got.digest)}`);
      return { ok: true, imageDigest: got.digest, imagePages: got.pages, message: `committed ${got.pages} pages` };
    });
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

  // ---- reading ----

  /** The image digest and page count, recomputed from disk (native hashPages + digestPages). */
  digest(): Promise<{ digest: bigint; pages: number }> {
    return this.serial(async () => {
      await this.drainWrites();
      return this.computeDigest();
    });
  }

  /**
   * Read pages [start, start + count*pageSize) into `into`; presence[i] = 0 absent (zeros in into),
   * 1 data, 2 zero page.
   */
  readPages(start: number, count: number, into: Buffer, presence: Uint8Array): Promise<void> {
    return this.serial(async () => {
      const ps = this.pageSize;
      checkRuns([start, Math.max(count, 1)], ps, null);
      if (into.length < count * ps) throw invalid(`buffer of ${into.length} bytes is too small for ${count} pages`);
      if (presence.length < count) throw invalid(`presence array is shorter than ${count}`);
      await this.drainWrites(); // this handle's own pages still being written read back as written
      presence.fill(0, 0, count);
      const end = start + count * ps;
      let zeroedTo = start;
      const reads: Promise<void>[] = [];
      this.windows.forEachRun(
        'data',
        (addr, n) => {
          const i = (addr - start) / ps;
          into.fill(0, (zeroedTo - start), (addr - start));
          presence.fill(1, i, i + n);
          zeroedTo = addr + n * ps;
          reads.push(this.readData(addr, n, into, addr - start));
        },
        start,
        end,
      );
      into.fill(0, zeroedTo - start, count * ps);
      this.windows.forEachRun('zero', (addr, n) => presence.fill(2, (addr - start) / ps, (addr - start) / ps + n), start, end);
      await Promise.all(reads);
    });
  }

  /** Address ranges [start, end) of held pages (data or zero) inside [from, to), merged. */
  populatedRanges(from: number, to: number): [number, number][] {
    const runs: [number, number][] = [];
    const add = (addr: number, n: number) => runs.push([addr, addr + n * this.pageSize]);
    this.windows.forEachRun('data', add, from, to);
    this.windows.forEachRun('zero', add, from, to);
    runs.sort((a, b) => a[0] - b[0]);
    const out: [number, number][] = [];
    for (const r of runs) {
      const last = out[out.length - 1];
      if (last && r[0] <= last[1]) last[1] = Math.max(last[1], r[1]);
      else out.push([r[0], r[1]]);
    }
    return out;
  }

  /** The manifest of the committed image; BAD_STATE when the session is not committed. */
  async committedManifest(): Promise<ImageManifest> {
    if (this.st.state !== 'committed') throw badState(`session ${this.id} is ${this.st.state}, not committed`);
    const m = await this.readManifest();
    if (!m) throw badState(`session ${this.id} has no manifest.json`);
    if (m.commit !== this.st.commit) throw badState(`session ${this.id}: manifest.json does not belong to the current commit`);
    return m;
  }

  /** Committed, complete, and the digest recomputed from disk equals the manifest's. */
  async verify(): Promise<VerifyResult> {
    const problems: string[] = [];
    if (this.st.state !== 'committed') problems.push(`session is ${this.st.state}, not committed`);
    let manifest: ImageManifest | undefined;
    let windows: WindowIndex | undefined;
    try {
      const raw = await readJson<ManifestFile>(this.files.manifest);
      if (!raw) problems.push('no manifest.json');
      else {
        manifest = decodeManifest(raw, this.meta);
        windows = raw.windows;
      }
    } catch (err) {
      problems.push(`manifest.json is unreadable: ${(err as Error).message}`);
    }
    if (manifest && windows) {
      if (manifest.commit !== this.st.commit) problems.push(`manifest.json is from commit ${manifest.commit}, the state is at commit ${this.st.commit}`);
      if (JSON.stringify(windows) !== JSON.stringify(this.st.windows)) problems.push('manifest.json and state.json name different page bitmaps');
      const outside = this.windows.countOutside(manifest.layout);
      if (outside > 0) problems.push(`${outside} held pages lie outside the committed layout`);
    }
    let got: { digest: bigint; pages: number } | undefined;
    try {
      got = await this.digest();
    } catch (err) {
      problems.push((err as Error).message);
    }
    if (got && manifest) {
      if (got.pages !== manifest.imagePages) problems.push(`image holds ${got.pages} pages, the manifest says ${manifest.imagePages}`);
      if (got.digest !== manifest.imageDigest) {
        problems.push(`digest recomputed from disk ${digestHex(got.digest)} differs from the manifest's ${digestHex(manifest.imageDigest)}`);
      }
    }
    return { ok: problems.length === 0, problems, digest: got?.digest, pages: got?.pages, manifest };
  }

  /** Wait for pending work, close files, and release the session (writers). Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.tail.catch(noop);
    await this.drainWrites();
    await this.chunks.close();
    if (this.writable) await releaseSession(this.files.dir);
  }

  // ---- internals ----

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = async (): Promise<T> => {
      try {
        return await fn();
      } catch (err) {
        if (err instanceof StoreError && err.code !== 'IO' && err.code !== 'NO_SPACE') throw err;
        throw this.breakOn(err);
      }
    };
    const p = this.tail.then(run);
    this.tail = p.then(noop, noop);
    return p;
  }

  /**
   * A write or sync failed: the session is failed (recorded on disk if at all possible), later
   * calls get the same error. Returns the StoreError to throw.
   */
  private breakOn(err: unknown): StoreError {
    const se = ioError(err, `session ${this.id}`);
    if (this.writable && !this.broken && this.st.state === 'receiving') {
      this.broken = se;
      if (se.code === 'NO_SPACE') storeCounters.noSpace++;
      log.error(`session ${this.id} failed: ${se.message}`);
      // Queued: runs after the operation that hit the error.
      void this.serial(() => this.finish('failed', se.message)).catch((e: unknown) => log.error(`session ${this.id}: could not record the failure: ${(e as Error).message}`));
    }
    return se;
  }

  /**
   * Each address window holding pages costs 64 KiB of bitmaps in memory: a real process touches a
   * handful, a hostile layout spreading single pages over the address space could ask for GiBs.
   */
  private checkWindowBudget(runs: ArrayLike<number>): void {
    const fresh = new Set<number>();
    for (let r = 0; r < runs.length; r += 2) {
      for (const [w] of this.windows.split(runs[r], runs[r + 1])) if (!this.windows.get(w)) fresh.add(w);
    }
    if (this.windows.size + fresh.size > MAX_WINDOWS) {
      throw invalid(`pages spread over more than ${MAX_WINDOWS} address windows of ${this.windows.windowBytes / 2 ** 30} GiB`);
    }
  }

  private checkWritable(): void {
    if (this.closed) throw badState(`session ${this.id} is closed`);
    if (!this.writable) throw badState(`session ${this.id} was opened read-only`);
    if (this.broken) throw this.broken;
    if (this.st.state === 'failed' || this.st.state === 'aborted') throw badState(`session ${this.id} is ${this.st.state}${this.st.reason ? `: ${this.st.reason}` : ''}`);
  }

  private async drainWrites(): Promise<void> {
    while (this.inflight.size > 0) await Promise.all([...this.inflight].map((f) => f.settled));
  }

  /** Move to failed/aborted. A committed image stays committed (it is valid whatever happens next). */
  private async finish(state: 'failed' | 'aborted', reason: string): Promise<void> {
    if (this.closed) throw badState(`session ${this.id} is closed`);
    if (!this.writable) throw badState(`session ${this.id} was opened read-only`);
    if (this.st.state !== 'receiving') {
      log.info(`session ${this.id}: stays ${this.st.state} (asked to become ${state}: ${reason})`);
      return;
    }
    this.current = null;
    await this.drainWrites();
    reason = checkText(String(reason ?? ''), 'reason').slice(0, 1000);
    try {
      await this.persistState({ state, reason });
    } catch (err) {
      if (ioError(err, '').code !== 'NO_SPACE') throw err;
      // The disk is full and this session is over: give its page data back so its end can be recorded.
      log.warn(`session ${this.id}: disk full; freeing its page data to record that it ${state}`);
      await this.chunks.truncateAll();
      await this.persistState({ state, reason }).catch((e: unknown) => {
        this.st = { ...this.st, state, reason };
        throw e;
      });
    }
    log.info(`session ${this.id} ${state}: ${reason}`);
  }

  /** Replace state.json atomically with the current state plus patch. */
  private async persistState(patch: Partial<StateFile>): Promise<void> {
    const next: StateFile = { ...this.st, ...patch, updatedAt: now() };
    await atomicWrite(this.files.state, JSON.stringify(next));
    this.st = next;
  }

  /** Write changed windows' bitmaps as a new generation; returns the window index to make durable. */
  private async persistBitmaps(): Promise<WindowIndex> {
    const changed = this.windows.changed();
    const keep = changed.filter((w) => countBits(w.data) + countBits(w.zero) > 0);
    for (const w of changed) {
      w.changed = false;
      w.persisted = null;
    }
    if (keep.length > 0) {
      const gen = this.nextGen++;
      await writeFileSynced(this.files.generation(gen), encodeGeneration(keep));
      await fsyncDir(this.files.bitmaps);
      keep.forEach((w, slot) => (w.persisted = [gen, slot]));
    }
    return this.windows.nonEmpty().map((w) => [w.index, w.persisted![0], w.persisted![1]]);
  }

  /** After a durable change: remove bitmap generations and chunk files nothing refers to. */
  private async tidy(): Promise<void> {
    if (!this.writable) return;
    const used = new Set(this.st.windows.map((w) => w[1]));
    const names = await fsp.readdir(this.files.bitmaps).catch(() => [] as string[]);
    for (const name of names) {
      const gen = generationOf(name);
      if (gen === undefined || !used.has(gen)) await fsp.rm(path.join(this.files.bitmaps, name), { force: true });
    }
    for (const name of await fsp.readdir(this.files.dir)) {
      if (name.includes('.tmp-')) await fsp.rm(path.join(this.files.dir, name), { force: true });
    }
    const withData = new Set(this.windows.all().filter((w) => countBits(w.data) > 0).map((w) => w.index));
    await this.chunks.removeExcept(withData);
    this.windows.pruneEmpty();
  }

  /** Resume: forget what a crashed writer left beyond the durable state. */
  async tidyAfterCrash(): Promise<void> {
    await this.serial(() => this.tidy());
  }

  private async readData(addr: number, n: number, into: Uint8Array, off: number): Promise<void> {
    const ps = this.pageSize;
    for (const [w, first, k] of this.windows.split(addr, n)) {
      const len = k * ps;
      const got = await this.chunks.read(w, first * ps, into, off, len);
      if (got !== len) {
        const missing = w * WINDOW_PAGES * ps + first * ps + got;
        throw invalid(`data of page ${hex(missing - (missing % ps))} is missing from its chunk file`);
      }
      off += len;
    }
  }

  private computeDigest(): Promise<{ digest: bigint; pages: number }> {
    return digestFromDisk(this.windows, (addr, n, buf, off) => this.readData(addr, n, buf, off));
  }

  private async readManifest(): Promise<ImageManifest | undefined> {
    const raw = await readJson<ManifestFile>(this.files.manifest);
    return raw ? decodeManifest(raw, this.meta) : undefined;
  }
}


