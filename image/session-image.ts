// One session's image: the pages received so far, the round being received, and the durable
// state on disk. Every operation runs in arrival order (one queue per session); page writes are
// issued in order but complete in the background so that the next batch can be decoded meanwhile.
//
// Durability protocol of a round (endRound): wait for the round's page writes; then, in parallel,
// fdatasync the chunk files touched, write the changed presence bitmaps as a new generation file
// (fsync), and write the next state.json (last durable round, layout, window index naming that
// generation) under a temporary name (fsync); once all three are durable, rename it over
// state.json: the round's commit point. A crash before that rename leaves the previous round's
// state; pages overwritten in place meanwhile were dirtied after that round, so a resuming sender
// sends them again and the commit digest proves the result.
//
// The image digest is kept as pages arrive (running-digest.ts), so a commit — inside the
// migration's downtime — costs a comparison and the manifest and state files, not a read of the
// whole image; verify recomputes the digest from disk.

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { Vma } from '../common/vma';
import { digestHex } from '../common/image-digest';
import { logger } from '../common/log';
import { hashPages } from '../native';
import { PHASES, type Phase } from '../proto/messages';
import { countBits, isEmpty, nextBit, testBit } from './bitmap';
import { ChunkFiles } from './chunk-files';
import { crashPoint } from './crash-hook';
import type { PageReader } from './disk-digest';
import { atomicWrite, fsyncDir, readJson, replaceInOrder, writeFileSynced } from './durable-file';
import { checkCount, checkFigures, checkLayout, checkRuns, checkText, checkThreads } from './input-checks';
import { FORMAT, decodeManifest, generationOf, type ManifestFile, type RoundRecord, type SessionFiles, type StateFile, type WindowIndex } from './on-disk';
import { PageWindows, WINDOW_PAGES } from './page-windows';
import { encodeGeneration, loadWindows } from './bitmap-generations';
import { RunningDigest } from './running-digest';
import { releaseSession } from './session-lock';
import { StoreError, badState, invalid, ioError } from './store-error';
import { storeCounters } from './store-counters';
import {
  type CommitOutcome,
  type CommitRequest,
  type ImageManifest,
  type RoundDurable,
  type RoundFigures,
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
  /** The digest of what the windows hold, kept as pages change (writers only; see load). */
  private running: RunningDigest | null = null;
  /** Scratch for the content hashes of a batch's data pages (grown as needed). */
  private hashes = new BigUint64Array(256);
  /** Unlinks of bitmap generations nothing refers to any more, not waited for by the round. */
  private readonly unlinking = new Set<Promise<void>>();
  private readonly reader: PageReader = (addr, n, buf, off) => this.readData(addr, n, buf, off);

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
      storeCounters.discardedPages += (await this.ensureDigest()).dropOutside(checked);
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

    // Checked: split the runs into data and zero runs, hash the data pages (the running digest),
    // mark them all, and plan one pwrite per contiguous run of data pages.
    const dataRuns: number[] = [];
    const zeroRuns: number[] = [];
    let idx = 0;
    for (let r = 0; r < runs.length; r += 2) {
      const start = runs[r];
      const count = runs[r + 1];
      if (!zm) dataRuns.push(start, count);
      else {
        for (let i = 0; i < count; ) {
          const zero = testBit(zm, idx + i);
          const j = nextBit(zm, idx + i, idx + count, !zero) - idx;
          (zero ? zeroRuns : dataRuns).push(start + i * ps, j - i);
          i = j;
        }
      }
      idx += count;
    }
    const hashes = this.hashScratch(total - zeros);
    if (total > zeros) hashPages(data, ps, hashes);
    this.held().markZero(zeroRuns);
    this.held().markData(dataRuns, hashes);
    const writes: [window: number, pos: number, off: number, len: number][] = [];
    let off = 0;
    for (let r = 0; r < dataRuns.length; r += 2) {
      for (const [w, first, k] of this.windows.split(dataRuns[r], dataRuns[r + 1])) {
        writes.push([w, first * ps, off, k * ps]);
        off += k * ps;
      }
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
      for (let r = 0; r < runs.length; r += 2) storeCounters.discardedPages += this.held().clear(runs[r], runs[r + 1]);
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
      const bitmaps = this.planBitmaps();
      const counts = this.held().counts();
      const rec: RoundRecord = { round: cur.round, phase: cur.phase, endedAt: now(), figures };
      const before = this.st.windows;
      const next = this.nextState({
        lastDurableRound: cur.round,
        layout: this.layoutNow,
        windows: bitmaps.index,
        gen: this.nextGen - 1,
        imagePages: counts.dataPages + counts.zeroPages,
        dataPages: counts.dataPages,
        rounds: [...this.st.rounds, rec],
      });
      await replaceInOrder(
        [{ file: this.files.state, data: JSON.stringify(next) }],
        [this.chunks.syncTouched().then(() => crashPoint('round-data-synced')), bitmaps.write().then(() => crashPoint('round-bitmaps-written'))],
      );
      this.st = next;
      crashPoint('round-durable');
      this.current = null;
      storeCounters.roundsDurable++;
      await this.forgetUnused(before);
      return { round: cur.round, pagesStored: counts.dataPages + counts.zeroPages, durableBytes: cur.bytes };
    });
  }

  /**
   * Commit the image: drop pages outside the final layout, compare the running digest with the
   * sender's, and only if it matches write the manifest and mark the session committed (both
   * files fsynced in parallel, then renamed in that order). A mismatch returns ok=false and leaves
   * the session receiving, so the sender can fix pages and commit again.
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
        return { ok: false, imageDigest: got.digest, imagePages: got.pages, message };
      }

      const bitmaps = this.planBitmaps();
      const counts = held.counts();
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
        windows: bitmaps.index,
      };
      const before = this.st.windows;
      const next = this.nextState({
        state: 'committed',
        commit,
        layout,
        windows: bitmaps.index,
        gen: this.nextGen - 1,
        imagePages: got.pages,
        dataPages: counts.dataPages,
        reason: undefined,
      });
      await replaceInOrder(
        [
          { file: this.files.manifest, data: JSON.stringify(manifest, null, 1), beforeRename: () => crashPoint('commit-manifest-tmp') },
          { file: this.files.state, data: JSON.stringify(next), beforeRename: () => crashPoint('commit-manifest-renamed') },
        ],
        [bitmaps.write()],
      );
      this.st = next;
      crashPoint('commit-done');
      storeCounters.commits++;
      await this.forgetUnused(before);
      log.info(`session ${this.id}: committed ${got.pages} pages, digest ${digestHex(got.digest)}`);
      return { ok: true, imageDigest: got.digest, imagePages: got.pages, message: `committed ${got.pages} pages` };
    });
  }

  /**
   * The running digest and page count (writers): what commit compares with the sender's. As of
   * the operations called before (writePages calls apply in call order, before their data is written).
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

  // ---- reading ----

  /** The image digest and page count, recomputed from disk (native hashPages + digestPages). */
  digest(): Promise<{ digest: bigint; pages: number }> {
    return this.serial(async () => {
      await this.drainWrites();
      return (await RunningDigest.fromDisk(this.windows, this.reader)).digest();
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
    await Promise.all(this.unlinking);
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

  /**
   * The running digest. A reopened session (resume after a crash or a broken stream) rebuilds it
   * once from the pages on disk, at its first round or commit — not at resume itself, which may be
   * only to abort it — so that no commit ever reads the image back. A new session has nothing to read.
   */
  private async ensureDigest(): Promise<RunningDigest> {
    if (this.running) return this.running;
    if (!this.writable) throw badState(`session ${this.id} was opened read-only`);
    const t0 = process.hrtime.bigint();
    try {
      this.running = await RunningDigest.fromDisk(this.windows, this.reader);
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

  /** The current state plus patch (not yet on disk). */
  private nextState(patch: Partial<StateFile>): StateFile {
    return { ...this.st, ...patch, updatedAt: now() };
  }

  /** Replace state.json atomically with the current state plus patch. */
  private async persistState(patch: Partial<StateFile>): Promise<void> {
    const next = this.nextState(patch);
    await atomicWrite(this.files.state, JSON.stringify(next));
    this.st = next;
  }

  /**
   * The next bitmap generation: the windows changed since they were last persisted, numbered and
   * slotted now, so that the window index naming them (returned) can go into state.json while
   * write() makes the generation file durable. Nothing to write when no changed window holds pages.
   */
  private planBitmaps(): { index: WindowIndex; write: () => Promise<void> } {
    const changed = this.windows.changed();
    const keep = changed.filter((w) => !isEmpty(w.data) || !isEmpty(w.zero));
    for (const w of changed) {
      w.changed = false;
      w.persisted = null;
    }
    let write = () => Promise.resolve();
    if (keep.length > 0) {
      const gen = this.nextGen++;
      const bytes = encodeGeneration(keep);
      keep.forEach((w, slot) => (w.persisted = [gen, slot]));
      write = async () => {
        await writeFileSynced(this.files.generation(gen), bytes);
        await fsyncDir(this.files.bitmaps);
      };
    }
    return { index: this.windows.nonEmpty().map((w) => [w.index, w.persisted![0], w.persisted![1]]), write };
  }

  /**
   * After a durable change (the state before it had window index `before`): drop what nothing
   * refers to any more. Bitmap generations only `before` named are unlinked in the background —
   * this writer never reuses their numbers; close() and the full tidy wait for them — so the
   * round's ack does not wait for the directory update. Chunk files of windows left without data
   * are removed now: a write to such a window must not race the removal.
   */
  private async forgetUnused(before: WindowIndex): Promise<void> {
    const used = new Set(this.st.windows.map((w) => w[1]));
    for (const gen of new Set(before.map((w) => w[1]))) {
      if (used.has(gen)) continue;
      const p = fsp
        .rm(this.files.generation(gen), { force: true })
        .catch((err: unknown) => log.warn(`session ${this.id}: could not remove an old page bitmap: ${(err as Error).message}`))
        .finally(() => this.unlinking.delete(p));
      this.unlinking.add(p);
    }
    await this.chunks.removeWindows(this.windows.all().filter((w) => isEmpty(w.data)).map((w) => w.index));
    this.windows.pruneEmpty();
  }

  /** Remove bitmap generations and chunk files nothing refers to, and leftover temporary files. */
  private async tidy(): Promise<void> {
    if (!this.writable) return;
    await Promise.all(this.unlinking);
    const used = new Set(this.st.windows.map((w) => w[1]));
    const names = await fsp.readdir(this.files.bitmaps).catch(() => [] as string[]);
    for (const name of names) {
      const gen = generationOf(name);
      if (gen === undefined || !used.has(gen)) await fsp.rm(path.join(this.files.bitmaps, name), { force: true });
    }
    for (const name of await fsp.readdir(this.files.dir)) {
      if (name.includes('.tmp-')) await fsp.rm(path.join(this.files.dir, name), { force: true });
    }
    const withData = new Set(this.windows.all().filter((w) => !isEmpty(w.data)).map((w) => w.index));
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

  private async readManifest(): Promise<ImageManifest | undefined> {
    const raw = await readJson<ManifestFile>(this.files.manifest);
    return raw ? decodeManifest(raw, this.meta) : undefined;
  }
}


