// `receiver export --format raw`: one file per VMA of the committed layout, START-END.bin, holding
// the VMA's memory at the freeze (see vma-content.ts for the rule), plus manifest.json, written
// last so that its presence means the export is complete. Pages that read as zeros are left as
// holes in the (sparse) files.

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { logger } from '../../common/log';
import { pwriteFull } from '../../image/durable-file';
import type { SessionReader } from '../../image/image-store';
import { ExportError } from './export-error';
import { exportManifest, rawFileName } from './export-manifest';
import { forEachBlock, forEachContentRun, planVmas, type ContentOptions, type PageCounts } from './vma-content';

const log = logger('export');

export interface ExportOptions extends ContentOptions {
  /** Write into a non-empty output directory (raw) or over an existing file (core). */
  force?: boolean;
}

export interface ExportSummary {
  vmas: number;
  /** Bytes of memory exported (sum of VMA sizes). */
  bytes: number;
  pages: PageCounts;
  out: string;
}

export function addCounts(total: PageCounts, c: PageCounts): void {
  total.data += c.data;
  total.zero += c.zero;
  total.file += c.file;
  total.none += c.none;
}

export async function exportRaw(image: SessionReader, outDir: string, opts: ExportOptions = {}): Promise<ExportSummary> {
  const manifest = await committed(image);
  const plans = await planVmas(image, manifest.layout, opts);
  await fsp.mkdir(outDir, { recursive: true });
  const existing = await fsp.readdir(outDir);
  if (existing.length > 0 && !opts.force) {
    throw new ExportError('OUT_EXISTS', `${outDir} is not empty (${existing.length} entries); choose an empty directory or pass --force`);
  }
  await fsp.rm(path.join(outDir, 'manifest.json'), { force: true });
  const ps = image.pageSize;
  const counts: PageCounts[] = [];
  const total: PageCounts = { data: 0, zero: 0, file: 0, none: 0 };
  let bytes = 0;
  for (const plan of plans) {
    const size = plan.vma.end - plan.vma.start;
    const fh = await fsp.open(path.join(outDir, rawFileName(plan.vma)), 'w', 0o600);
    const c: PageCounts = { data: 0, zero: 0, file: 0, none: 0 };
    try {
      await fh.truncate(size);
      await forEachBlock(image, plan, c, async (addr, block, src) => {
        const writes: Promise<unknown>[] = [];
        forEachContentRun(src, (i, j) => writes.push(pwriteFull(fh, block, i * ps, (j - i) * ps, addr - plan.vma.start + i * ps)));
        await Promise.all(writes);
      });
    } finally {
      await fh.close();
    }
    counts.push(c);
    addCounts(total, c);
    bytes += size;
  }
  const text = JSON.stringify(exportManifest(manifest, plans, counts), null, 2);
  await fsp.writeFile(path.join(outDir, 'manifest.json'), `${text}\n`, { mode: 0o600 });
  log.info(`session ${image.id}: exported ${plans.length} VMAs (${bytes} bytes) to ${outDir}`);
  return { vmas: plans.length, bytes, pages: total, out: outDir };
}

/** The committed manifest, or ExportError when the session is not committed. */
export async function committed(image: SessionReader) {
  try {
    return await image.committedManifest();
  } catch (err) {
    throw new ExportError('NOT_COMMITTED', `cannot export: ${(err as Error).message}`);
  }
}
