// The final round's journal (journal.jnl; docs/design.md, Final-round journal). The pages of a
// stop-and-copy or verify fix-up round are written in place as usual (so every reader, in this
// process or another, sees them through the page cache) and also appended here, one write per
// batch. The durable point of the round (its RoundEnd, or the Commit that ends it) then syncs this
// one sequential file instead of the round's scattered pages in the chunk files: a few hundred
// random 4 KiB writes cost the disk far more than one write of the same bytes. state.json names the
// journal ({round, bytes}) until the chunk files are synced (SessionWriter retires it right after
// the commit, off the downtime); a writer that opens a session whose state names one replays it
// into the chunk files first.
//
// Layout: a 32-byte header (magic, version, page size, round), then one record per batch: a 16-byte
// head (magic, entry count, data bytes), count entries of (window, pos, len) as u64, and the
// batch's data pages — exactly the bytes of those writes, back to back (page-batch.ts plans the
// writes over the data in order). Only the first `bytes` of the file count: they were synced
// before the state naming them was renamed into place.

import { constants as C, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { ChunkFiles } from './chunk-files';
import { fsyncDir } from './durable-file';
import type { PageWrite } from './page-batch';
import { invalid } from './store-error';
import { storeCounters } from './store-counters';

/** What state.json records of a journal whose pages may not be durable in the chunk files yet. */
export interface JournalRef {
  round: number;
  /** Valid bytes (header included). */
  bytes: number;
}

const MAGIC = Buffer.from('PCPYJRNL', 'latin1');
const VERSION = 1;
const HEADER = 32;
const RECORD_MAGIC = 0x4a425250; // 'PRBJ'
const RECORD_HEAD = 16;
const ENTRY = 24;
/**
 * A round with more data than this is not journaled: appending it would double the write of a
 * large final round (a freeze with much left to copy), where sequential chunk writes cost about
 * what the journal would. The small final round of a converged migration is far below it.
 */
export const JOURNAL_MAX_BYTES = 64 * 2 ** 20;

export function journalFile(sessionDir: string): string {
  return path.join(sessionDir, 'journal.jnl');
}

export class PageJournal {
  private end = HEADER;
  private readonly pending = new Set<Promise<void>>();
  /** Set once the round outgrew JOURNAL_MAX_BYTES: the round's pages go to the chunk files' sync. */
  private abandoned = false;

  private constructor(
    private readonly fh: fsp.FileHandle,
    readonly round: number,
  ) {}

  /**
   * Start the journal of `round` (an older one in the file is overwritten: no state names it).
   * The file is normally there already, its name durable (ensureJournalFile, at an earlier
   * round): inside the downtime, it then needs no directory sync.
   */
  static async create(sessionDir: string, round: number, pageSize: number): Promise<PageJournal> {
    const file = journalFile(sessionDir);
    const fh = await fsp.open(file, C.O_WRONLY | C.O_TRUNC).catch(async (err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
      await ensureJournalFile(sessionDir);
      return fsp.open(file, C.O_WRONLY | C.O_TRUNC);
    });
    try {
      const head = Buffer.alloc(HEADER);
      MAGIC.copy(head, 0);
      head.writeUInt32LE(VERSION, 8);
      head.writeUInt32LE(pageSize, 12);
      head.writeBigUInt64LE(BigInt(round), 16);
      await fh.write(head, 0, HEADER, 0);
    } catch (err) {
      await fh.close().catch(() => undefined);
      throw err;
    }
    return new PageJournal(fh, round);
  }

  /** Whether the round is still journaled (false once it outgrew JOURNAL_MAX_BYTES). */
  get active(): boolean {
    return !this.abandoned;
  }

  /**
   * Append a batch's writes (page-batch.ts: data holds their bytes in order). Positions are taken
   * in call order, so appends may overlap. Resolves when written (not synced).
   */
  append(writes: PageWrite[], data: Buffer): Promise<void> {
    if (this.abandoned || writes.length === 0) return Promise.resolve();
    const dataBytes = writes.reduce((n, w) => n + w[3], 0);
    if (this.end + RECORD_HEAD + writes.length * ENTRY + dataBytes > HEADER + JOURNAL_MAX_BYTES) {
      this.abandoned = true;
      return Promise.resolve();
    }
    const head = Buffer.alloc(RECORD_HEAD + writes.length * ENTRY);
    head.writeUInt32LE(RECORD_MAGIC, 0);
    head.writeUInt32LE(writes.length, 4);
    writeU64(head, 8, dataBytes);
    writes.forEach(([w, pos, , len], i) => {
      const at = RECORD_HEAD + i * ENTRY;
      writeU64(head, at, w);
      writeU64(head, at + 8, pos);
      writeU64(head, at + 16, len);
    });
    const first = writes[0][2];
    const at = this.end;
    this.end += head.length + dataBytes;
    const p = writevFull(this.fh, [head, data.subarray(first, first + dataBytes)], at);
    const settled = p.then(
      () => void (storeCounters.journalBytes += head.length + dataBytes),
      () => undefined,
    );
    this.pending.add(settled);
    void settled.then(() => this.pending.delete(settled));
    return p;
  }

  /** What the state records of this journal once the appends so far are synced. */
  get ref(): JournalRef {
    return { round: this.round, bytes: this.end };
  }

  /** Make what was appended durable. */
  async sync(): Promise<void> {
    await Promise.all(this.pending);
    await this.fh.datasync();
    storeCounters.fsyncs++;
  }

  /** Close the file, emptied: no state names it any more (the file stays for the next round). */
  async discard(): Promise<void> {
    await Promise.all(this.pending);
    try {
      await this.fh.truncate(0);
    } finally {
      await this.fh.close();
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.pending);
    await this.fh.close();
  }
}

/** Create the journal file if it is not there and make its name durable (a writer does it once,
 *  at a round outside the downtime; a file found there may be a crashed writer's, not yet synced). */
export async function ensureJournalFile(sessionDir: string): Promise<void> {
  await (await fsp.open(journalFile(sessionDir), C.O_WRONLY | C.O_CREAT, 0o600)).close();
  await fsyncDir(sessionDir);
}

/** A safe integer as a little-endian u64 (no BigInt: a thousand-page batch has 3000 of them). */
function writeU64(buf: Buffer, at: number, v: number): void {
  buf.writeUInt32LE(v % 2 ** 32, at);
  buf.writeUInt32LE(Math.floor(v / 2 ** 32), at + 4);
}

async function writevFull(fh: fsp.FileHandle, bufs: Buffer[], pos: number): Promise<void> {
  for (;;) {
    const { bytesWritten } = await fh.writev(bufs, pos);
    let left = bytesWritten;
    pos += bytesWritten;
    while (bufs.length > 0 && left >= bufs[0].length) left -= bufs.shift()!.length;
    if (bufs.length === 0) return;
    if (bytesWritten <= 0) throw Object.assign(new Error('write returned 0 bytes'), { code: 'EIO' });
    bufs[0] = bufs[0].subarray(left);
  }
}

/**
 * Write the pages a journal holds into the chunk files and sync them (a writer opening a session
 * whose state names the journal: the crash may have lost the in-place writes). Returns the pages
 * written. Everything is checked before anything is written.
 */
export async function replayJournal(sessionDir: string, ref: JournalRef, pageSize: number, chunks: ChunkFiles, windowBytes: number): Promise<number> {
  const file = journalFile(sessionDir);
  let buf: Buffer;
  try {
    buf = await fsp.readFile(file);
  } catch (err) {
    throw invalid(`the final-round journal ${file} named by state.json cannot be read: ${(err as Error).message}`);
  }
  const damaged = (why: string) => invalid(`the final-round journal ${file} is damaged: ${why}`);
  if (!Number.isSafeInteger(ref?.bytes) || ref.bytes < HEADER || buf.length < ref.bytes)
    throw damaged(`${buf.length} bytes, state.json names ${String(ref?.bytes)}`);
  if (!buf.subarray(0, 8).equals(MAGIC) || buf.readUInt32LE(8) !== VERSION) throw damaged('not a journal of this format');
  if (buf.readUInt32LE(12) !== pageSize) throw damaged(`page size ${buf.readUInt32LE(12)}, the session's is ${pageSize}`);
  if (Number(buf.readBigUInt64LE(16)) !== ref.round) throw damaged(`it is round ${buf.readBigUInt64LE(16)}'s, state.json names round ${ref.round}`);

  const writes: { w: number; pos: number; off: number; len: number }[] = [];
  let at = HEADER;
  while (at < ref.bytes) {
    if (at + RECORD_HEAD > ref.bytes || buf.readUInt32LE(at) !== RECORD_MAGIC) throw damaged(`no record at byte ${at}`);
    const count = buf.readUInt32LE(at + 4);
    const dataBytes = Number(buf.readBigUInt64LE(at + 8));
    let off = at + RECORD_HEAD + count * ENTRY;
    if (count === 0 || off + dataBytes > ref.bytes) throw damaged(`record at byte ${at} overruns the journal`);
    let sum = 0;
    for (let i = 0; i < count; i++) {
      const e = at + RECORD_HEAD + i * ENTRY;
      const w = Number(buf.readBigUInt64LE(e));
      const pos = Number(buf.readBigUInt64LE(e + 8));
      const len = Number(buf.readBigUInt64LE(e + 16));
      if (!Number.isSafeInteger(w * windowBytes) || len <= 0 || len % pageSize !== 0 || pos % pageSize !== 0 || pos + len > windowBytes) {
        throw damaged(`record at byte ${at} has a bad entry (window ${w}, pos ${pos}, ${len} bytes)`);
      }
      writes.push({ w, pos, off, len });
      off += len;
      sum += len;
    }
    if (sum !== dataBytes) throw damaged(`record at byte ${at} holds ${dataBytes} data bytes, its entries ${sum}`);
    at = off;
  }
  let pages = 0;
  // In journal order: a page written twice in the round ends with its later copy.
  for (const x of writes) {
    await chunks.write(x.w, x.pos, buf, x.off, x.len);
    pages += x.len / pageSize;
  }
  await chunks.syncTouched();
  return pages;
}

/** Empty the journal file, if there is one (no state names it any more). */
export async function emptyJournal(sessionDir: string): Promise<void> {
  await fsp.truncate(journalFile(sessionDir), 0).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
}
