// Section 2: the cost of one dirty-page round. The target (fill-target) holds 1 GiB of populated
// pages, alone or at the start of a 64 GiB MAP_NORESERVE mapping; it is armed by the sender's own
// scanning layer (TrackedProcess, in this process). Each run writes 1% of the pages, then times:
//   sender     TrackedProcess.dirtyRuns(4096): the sender's scan path (WP matching, max_pages
//              batches, run batching), every batch consumed; refresh() (maps + registration
//              probes, done once per round before the scan) is timed apart;
//   raw ioctl  the same PAGEMAP_SCAN calls from C (pm-scan wp) over the same VMAs, with the
//              sender's max_pages and vec size (the limit), and once more with no max_pages and
//              a 64 Ki-region vec (fewer calls, yet slower on sparse memory on 6.18);
//   pagemap    reading /proc/PID/pagemap for the same VMAs from C: what a tool without
//              PAGEMAP_SCAN pays just to look (and it still could not tell written pages here).
// Every timed WP scan gets its own fresh 1% of writes.

import { TrackedProcess } from '../../sender/tracking/tracked-process';
import { pmScan, type Range } from '../lib/baselines';
import type { BenchContext } from '../lib/context';
import { FillTarget } from '../lib/fill-target';
import { ratio, stat, type Stat } from '../lib/stats';

/** The sender's default --max-pages. */
const SENDER_MAX_PAGES = 4096;
/** Regions the sender's walk passes the kernel per ioctl (native/pagemap_scan.cc kMaxRegionsPerCall). */
const SENDER_VEC = 512;

export interface ScanLayout {
  name: string;
  /** MiB populated. */
  mib: number;
  /** GiB mapped (0: just the populated area). */
  reserveGib: number;
}

export const SCAN_LAYOUTS: ScanLayout[] = [
  { name: '1 GiB populated', mib: 1024, reserveGib: 0 },
  { name: '64 GiB sparse, 1 GiB populated', mib: 1024, reserveGib: 64 },
];

export interface ScanResult {
  layout: ScanLayout;
  /** Pages written per run (1%). */
  dirtyPages: number;
  /** Address space the scans cover (every VMA the sender scans), bytes. */
  scannedBytes: number;
  /** Arming: round 0's WP scan of everything (TrackedProcess.initialRuns), ms. */
  armMs: number;
  senderMs: Stat;
  refreshMs: Stat;
  rawIoctlMs: Stat;
  rawIoctlBigVecMs: Stat;
  pagemapReadMs: Stat;
  /** Pages the sender's scan returned per run (>= dirtyPages minus PRNG collisions). */
  senderPages: Stat;
  /** senderMs / rawIoctlMs (medians). */
  senderOverRaw: number;
  /** pagemapReadMs / senderMs (medians). */
  pagemapOverSender: number;
}

const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;

export async function runScan(ctx: BenchContext, layouts = SCAN_LAYOUTS): Promise<ScanResult[]> {
  const out: ScanResult[] = [];
  // At least 5 runs: these are millisecond figures on a shared machine.
  const runs = Math.max(5, ctx.runs);
  for (const layout of layouts) {
    ctx.progress(`scan: ${layout.name}`);
    const target = await FillTarget.start(ctx.bins['fill-target'], { mib: layout.mib, fill: 'random', reserveGib: layout.reserveGib });
    let tracked: TrackedProcess | null = null;
    try {
      tracked = TrackedProcess.attach(target.pid);
      let t0 = process.hrtime.bigint();
      for await (const b of tracked.initialRuns(SENDER_MAX_PAGES)) void b;
      const armMs = ms(t0);
      // The VMAs the dirty scan walks: all but PROT_NONE reservations (never scanned, see
      // tracked-process.ts).
      const ranges: Range[] = tracked
        .layout()
        .filter((v) => !v.perms.startsWith('---'))
        .map((v) => [v.start, v.end]);
      const dirtyPages = Math.round(target.pages / 100);
      const senderScan = async () => {
        let pages = 0;
        for await (const b of tracked!.dirtyRuns(SENDER_MAX_PAGES)) pages += b.pages;
        return pages;
      };
      const wp = (opts: { maxPages: number; vec: number }) => pmScan(ctx.bins['pm-scan'], target.pid, 'wp', ranges, opts);
      // Warm-up (not timed): one round through each path.
      await target.dirty(dirtyPages);
      await senderScan();
      await target.dirty(dirtyPages);
      await wp({ maxPages: SENDER_MAX_PAGES, vec: SENDER_VEC });

      const f = {
        sender: [] as number[],
        refresh: [] as number[],
        raw: [] as number[],
        rawFew: [] as number[],
        pagemap: [] as number[],
        pages: [] as number[],
      };
      for (let run = 0; run < runs; run++) {
        await target.dirty(dirtyPages);
        t0 = process.hrtime.bigint();
        tracked.refresh();
        f.refresh.push(ms(t0));
        t0 = process.hrtime.bigint();
        f.pages.push(await senderScan());
        f.sender.push(ms(t0));

        await target.dirty(dirtyPages);
        f.raw.push((await wp({ maxPages: SENDER_MAX_PAGES, vec: SENDER_VEC })).seconds * 1e3);
        await target.dirty(dirtyPages);
        f.rawFew.push((await wp({ maxPages: 0, vec: 65536 })).seconds * 1e3);
        f.pagemap.push((await pmScan(ctx.bins['pm-scan'], target.pid, 'pagemap', ranges)).seconds * 1e3);
      }
      const senderMs = stat(f.sender);
      const rawIoctlMs = stat(f.raw);
      const pagemapReadMs = stat(f.pagemap);
      out.push({
        layout,
        dirtyPages,
        scannedBytes: ranges.reduce((a, [s, e]) => a + e - s, 0),
        armMs,
        senderMs,
        refreshMs: stat(f.refresh),
        rawIoctlMs,
        rawIoctlBigVecMs: stat(f.rawFew),
        pagemapReadMs,
        senderPages: stat(f.pages),
        senderOverRaw: ratio(senderMs, rawIoctlMs),
        pagemapOverSender: ratio(pagemapReadMs, senderMs),
      });
      ctx.progress(
        `  sender ${senderMs.median.toFixed(2)} ms, raw ioctl ${rawIoctlMs.median.toFixed(2)} ms, pagemap read ${pagemapReadMs.median.toFixed(2)} ms`,
      );
    } finally {
      tracked?.close();
      await target.kill();
    }
  }
  return out;
}
