// What the process read at each page of a VMA at the freeze, the rule both export formats share:
//   - a page the sender sent: its bytes (zero pages: zeros);
//   - a page never sent in an anonymous VMA: zeros (never populated);
//   - a page never sent in a file-backed VMA: the file's content at vma.offset + (page - start),
//     read now (bytes past the end of the file read as zeros). A missing file is an error unless
//     the caller asked to zero-fill.
// Files are checked before anything is written, so a missing one fails the export up front.

import { constants as C, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { Vma } from '../../common/vma';
import { vmaRangeName } from '../../common/vma';
import { logger } from '../../common/log';
import type { SessionReader } from '../../image/image-store';
import { ExportError } from './export-error';

const log = logger('export');

/** Pages read and handed to the writer at a time (8 MiB with 4 KiB pages). */
const BLOCK_PAGES = 2048;

export interface ContentOptions {
  /** Export never-sent pages of file-backed VMAs whose file is missing as zeros instead of failing. */
  zeroFillMissing?: boolean;
  /** Look backing files up under this directory (a copy of the source host's files). */
  fileRoot?: string;
}

/** Where a page's bytes came from (one value per page of a block). */
export const enum PageSource {
  /** Not sent, anonymous (or zero-filled missing file): zeros. */
  None = 0,
  Data = 1,
  Zero = 2,
  File = 3,
}

export interface PageCounts {
  data: number;
  zero: number;
  file: number;
  none: number;
}

export interface VmaPlan {
  vma: Vma;
  /** Held pages as [start, end) ranges. */
  populated: [number, number][];
  /** Backing file to read never-sent pages from (undefined: zeros). */
  backing?: string;
}

/** Plan each VMA of a committed layout; throws ExportError listing every backing file that is missing. */
export async function planVmas(image: SessionReader, layout: Vma[], opts: ContentOptions): Promise<VmaPlan[]> {
  const plans: VmaPlan[] = [];
  const missing: string[] = [];
  for (const vma of layout) {
    const populated = image.populatedRanges(vma.start, vma.end);
    const covered = populated.reduce((n, [s, e]) => n + (e - s), 0);
    const plan: VmaPlan = { vma, populated };
    if (vma.fileBacked && covered < vma.end - vma.start) {
      const file = backingPath(vma.path, opts.fileRoot);
      const problem = await checkBacking(file, vma);
      if (!problem) plan.backing = file;
      else if (opts.zeroFillMissing) log.warn(`${vmaRangeName(vma.start, vma.end)}: ${problem}; never-sent pages exported as zeros`);
      else missing.push(`${vmaRangeName(vma.start, vma.end)} ${vma.path}: ${problem}`);
    }
    plans.push(plan);
  }
  if (missing.length > 0) {
    throw new ExportError(
      'MISSING_FILE',
      `cannot read the files backing pages the process never wrote:\n  ${missing.join('\n  ')}\n` + 'pass --zero-fill-missing to export those pages as zeros',
    );
  }
  return plans;
}

function backingPath(p: string, root?: string): string {
  // The path comes from the sender: under a root, '..' must not climb out of it.
  return root ? path.join(root, path.resolve('/', p)) : p;
}

async function checkBacking(file: string, vma: Vma): Promise<string | undefined> {
  try {
    const st = await fsp.stat(file);
    if (!st.isFile()) return 'not a regular file';
    await fsp.access(file, C.R_OK);
    if (vma.inode && st.ino !== vma.inode) log.warn(`${file}: inode ${st.ino} differs from the source's ${vma.inode}; reading it anyway`);
    return undefined;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'file is missing' : (err as Error).message;
  }
}

/**
 * Walk a VMA's content in blocks: fn(addr, bytes, sources) with bytes = pages * pageSize holding
 * the content and sources[i] saying where page i came from (None and Zero pages are zeros, so a
 * writer can leave holes there).
 */
export async function forEachBlock(
  image: SessionReader,
  plan: VmaPlan,
  counts: PageCounts,
  fn: (addr: number, bytes: Buffer, sources: Uint8Array) => Promise<void>,
): Promise<void> {
  const ps = image.pageSize;
  const buf = Buffer.alloc(BLOCK_PAGES * ps);
  const sources = new Uint8Array(BLOCK_PAGES);
  const fh = plan.backing ? await fsp.open(plan.backing, 'r') : undefined;
  try {
    for (let addr = plan.vma.start; addr < plan.vma.end; addr += BLOCK_PAGES * ps) {
      const n = Math.min(BLOCK_PAGES, (plan.vma.end - addr) / ps);
      const bytes = buf.subarray(0, n * ps);
      const src = sources.subarray(0, n);
      await image.readPages(addr, n, bytes, src);
      if (fh) await fillFromFile(fh, plan.vma, addr, bytes, src, ps);
      for (let i = 0; i < n; i++) {
        const s = src[i] as PageSource;
        if (s === PageSource.Data) counts.data++;
        else if (s === PageSource.Zero) counts.zero++;
        else if (s === PageSource.File) counts.file++;
        else counts.none++;
      }
      await fn(addr, bytes, src);
    }
  } finally {
    await fh?.close();
  }
}

/** Read never-sent pages of the block from the backing file, one pread per run of them. */
async function fillFromFile(fh: fsp.FileHandle, vma: Vma, addr: number, bytes: Buffer, src: Uint8Array, ps: number): Promise<void> {
  const n = src.length;
  for (let i = 0; i < n;) {
    if (src[i] !== PageSource.None) {
      i++;
      continue;
    }
    let j = i;
    while (j < n && src[j] === PageSource.None) j++;
    const pos = vma.offset + (addr - vma.start) + i * ps;
    let got = 0;
    while (got < (j - i) * ps) {
      const { bytesRead } = await fh.read(bytes, i * ps + got, (j - i) * ps - got, pos + got);
      if (bytesRead === 0) break; // past the end of the file: the rest stays zeros
      got += bytesRead;
    }
    src.fill(PageSource.File, i, j);
    i = j;
  }
}

/** Calls fn(first, end) for each run of pages in the block that carry bytes worth writing. */
export function forEachContentRun(src: Uint8Array, fn: (first: number, end: number) => void): void {
  const n = src.length;
  for (let i = 0; i < n;) {
    if (src[i] !== PageSource.Data && src[i] !== PageSource.File) {
      i++;
      continue;
    }
    let j = i;
    while (j < n && (src[j] === PageSource.Data || src[j] === PageSource.File)) j++;
    fn(i, j);
    i = j;
  }
}
