// Small durability primitives: every file whose content defines a durable state is written to a
// temporary name, fsynced, renamed over the old one, and the directory fsynced, so that a crash
// leaves the old or the new version, never a torn one.

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { storeCounters } from './store-counters';

/** fsync a directory so that names created, renamed or removed in it are durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, 'r');
  try {
    await fh.sync();
    storeCounters.fsyncs++;
  } finally {
    await fh.close();
  }
}

/** Write data to file fully and fsync it (a new file or one replaced as a whole). */
export async function writeFileSynced(file: string, data: Uint8Array | string, flags = 'w'): Promise<void> {
  const fh = await fsp.open(file, flags, 0o600);
  try {
    await fh.writeFile(data);
    await fh.sync();
    storeCounters.fsyncs++;
  } finally {
    await fh.close();
  }
}

/**
 * Replace `file` atomically: temp file in the same directory, fsync, rename, fsync the directory
 * (skip the last step with syncDir=false when the caller fsyncs the directory once for several).
 * Hook, if given, runs between the temp file being durable and the rename (crash-test points).
 */
export async function atomicWrite(
  file: string,
  data: Uint8Array | string,
  opts: { syncDir?: boolean; beforeRename?: () => void } = {},
): Promise<void> {
  const tmp = `${file}.tmp-${randomBytes(4).toString('hex')}`;
  try {
    await writeFileSynced(tmp, data, 'wx');
    opts.beforeRename?.();
    await fsp.rename(tmp, file);
  } catch (err) {
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
  if (opts.syncDir !== false) await fsyncDir(path.dirname(file));
}

/** pwrite all of buf[off, off+len) at pos, looping over short writes. */
export async function pwriteFull(fh: fsp.FileHandle, buf: Buffer, off: number, len: number, pos: number): Promise<void> {
  while (len > 0) {
    const { bytesWritten } = await fh.write(buf, off, len, pos);
    if (bytesWritten <= 0) throw Object.assign(new Error('write returned 0 bytes'), { code: 'EIO' });
    off += bytesWritten;
    pos += bytesWritten;
    len -= bytesWritten;
  }
}

/** pread up to len bytes at pos into buf[off..]; returns the bytes read (short only at end of file). */
export async function preadFull(fh: fsp.FileHandle, buf: Uint8Array, off: number, len: number, pos: number): Promise<number> {
  let done = 0;
  while (done < len) {
    const { bytesRead } = await fh.read(buf, off + done, len - done, pos + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

/** Read and parse a JSON file; undefined when it does not exist. */
export async function readJson<T>(file: string): Promise<T | undefined> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  return JSON.parse(text) as T;
}
