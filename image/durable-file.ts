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
 * A file written in full under a temporary name next to its target and fsynced, not yet in place.
 * install() renames it over the target and fsyncs the directory; discard() removes it. Splitting
 * atomicWrite in two lets several files become durable in parallel while their renames (the
 * moments they take effect) stay in order.
 */
export interface StagedFile {
  install(): Promise<void>;
  discard(): Promise<void>;
}

export async function stageFile(file: string, data: Uint8Array | string): Promise<StagedFile> {
  const tmp = `${file}.tmp-${randomBytes(4).toString('hex')}`;
  const discard = () => fsp.rm(tmp, { force: true }).catch(() => undefined);
  try {
    await writeFileSynced(tmp, data, 'wx');
  } catch (err) {
    await discard();
    throw err;
  }
  return {
    install: async () => {
      try {
        await fsp.rename(tmp, file);
      } catch (err) {
        await discard();
        throw err;
      }
      await fsyncDir(path.dirname(file));
    },
    discard,
  };
}

/** Replace `file` atomically: temp file in the same directory, fsync, rename, fsync the directory. */
export async function atomicWrite(file: string, data: Uint8Array | string): Promise<void> {
  await (await stageFile(file, data)).install();
}

export interface Replacement {
  file: string;
  data: Uint8Array | string;
  /** Runs once this file and everything before it is ready, just before its rename (crash-test points). */
  beforeRename?: () => void;
}

/**
 * Replace several files, in order, once `alongside` (other durable writes: page data, bitmaps)
 * is done: every temporary file is written and fsynced in parallel with those writes; then each
 * is renamed into place and the rename made durable before the next. A change whose last rename
 * is its commit point thus costs one round of parallel fsyncs plus one rename and directory fsync
 * per file. On failure no temporary file is left behind and the first error is thrown.
 */
export async function replaceInOrder(files: Replacement[], alongside: Promise<unknown>[] = []): Promise<void> {
  const staging = files.map((f) => stageFile(f.file, f.data));
  const done = await Promise.allSettled([...alongside, ...staging]);
  const staged = done.slice(alongside.length).map((r) => (r.status === 'fulfilled' ? (r.value as StagedFile) : null));
  const failed = done.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    await Promise.all(staged.map((s) => s?.discard()));
    throw failed.reason;
  }
  for (let i = 0; i < files.length; i++) {
    try {
      files[i].beforeRename?.();
      await staged[i]!.install();
    } catch (err) {
      // (Discarding an installed file's temporary name is a no-op: it was renamed away.)
      await Promise.all(staged.slice(i).map((s) => s!.discard()));
      throw err;
    }
  }
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
