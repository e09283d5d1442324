// One session's image as it is on disk, read-only: its metadata, durable state and round records,
// the pages it holds (presence bitmaps per address window, data in the chunk files), the committed
// manifest, and the image digest recomputed from disk. This is what list, verify, export and
// report open (ImageStore.open); it takes no lock, and sees the session as of the last durable
// change before it was opened (a writer may go on receiving it meanwhile). SessionWriter
// (session-writer.ts) extends it with receiving rounds and committing.
//
// Every operation of a handle runs in call order on one queue, which a writer's operations on
// the same handle share: a read after a write sees it.

import type { Vma } from '../common/vma';
import { digestHex } from '../common/image-digest';
import { ChunkFiles } from './chunk-files';
import type { PageReader } from './disk-digest';
import { readJson } from './durable-file';
import { checkRuns } from './input-checks';
import { FORMAT, decodeManifest, type ManifestFile, type SessionFiles, type StateFile, type WindowIndex } from './on-disk';
import { PageWindows, WINDOW_PAGES } from './page-windows';
import { loadWindows } from './bitmap-generations';
import { RunningDigest } from './running-digest';
import { StoreError, badState, invalid, ioError } from './store-error';
import type { ImageManifest, ImageVerification, RoundEnd, SessionMeta, SessionState, StoredRound } from './store-types';

const noop = () => undefined;
const hex = (n: number) => `0x${n.toString(16)}`;

/** What a session directory holds, read (ImageStore hands it to SessionReader or SessionWriter). */
export interface LoadedSession {
  meta: SessionMeta;
  st: StateFile;
  windows: PageWindows;
  report: Record<string, unknown> | undefined;
}

/** Read a session's metadata, durable state and presence bitmaps from disk. */
export async function loadSession(files: SessionFiles, id: string): Promise<LoadedSession> {
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
  return { meta, st, windows, report };
}

export class SessionReader {
  readonly meta: SessionMeta;
  /** The durable state (state.json) as of the last durable change this handle knows of. */
  protected st: StateFile;
  protected layoutNow: Vma[];
  protected readonly windows: PageWindows;
  protected reportRec: Record<string, unknown> | undefined;
  protected closed = false;
  private tail: Promise<unknown> = Promise.resolve();
  protected readonly pageReader: PageReader = (addr, n, buf, off) => this.readData(addr, n, buf, off);

  protected constructor(
    readonly id: string,
    protected readonly files: SessionFiles,
    s: LoadedSession,
    protected readonly chunks: ChunkFiles,
  ) {
    this.meta = s.meta;
    this.st = s.st;
    this.layoutNow = s.st.layout;
    this.windows = s.windows;
    this.reportRec = s.report;
  }

  /** Open a session for reading (ImageStore.open). */
  static async load(files: SessionFiles, id: string): Promise<SessionReader> {
    const s = await loadSession(files, id);
    return new SessionReader(id, files, s, new ChunkFiles(files.chunks, s.windows.windowBytes, false));
  }

  // ---- the session ----

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
  /** Pages held in memory now (data + zero), including a writer's open round's. */
  get imagePages(): number {
    const c = this.windows.counts();
    return c.dataPages + c.zeroPages;
  }
  /** The sender's figures of each durable round. */
  rounds(): RoundEnd[] {
    return this.st.rounds.map((r) => ({ ...r.figures }));
  }
  /** The durable rounds with their phase and end time. */
  roundRecords(): StoredRound[] {
    return this.st.rounds.map((r) => ({ ...r, figures: { ...r.figures } }));
  }
  /** The sender's final report, if it was recorded. */
  report(): Record<string, unknown> | undefined {
    return this.reportRec;
  }

  // ---- pages ----

  /** The image digest and page count, recomputed from disk (native hashPages + digestPages). */
  digest(): Promise<{ digest: bigint; pages: number }> {
    return this.serial(async () => {
      await this.settleWrites();
      return (await RunningDigest.fromDisk(this.windows, this.pageReader)).digest();
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
      await this.settleWrites(); // a writer's own pages still being written read back as written
      presence.fill(0, 0, count);
      const end = start + count * ps;
      let zeroedTo = start;
      const reads: Promise<void>[] = [];
      this.windows.forEachRun(
        'data',
        (addr, n) => {
          const i = (addr - start) / ps;
          into.fill(0, zeroedTo - start, addr - start);
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

  // ---- the committed image ----

  /** The manifest of the committed image; BAD_STATE when the session is not committed. */
  async committedManifest(): Promise<ImageManifest> {
    if (this.st.state !== 'committed') throw badState(`session ${this.id} is ${this.st.state}, not committed`);
    const m = await this.readManifest();
    if (!m) throw badState(`session ${this.id} has no manifest.json`);
    if (m.commit !== this.st.commit) throw badState(`session ${this.id}: manifest.json does not belong to the current commit`);
    return m;
  }

  /** Committed, complete, and the digest recomputed from disk equals the manifest's. */
  async verify(): Promise<ImageVerification> {
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

  /** Wait for pending work and close the files. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.tail.catch(noop);
    await this.settleWrites();
    await this.chunks.close();
  }

  // ---- internals (shared with the writer) ----

  /** Run fn after every operation called before it; a failure is a StoreError (see breakOn). */
  protected serial<T>(fn: () => Promise<T>): Promise<T> {
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

  /** An I/O failure as the StoreError to throw (a writer also marks the session failed). */
  protected breakOn(err: unknown): StoreError {
    return ioError(err, `session ${this.id}`);
  }

  /** Wait for this handle's page writes still in flight: a reader has none. */
  protected async settleWrites(): Promise<void> {}

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
