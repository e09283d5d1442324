// The data pages of an image: one sparse file per address window (chunks/<window base hex>.dat),
// a page at (page index in window * page size). Writes are one pwrite per contiguous run of
// non-zero pages, several in flight on the libuv pool; files touched since the last sync are
// fdatasync'ed together when a round ends. Large runs go through O_DIRECT from a page-aligned
// staging buffer (aligned-staging.ts says why); short ones are buffered writes from the caller's
// buffer, a batch's short runs of one file in one pool job (native writeRuns). Both kinds may hit
// the same file and pages: Linux keeps them coherent (a direct write writes back and drops the
// cached pages it covers), and the round's fdatasync covers both.

import { constants as C, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { bufferedWritesOnly } from '../common/fault-injection';
import { writeRuns, writeStaged } from '../native';
import { logger } from '../common/log';
import { DIRECT_ALIGN, STAGING_BYTES, stagingPool } from './aligned-staging';
import { fsyncDir, preadFull, pwriteFull } from './durable-file';
import type { PageWrite } from './page-batch';
import { storeCounters } from './store-counters';

const log = logger('store');

/** Keep at most this many chunk files open; idle ones beyond it are synced and closed. */
const MAX_OPEN = 256;
/** Writes up to this size are buffered and gathered per file (writeAll): O_DIRECT pays for
 *  large runs only, and a batch of scattered pages is many short ones. */
const SMALL_WRITE_MAX = 64 * 1024;

interface Entry {
  fh: Promise<fsp.FileHandle>;
  busy: number;
  /** A second descriptor opened with O_DIRECT for large writes (null: the file system refused it). */
  direct?: Promise<fsp.FileHandle | null>;
  /** Settles when the last buffered write queued on this file is done (one in flight per file). */
  tail: Promise<void>;
}

export class ChunkFiles {
  private readonly open = new Map<number, Entry>();
  /** Windows written since their last fdatasync. */
  private readonly touched = new Set<number>();
  /** A chunk file was created since the directory was last fsynced. */
  private created = false;
  /** fdatasync+close of evicted handles still running. */
  private readonly evictions = new Set<Promise<void>>();
  /**
   * Large writes use O_DIRECT until the file system or the buffer alignment says EINVAL.
   * PRECOPY_FAULT_BUFFERED_WRITES=1 turns it off (a file system where O_DIRECT is slow; benchmarks).
   */
  private directIo = !bufferedWritesOnly();

  constructor(
    readonly dir: string,
    private readonly windowBytes: number,
    private readonly writable: boolean,
  ) {}

  fileOf(w: number): string {
    return path.join(this.dir, `${(w * this.windowBytes).toString(16).padStart(12, '0')}.dat`);
  }

  private acquire(w: number, create: boolean): Entry {
    let e = this.open.get(w);
    if (!e) {
      if (this.open.size >= MAX_OPEN) this.evictIdle();
      const flags = this.writable ? C.O_RDWR | (create ? C.O_CREAT : 0) : C.O_RDONLY;
      const fh = fsp.open(this.fileOf(w), flags, 0o600);
      if (create) this.created = true;
      e = { fh, busy: 0, tail: Promise.resolve() };
      this.open.set(w, e);
      // A failed open must not stay cached (ENOENT on read, EMFILE...): the next call retries.
      fh.catch(() => {
        if (this.open.get(w) === e) this.open.delete(w);
      });
    }
    e.busy++;
    return e;
  }

  private evictIdle(): void {
    for (const [w, e] of this.open) {
      if (this.open.size < MAX_OPEN / 2) break;
      if (e.busy > 0) continue;
      this.open.delete(w);
      const dirty = this.touched.delete(w);
      const p = e.fh
        .then(async (fh) => {
          if (dirty) {
            await fh.datasync();
            storeCounters.fsyncs++;
          }
          await closeEntry(e);
        })
        .finally(() => this.evictions.delete(p));
      this.evictions.add(p);
    }
  }

  /**
   * pwrite buf[off, off+len) at byte `pos` of window w's chunk file. Buffered writes to one file
   * are queued one at a time: they serialize on the inode's lock anyway, and several pool threads
   * spinning on that lock cost a 2-core machine most of its write throughput.
   */
  write(w: number, pos: number, buf: Buffer, off: number, len: number): Promise<void> {
    const e = this.acquire(w, true);
    this.touched.add(w);
    if (len > SMALL_WRITE_MAX && this.directIo && pos % DIRECT_ALIGN === 0 && len % DIRECT_ALIGN === 0) {
      // Not queued behind the file's buffered writes: O_DIRECT writes of disjoint ranges do not
      // contend like buffered ones, the staging buffers bound how many run at once, and the
      // caller never has two writes of the same pages in flight (SessionWriter orders re-sends).
      return this.writeDirect(w, e, buf, off, len, pos)
        .then(() => void (storeCounters.bytesWritten += len))
        .finally(() => e.busy--);
    }
    const done = e.tail.then(async () => {
      try {
        await pwriteFull(await e.fh, buf, off, len, pos);
        storeCounters.bytesWritten += len;
      } finally {
        e.busy--;
      }
    });
    e.tail = done.catch(() => undefined);
    return done;
  }

  /**
   * A batch's writes (page-batch.ts: window, position, offset in data, length). The large ones go
   * as write() does; the short ones of each file go as one pool job, queued like a buffered
   * write: a few hundred scattered pages cost a job per file, not a write call each on the JS
   * thread, which a commit would wait for (docs/design.md, Final round).
   */
  writeAll(writes: readonly PageWrite[], data: Buffer): Promise<void> {
    const small = new Map<number, number[]>();
    const done: Promise<void>[] = [];
    for (const [w, pos, off, len] of writes) {
      if (len > SMALL_WRITE_MAX) {
        done.push(this.write(w, pos, data, off, len));
        continue;
      }
      const triples = small.get(w) ?? [];
      triples.push(off, len, pos);
      small.set(w, triples);
    }
    for (const [w, triples] of small) done.push(this.writeShort(w, data, Float64Array.from(triples)));
    return Promise.all(done).then(() => undefined);
  }

  private writeShort(w: number, data: Buffer, runs: Float64Array): Promise<void> {
    const e = this.acquire(w, true);
    this.touched.add(w);
    const done = e.tail.then(async () => {
      try {
        storeCounters.bytesWritten += await writeRuns((await e.fh).fd, data, runs);
      } finally {
        e.busy--;
      }
    });
    e.tail = done.catch(() => undefined);
    return done;
  }

  /** write() through the O_DIRECT descriptor, STAGING_BYTES at a time via a staging buffer; the
   *  copy and the write both on a libuv pool thread (native writeStaged). */
  private async writeDirect(w: number, e: Entry, buf: Buffer, off: number, len: number, pos: number): Promise<void> {
    const dh = await this.directHandle(w, e);
    for (let done = 0; done < len;) {
      const n = Math.min(STAGING_BYTES, len - done);
      if (!dh || !this.directIo) return pwriteFull(await e.fh, buf, off + done, len - done, pos + done);
      const slot = await stagingPool.take();
      try {
        await writeStaged(dh.fd, buf, off + done, n, pos + done, slot);
        storeCounters.bytesWrittenDirect += n;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
        this.directOff(err); // this piece and the rest go buffered (rewriting any part written)
        continue;
      } finally {
        stagingPool.release(slot);
      }
      done += n;
    }
  }

  private directHandle(w: number, e: Entry): Promise<fsp.FileHandle | null> {
    e.direct ??= e.fh
      .then(
        () => fsp.open(this.fileOf(w), C.O_WRONLY | C.O_DIRECT),
        () => null,
      )
      .catch((err: unknown) => {
        if ((err as NodeJS.ErrnoException).code === 'EINVAL') this.directOff(err);
        return null; // any other refusal (EMFILE...): buffered writes for this file
      });
    return e.direct;
  }

  private directOff(err: unknown): void {
    if (!this.directIo) return;
    this.directIo = false;
    log.info(`${this.dir}: O_DIRECT refused (${(err as Error).message}); page data goes through the page cache`);
  }

  /** pread len bytes at `pos` of window w; returns bytes read (short when the file is shorter). */
  async read(w: number, pos: number, into: Uint8Array, off: number, len: number): Promise<number> {
    let e: Entry;
    try {
      e = this.acquire(w, false);
      await e.fh;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
      throw err;
    }
    try {
      const n = await preadFull(await e.fh, into, off, len, pos);
      storeCounters.bytesRead += n;
      return n;
    } finally {
      e.busy--;
    }
  }

  /** fdatasync every chunk file written since the last sync (and the directory if files were created). */
  async syncTouched(): Promise<void> {
    await Promise.all([...this.evictions]);
    const ws = [...this.touched];
    this.touched.clear();
    await Promise.all(
      ws.map(async (w) => {
        const e = this.open.get(w);
        if (!e) return; // evicted: synced on eviction
        await (await e.fh).datasync();
        storeCounters.fsyncs++;
      }),
    );
    if (this.created) {
      this.created = false;
      await fsyncDir(this.dir);
    }
  }

  /** Remove chunk files of windows that hold no data any more (space after munmap, discard). */
  async removeExcept(keep: Set<number>): Promise<void> {
    let names: string[];
    try {
      names = await fsp.readdir(this.dir);
    } catch {
      return;
    }
    for (const name of names) {
      const m = /^([0-9a-f]{12,16})\.dat$/.exec(name);
      if (!m) continue;
      const w = parseInt(m[1], 16) / this.windowBytes;
      if (!keep.has(w)) await this.remove(w, path.join(this.dir, name));
    }
  }

  /** Remove the chunk files of these windows, if they exist (no directory listing). */
  async removeWindows(ws: number[]): Promise<void> {
    for (const w of ws) await this.remove(w);
  }

  private async remove(w: number, file = this.fileOf(w)): Promise<void> {
    const e = this.open.get(w);
    if (e && e.busy > 0) return;
    if (e) {
      this.open.delete(w);
      this.touched.delete(w);
      await closeEntry(e).catch(() => undefined);
    }
    await fsp.rm(file, { force: true });
  }

  /** Free the space of every chunk file (a failed session that must record its state on a full disk). */
  async truncateAll(): Promise<void> {
    await this.close();
    const names = await fsp.readdir(this.dir).catch(() => [] as string[]);
    for (const name of names) if (name.endsWith('.dat')) await fsp.truncate(path.join(this.dir, name), 0).catch(() => undefined);
  }

  async close(): Promise<void> {
    await Promise.all([...this.evictions].map((p) => p.catch(() => undefined)));
    const entries = [...this.open.values()];
    this.open.clear();
    this.touched.clear();
    await Promise.all(entries.map((e) => closeEntry(e).catch(() => undefined)));
  }
}

/** Close a chunk file's descriptors (the O_DIRECT one too, if it was opened). */
async function closeEntry(e: Entry): Promise<void> {
  const direct = await e.direct?.catch(() => null);
  await Promise.all([direct?.close(), e.fh.then((fh) => fh.close())]);
}
