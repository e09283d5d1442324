// Section 6: restore. A fill-target of 256 MiB and of 1 GiB (PRNG pages) is migrated with
// `sender migrate --restorable --after kill --no-verify --to dir:IMAGES` (no network: the figure is
// the restore's), and once its pid is free, `receiver restore --json` starts it again (same pid):
//   restore     the command's wall time, spawn to exit (the process runs then), and its own steps
//               from --json (spawn stub, map, fill, files, threads, credentials, ...); what is
//               outside the steps is node's start-up, loading the modules and opening the image;
//   store read  the limit of the fill step: the same image's pages read in this process with the
//               store (ImageStore.open, populatedRanges per VMA of the committed layout, readPages
//               in the fill step's 8 MiB pieces) into one reused buffer, nothing written anywhere.
// Each twice per run:
//   fresh   the first read of an image just written, as a restore right after a migration does
//           (the store writes with O_DIRECT, and cache-evict takes out the few files it wrote
//           through the page cache). On a VM a re-read after evicting the guest's cache can be
//           served by the host's cache (here 3.3 GB/s against 0.5-0.9 GB/s for a first read), so
//           each of the two figures gets its own image: the target is migrated twice, once with
//           --after resume (for the store read), then with --after kill (for the restore);
//   cached  the restored image again, in the page cache (the restore just read it).
// Runs interleave the sizes; the restored process is killed after each restore.

import * as path from 'node:path';
import { ImageStore } from '../../image/image-store';
import { FILL_CHUNK } from '../../receiver/restore/process-builder';
import { cacheEvict } from '../lib/baselines';
import type { BenchContext } from '../lib/context';
import { FillTarget, type Fill } from '../lib/fill-target';
import { migrateOnce, scratchDir } from '../lib/migration';
import { filesUnder, restoreOnce, rssAnonBytes, waitPidFree, type RestoreRun } from '../lib/restore';
import { ratio, scaled, stat, type Stat } from '../lib/stats';

export interface RestoreConfig {
  name: string;
  mib: number;
  fill: Fill;
}

export const RESTORE_CONFIGS: RestoreConfig[] = [
  { name: '256 MiB random', mib: 256, fill: 'random' },
  { name: '1 GiB random', mib: 1024, fill: 'random' },
];

/**
 * fresh: the first read of an image just written (nothing of it in the page cache; the store
 * writes with O_DIRECT), as a restore right after the migration reads it; cached: read again, from
 * the page cache.
 */
export type ImageCache = 'fresh' | 'cached';

/** A restored copy reads EOF on its new stdin and stays this long unless killed (it is, at once). */
const LINGER_SECONDS = 120;

export interface RestoreResult {
  config: RestoreConfig;
  cache: ImageCache;
  /** Bytes of the pages the image holds (data and zero pages), as read by the store read. */
  imageBytes: number;
  /** `receiver restore` spawn to exit, s. */
  restoreSeconds: Stat;
  /** The fill step (read from the image, write into the process), ms. */
  fillMs: Stat;
  /** Every step but fill, summed, ms. */
  otherStepsMs: Stat;
  /** The command's time outside its steps (node start-up, modules, opening the image), ms. */
  outsideStepsMs: Stat;
  /** Each step, ms (in the restore's order). */
  steps: Record<string, Stat>;
  /** Reading every page of the image with the store into a reused buffer, s. */
  storeReadSeconds: Stat;
  /** imageBytes / restore seconds, GB/s (1e9). */
  restoreGBps: Stat;
  storeReadGBps: Stat;
  /** fill / store read (medians): what writing into the process adds to reading the image. */
  fillOverStoreRead: number;
  /** fresh only: the most pages of the two images still cached after evicting them, over all runs. */
  cachedPagesAfterEvict: number;
}

interface Cell {
  config: RestoreConfig;
  cache: ImageCache;
  imageBytes: number;
  restores: RestoreRun[];
  reads: number[];
  leftCached: number;
}

