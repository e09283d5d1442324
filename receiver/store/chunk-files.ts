// The data pages of an image: one sparse file per address window (chunks/<window base hex>.dat),
// a page at (page index in window * page size). Writes are one pwrite per contiguous run of
// non-zero pages, straight from the caller's buffer, several in flight on the libuv pool; files
// touched since the last sync are fdatasync'ed together when a round ends.

import { constants as C, promises as fsp, writeSync } from 'node:fs';
import * as path from 'node:path';
import { fsyncDir, preadFull, pwriteFull } from './durable-file';
import { storeCounters } from './store-counters';

/** Keep at most this many chunk files open; idle ones beyond it are synced and closed. */
const MAX_OPEN = 256;
/**
 * Writes up to this size go straight from the main thread: a pool round trip costs more than
 * copying a few pages, and batches with interleaved zero pages are many short runs.
 */
const SYNC_WRITE_MAX = 64 * 1024;

interface Entry {
  fh: Promise<fsp.FileHandle>;
  busy: number;
  /** Set once the file is open. */
  fd?: number;
  /** Settles when the last write queued on this file is done (one write in flight per file). */
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
      const entry: Entry = { fh, busy: 0, tail: Promise.resolve() };
      e = entry;
      this.open.set(w, e);
      fh.then((h) => (entry.fd = h.fd), () => undefined);
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
          await fh.close();
        })
        .finally(() => this.evictions.delete(p));
      this.evictions.add(p);
    }
  }

  /**
   * pwrite buf[off, off+len) at byte `pos` of window w's chunk file. Writes to one file are
   * queued one at a time: buffered writes to an inode serialize on its lock anyway, and several
   * pool threads spinning on that lock cost a 2-core machine most of its write throughput.
   */
  write(w: number, pos: number, buf: Buffer, off: number, len: number): Promise<void> {
    const e = this.acquire(w, true);
    this.touched.add(w);
    if (e.fd !== undefined && len <= SYNC_WRITE_MAX) {
      try {
        for (let done = 0; done < len; ) done += writeSync(e.fd, buf, off + done, len - done, pos + done);
        storeCounters.bytesWritten += len;
        return Promise.resolve();
      } catch (err) {
        return Promise.reject(err);
      } finally {
        e.busy--;
      }
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
      await (await e.fh).close().catch(() => undefined);
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
    await Promise.all(entries.map((e) => e.fh.then((fh) => fh.close()).catch(() => undefined)));
  }
}