export async function runRestore(ctx: BenchContext, configs = RESTORE_CONFIGS): Promise<RestoreResult[]> {
  const images = scratchDir('restore');
  const cells = new Map<string, Cell>();
  const cell = (config: RestoreConfig, cache: ImageCache): Cell => {
    const key = `${config.name}/${cache}`;
    if (!cells.has(key)) cells.set(key, { config, cache, imageBytes: 0, restores: [], reads: [], leftCached: 0 });
    return cells.get(key)!;
  };
  ctx.progress(`restore: ${configs.map((c) => c.name).join(', ')}: migrate --restorable --after kill to dir:, then receiver restore`);
  for (let run = 0; run < ctx.runs; run++) {
    for (const c of configs) {
      const target = await FillTarget.start(ctx.bins['fill-target'], { mib: c.mib, fill: c.fill, lingerSeconds: LINGER_SECONDS });
      const pid = target.pid;
      const removeImages: Array<() => void> = [];
      try {
        // Two images of the same memory, so that each figure of the 'fresh' row gets a first read:
        // the store read's (the target keeps running), then the restore's (the target is killed).
        const migrate = async (after: 'resume' | 'kill') => {
          const m = await migrateOnce({ pid, to: { dir: images }, flags: ['--no-verify', '--restorable', '--after', after], keepImage: true });
          removeImages.push(m.removeImage);
          return { session: m.session, files: filesUnder(path.join(images, m.session)) };
        };
        const forRead = await migrate('resume');
        const forRestore = await migrate('kill');
        await target.exited(); // killed by the sender (--after kill) and reaped
        await waitPidFree(pid);
        const fresh = cell(c, 'fresh');
        const cached = cell(c, 'cached');
        // The store's small files (state, bitmaps) went through the page cache: out with them too.
        const e = await cacheEvict(ctx.bins['cache-evict'], [...forRead.files, ...forRestore.files]);
        fresh.leftCached = Math.max(fresh.leftCached, e.cachedPagesAfter);
        const log: string[] = [];
        const restore = async (into: Cell) => {
          const r = await restoreOnce(images, forRestore.session, pid);
          try {
            const rss = rssAnonBytes(r.pid);
            if (!(rss >= c.mib * 2 ** 20)) throw new Error(`the restored process ${r.pid} holds ${rss} anonymous bytes, fewer than its ${c.mib} MiB`);
          } finally {
            await r.kill();
          }
          into.restores.push(r);
          log.push(`${into.cache} ${r.seconds.toFixed(2)} s (fill ${(r.steps.find((s) => s.step === 'fill')?.ms ?? NaN).toFixed(0)} ms)`);
        };
        const read = async (into: Cell, session: string) => {
          const got = await storeRead(images, session);
          into.imageBytes = got.bytes;
          into.reads.push(got.seconds);
          log.push(`store read ${into.cache} ${(got.seconds * 1e3).toFixed(0)} ms`);
        };
        // Fresh: the restore as right after a migration, then the other image's first read.
        await restore(fresh);
        await read(fresh, forRead.session);
        // Cached: the restored image again, now in the page cache (the restore just read it).
        await read(cached, forRestore.session);
        await restore(cached);
        ctx.progress(`  run ${run + 1}: ${c.name}: restore ${log.join(', ')}`);
      } finally {
        for (const remove of removeImages) remove();
        await target.kill();
      }
    }
  }
  return [...cells.values()].map(summarize);
}

/** Read every page the image holds, as the fill step does, into one reused buffer; timed without the open. */
async function storeRead(images: string, session: string): Promise<{ bytes: number; seconds: number }> {
  const img = await new ImageStore(images).open(session);
  try {
    const { layout } = await img.committedManifest();
    const ps = img.pageSize;
    const buf = Buffer.allocUnsafe(FILL_CHUNK);
    const presence = new Uint8Array(FILL_CHUNK / ps);
    let bytes = 0;
    const t0 = performance.now();
    for (const v of layout) {
      for (const [s, e] of img.populatedRanges(v.start, v.end)) {
        for (let at = s; at < e; at += FILL_CHUNK) {
          const len = Math.min(FILL_CHUNK, e - at);
          await img.readPages(at, len / ps, buf, presence);
          bytes += len;
        }
      }
    }
    return { bytes, seconds: (performance.now() - t0) / 1000 };
  } finally {
    await img.close();
  }
}

function summarize(c: Cell): RestoreResult {
  const labels = [...new Set(c.restores.flatMap((r) => r.steps.map((s) => s.step)))];
  const stepMs = (r: RestoreRun, l: string) => r.steps.filter((s) => s.step === l).reduce((a, s) => a + s.ms, 0);
  const sumSteps = (r: RestoreRun) => r.steps.reduce((a, s) => a + s.ms, 0);
  const fillMs = stat(c.restores.map((r) => stepMs(r, 'fill')));
  const storeReadSeconds = stat(c.reads);
  return {
    config: c.config,
    cache: c.cache,
    imageBytes: c.imageBytes,
    restoreSeconds: stat(c.restores.map((r) => r.seconds)),
    fillMs,
    otherStepsMs: stat(c.restores.map((r) => sumSteps(r) - stepMs(r, 'fill'))),
    outsideStepsMs: stat(c.restores.map((r) => r.seconds * 1e3 - sumSteps(r))),
    steps: Object.fromEntries(labels.map((l) => [l, stat(c.restores.map((r) => stepMs(r, l)))])),
    storeReadSeconds,
    restoreGBps: stat(c.restores.map((r) => c.imageBytes / r.seconds / 1e9)),
    storeReadGBps: stat(c.reads.map((s) => c.imageBytes / s / 1e9)),
    fillOverStoreRead: ratio(fillMs, scaled(storeReadSeconds, 1e3)),
    cachedPagesAfterEvict: c.cache === 'fresh' ? c.leftCached : NaN,
  };
}
