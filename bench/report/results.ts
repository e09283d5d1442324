// The bench's results (bench/out/results.json), the benchmark's goals (bench/README.md) judged on them, and the
// readable table printed on stdout.

import type { ScanResult } from '../sections/scan';
import type { DowntimeResult } from '../sections/downtime';
import type { SlowdownRun } from '../sections/slowdown';
import type { ThreadStats, ThroughputResult } from '../sections/throughput';
import type { ToolFigure } from '../sections/alternatives';
import type { RestoreResult } from '../sections/restore';
import type { HandoverBenchResult } from '../sections/handover';
import { DOWNTIME_TARGET_MS } from '../sections/downtime';
import type { Stat } from '../lib/stats';
import { fmtNum, fmtStat, renderTable } from './text-table';

export interface Machine {
  cpus: number;
  memoryGiB: number;
  kernel: string;
  node: string;
  /** /proc/loadavg (1, 5, 15 min) when the bench started and ended: the machine is shared. */
  loadBefore: number[];
  loadAfter: number[];
}

export interface AlternativesResult {
  tools: ToolFigure[];
  /** Our downtime (1 GiB, no verify, at the dirty rate) / the tool's pause, per tool. */
  ratios: { tool: string; rateMBps: number; ourDowntimeMs: number; ratio: number }[];
}

export interface Resources {
  name: string;
  gib: number;
  /** The shipped path (random pages, lz4, gRPC): the one the goals are judged on. */
  default: boolean;
  senderPeakRssMiB: Stat;
  senderCpuSeconds: Stat;
  receiverCpuSeconds: Stat;
  /** The kernel's share (stime) of each; absent in results from before it was measured. */
  senderSystemSeconds?: Stat;
  receiverSystemSeconds?: Stat;
  senderThreads: ThreadStats;
  receiverThreads: ThreadStats;
  cReaderCpuSeconds: Stat;
  cWriterCpuSeconds: Stat;
}

export interface Goal {
  goal: string;
  measured: string;
  met: boolean;
}

export interface BenchResults {
  startedAt: string;
  seconds: number;
  runs: number;
  machine: Machine;
  throughput?: ThroughputResult[];
  scan?: ScanResult[];
  downtime?: DowntimeResult[];
  alternatives?: AlternativesResult;
  resources?: Resources[];
  restore?: RestoreResult[];
  handover?: HandoverBenchResult;
  slowdown?: SlowdownRun[];
  goals: Goal[];
}

/** The verify's fixed share of the frozen time (docs/design.md, Verify off the freeze): waiting
 *  for the snapshot's fork to finish when it outlasts the commit it overlaps, and the helper's
 *  ptrace work at the thaw. */
const VERIFY_FIXED_MS = 10;

/** Median frozen time with and without verify, per target size at 0 and 20 MB/s. */
function frozenWithVerify(d: DowntimeResult[] | undefined): { mib: number; rate: number; with: number; without: number }[] {
  const out: { mib: number; rate: number; with: number; without: number }[] = [];
  for (const x of d ?? []) {
    if (!x.verify || x.rateMBps > 20) continue;
    const without = d!.find((y) => y.mib === x.mib && y.rateMBps === x.rateMBps && !y.verify);
    if (without) out.push({ mib: x.mib, rate: x.rateMBps, with: x.frozenMs.median, without: without.frozenMs.median });
  }
  return out;
}

/** Our downtime at a dirty rate without verify (median ms), NaN if not measured. */
export function ourDowntimeMs(d: DowntimeResult[] | undefined, rateMBps: number): number {
  return d?.find((x) => x.mib === 1024 && x.rateMBps === rateMBps && !x.verify)?.downtimeMs.median ?? NaN;
}

export function alternativesResult(tools: ToolFigure[], downtime: DowntimeResult[] | undefined): AlternativesResult {
  const ratios: AlternativesResult['ratios'] = [];
  for (const t of tools) {
    if (!t.available) continue;
    for (const rate of [0, 20]) {
      const ours = ourDowntimeMs(downtime, rate);
      ratios.push({ tool: t.tool, rateMBps: rate, ourDowntimeMs: ours, ratio: ours / t.pauseMs.median });
    }
  }
  return { tools, ratios };
}

const isDefaultPath = (t: ThroughputResult) => t.config.fill === 'random' && t.config.compress === 'lz4' && t.config.transfer === 'grpc' && !t.config.streams;

/** Section 5 comes from section 1's runs (every config; the goal is judged on random, lz4, gRPC). */
export function resourcesOf(throughput: ThroughputResult[] | undefined): Resources[] {
  return (throughput ?? []).map((t) => ({
    name: t.config.name,
    gib: t.config.mib / 1024,
    default: isDefaultPath(t),
    senderPeakRssMiB: t.senderPeakRssMiB,
    senderCpuSeconds: t.senderCpuSeconds,
    receiverCpuSeconds: t.receiverCpuSeconds,
    senderSystemSeconds: t.senderSystemSeconds,
    receiverSystemSeconds: t.receiverSystemSeconds,
    senderThreads: t.senderThreads,
    receiverThreads: t.receiverThreads,
    cReaderCpuSeconds: t.cReaderCpuSeconds,
    cWriterCpuSeconds: t.cWriterCpuSeconds,
  }));
}

export interface CpuPerGiB {
  basis: string;
  sender: number;
  receiver: number;
  cReader: number;
  cWriter: number;
}

/**
 * CPU seconds per GiB of pages on each side of the shipped path (random, lz4, gRPC), medians: the
 * slope between the 1 and 4 GiB rows when both ran (what one more GiB costs, without the fixed
 * start-up of a migration), else the 1 GiB row's whole migration.
 */
export function cpuPerGiB(resources: Resources[] | undefined): CpuPerGiB | null {
  const row = (gib: number) => resources?.find((x) => x.default && x.gib === gib);
  const [one, four] = [row(1), row(4)];
  if (!one) return null;
  type Field = 'senderCpuSeconds' | 'receiverCpuSeconds' | 'cReaderCpuSeconds' | 'cWriterCpuSeconds';
  const per = (k: Field) => (four ? (four[k].median - one[k].median) / 3 : one[k].median);
  return {
    basis: four ? '1 and 4 GiB random, lz4: (4 GiB - 1 GiB) / 3' : '1 GiB random, lz4, whole migration',
    sender: per('senderCpuSeconds'),
    receiver: per('receiverCpuSeconds'),
    cReader: per('cReaderCpuSeconds'),
    cWriter: per('cWriterCpuSeconds'),
  };
}

/** "main 1.91 + others 0.40" (medians). */
function threadSplit(t: ThreadStats): string {
  return Number.isFinite(t.main.median) ? `main ${t.main.median.toFixed(2)} + others ${t.others.median.toFixed(2)}` : '-';
}

/** The benchmark's goals (bench/README.md, "Goals"), judged on medians (RSS: on the worst run). */
export function judgeGoals(r: Omit<BenchResults, 'goals'>): Goal[] {
  const goals: Goal[] = [];
  for (const t of r.throughput ?? []) {
    if (!isDefaultPath(t)) continue;
    goals.push({
      goal: `round 0 >= 2.5 GB/s on loopback, incompressible (${t.config.name})`,
      // The disk's own durable write rate is printed beside it: a goal above it cannot be met here.
      measured: `${fmtNum(t.round0GBps.median)} GB/s (disk ${fmtNum(t.diskLimitGBps.median)})`,
      met: t.round0GBps.median >= 2.5,
    });
  }
  const s1 = r.scan?.find((s) => s.layout.reserveGib === 0);
  if (s1) {
    goals.push({ goal: 'scan within 1.5x of the raw ioctl (1 GiB)', measured: `${fmtNum(s1.senderOverRaw)}x`, met: s1.senderOverRaw <= 1.5 });
    goals.push({ goal: 'scan >= 8x faster than reading pagemap (1 GiB)', measured: `${fmtNum(s1.pagemapOverSender, 1)}x`, met: s1.pagemapOverSender >= 8 });
  }
  const d20 = ourDowntimeMs(r.downtime, 20);
  if (r.downtime) goals.push({ goal: 'downtime <= 25 ms, 1 GiB at 20 MB/s, no verify', measured: `${fmtNum(d20, 1)} ms`, met: d20 <= 25 });
  for (const f of frozenWithVerify(r.downtime)) {
    goals.push({
      goal: `frozen with verify <= 1.2x without + ${VERIFY_FIXED_MS} ms, ${f.mib / 1024} GiB at ${f.rate} MB/s`,
      measured: `${fmtNum(f.with, 1)} vs ${fmtNum(f.without, 1)} ms (${fmtNum(f.with / f.without)}x)`,
      met: f.with <= 1.2 * f.without + VERIFY_FIXED_MS,
    });
  }
  const hv = (mib: number) => r.handover?.cells.find((c) => c.mib === mib && c.rateMBps === 20 && !c.verify)?.downtimeMs.median ?? NaN;
  if (r.handover) {
    goals.push({ goal: 'handover downtime <= 100 ms, 1 GiB at 20 MB/s, no verify', measured: `${fmtNum(hv(1024), 1)} ms`, met: hv(1024) <= 100 });
    const growth = hv(1024) / hv(256) - 1;
    goals.push({
      goal: 'handover downtime grows <= 20% from 256 MiB to 1 GiB (20 MB/s, no verify)',
      measured: `${fmtNum(growth * 100, 0)}% (${fmtNum(hv(256), 1)} -> ${fmtNum(hv(1024), 1)} ms)`,
      met: growth <= 0.2,
    });
  }
  const perGiB = cpuPerGiB(r.resources);
  if (perGiB) {
    for (const [side, cpu, floor] of [
      ['sender', perGiB.sender, perGiB.cReader],
      ['receiver', perGiB.receiver, perGiB.cWriter],
    ] as const) {
      goals.push({
        goal: `${side} CPU <= 0.35 s per GiB (${perGiB.basis})`,
        measured: `${fmtNum(cpu)} s (C ${side === 'sender' ? 'reader' : 'writer'} ${fmtNum(floor)} s)`,
        met: cpu <= 0.35,
      });
    }
  }
  const big = r.resources?.find((x) => x.gib === 4 && x.default);
  if (big)
    goals.push({
      goal: 'sender peak RSS <= 128 MiB at 4 GiB (worst run)',
      measured: `${fmtNum(big.senderPeakRssMiB.max, 0)} MiB`,
      met: big.senderPeakRssMiB.max <= 128,
    });
  return goals;
}

export function renderResults(r: BenchResults): string {
  const out: string[] = [];
  const m = r.machine;
  out.push(
    `precopy bench, ${r.startedAt}: ${r.runs} runs per figure, shown as median (min-max); ${m.cpus} CPUs, ${m.memoryGiB} GiB, Linux ${m.kernel}, Node ${m.node}`,
    `load average before ${m.loadBefore.join(' ')}, after ${m.loadAfter.join(' ')} (shared machine: other work adds noise); took ${Math.round(r.seconds)} s`,
    '',
  );
  if (r.throughput) {
    out.push(
      renderTable(
        '1. Round-0 throughput, end to end (sender -> gRPC loopback -> receiver, durable), vs process_vm_readv of the same stopped target and vs the disk',
        ['config', 'round 0 GB/s', 'raw limit GB/s', 'of limit', 'disk limit GB/s', 'of disk', 'wire/raw', 'total s'],
        r.throughput.map((t) => [
          t.config.name,
          fmtStat(t.round0GBps),
          fmtStat(t.rawLimitGBps),
          fmtNum(t.ofLimit * 100, 0, '%'),
          fmtStat(t.diskLimitGBps),
          fmtNum(t.ofDisk * 100, 0, '%'),
          fmtNum(t.wireShare.median),
          fmtStat(t.totalSeconds, 1),
        ]),
        [
          'GB = 1e9 bytes of pages (zero pages included); dir: = the same sender writing the image directory itself (no network)',
          "disk limit = the same number of incompressible bytes written with O_DIRECT and fdatasync into the receiver's images directory (bench/baselines/disk-write.c)",
        ],
      ),
    );
  }
  if (r.scan) {
    out.push(
      renderTable(
        '2. Scan cost of one dirty round (1% of 1 GiB written), ms',
        ['layout', 'sender scan', 'raw ioctl', 'x raw', 'raw, 64 Ki vec', 'pagemap read', 'pagemap / sender', 'refresh', 'arm'],
        r.scan.map((s) => [
          s.layout.name,
          fmtStat(s.senderMs, 3),
          fmtStat(s.rawIoctlMs, 3),
          fmtNum(s.senderOverRaw, 2, 'x'),
          fmtStat(s.rawIoctlBigVecMs, 3),
          fmtStat(s.pagemapReadMs, 2),
          fmtNum(s.pagemapOverSender, 1, 'x'),
          fmtStat(s.refreshMs, 2),
          fmtNum(s.armMs, 1),
        ]),
        [
          'sender scan = TrackedProcess.dirtyRuns(4096) consumed; raw ioctl = the same PAGEMAP_SCAN calls from C (max_pages 4096, vec 512);',
          'raw, 64 Ki vec = C with no max_pages and a 65536-region vec; refresh = maps re-read + registration probes (once per round, not in the scan figure)',
        ],
      ),
    );
  }
  if (r.downtime) {
    const labels = [...new Set(r.downtime.flatMap((d) => Object.keys(d.steps)))];
    out.push(
      renderTable(
        `3. Downtime and convergence, sender --downtime-ms ${DOWNTIME_TARGET_MS}`,
        ['target', 'dirty MB/s', 'achieved', 'verify', 'rounds', 'downtime ms', 'frozen ms', 'total s', 'sent/memory', 'stopped by'],
        r.downtime.map((d) => [
          `${d.mib / 1024} GiB`,
          String(d.rateMBps),
          fmtNum(d.achievedMBps.median, 0),
          d.verify ? 'yes' : 'no',
          fmtStat(d.rounds, 0),
          fmtStat(d.downtimeMs, 1),
          fmtStat(d.frozenMs, 1),
          fmtStat(d.totalSeconds, 1),
          fmtStat(d.sentOverMemory),
          Object.entries(d.stopReasons)
            .map(([k, v]) => `${k} x${v}`)
            .join(', '),
        ]),
        [
          "downtime = freeze to the receiver's commit ack; frozen = freeze to thaw; rounds = pre-copy rounds before the freeze",
          'with verify (--after resume) the pass reads a snapshot after the thaw: only its fixed share is frozen',
        ],
      ),
      renderTable(
        "   where the downtime goes (stop-and-copy steps from the sender's debug log, median ms)",
        ['target', 'dirty MB/s', 'verify', ...labels],
        r.downtime.map((d) => [`${d.mib / 1024} GiB`, String(d.rateMBps), d.verify ? 'yes' : 'no', ...labels.map((l) => fmtNum(d.steps[l]?.median ?? NaN, 1))]),
      ),
    );
  }
  if (r.alternatives) {
    const a = r.alternatives;
    out.push(
      renderTable(
        '4. The usual alternatives on a 1 GiB target (pause, ms) and our downtime as a share of it',
        ['tool', 'pause ms', 'ours idle / it', 'ours at 20 MB/s / it', 'note'],
        a.tools.map((t) => {
          if (!t.available) return [t.tool, 'unavailable', '-', '-', t.reason];
          const at = (rate: number) => a.ratios.find((x) => x.tool === t.tool && x.rateMBps === rate)?.ratio ?? NaN;
          return [t.tool, fmtStat(t.pauseMs, 0), fmtNum(at(0), 3), fmtNum(at(20), 3), t.what];
        }),
      ),
    );
  }
  if (r.resources) {
    out.push(
      renderTable(
        "5. Sender resources over a whole migration (section 1's runs, no verify)",
        ['config', 'sender peak RSS MiB', 'sender CPU s', 'system', 'by thread', 'C reader', 'receiver CPU s', 'system', 'by thread', 'C writer'],
        r.resources.map((x) => [
          x.name,
          fmtStat(x.senderPeakRssMiB, 0),
          fmtStat(x.senderCpuSeconds),
          x.senderSystemSeconds ? fmtStat(x.senderSystemSeconds) : '-',
          threadSplit(x.senderThreads),
          fmtStat(x.cReaderCpuSeconds),
          fmtStat(x.receiverCpuSeconds),
          x.receiverSystemSeconds ? fmtStat(x.receiverSystemSeconds) : '-',
          threadSplit(x.receiverThreads),
          fmtStat(x.cWriterCpuSeconds),
        ]),
        [
          'peak RSS = VmHWM of the sender process at exit; CPU = user + system, all threads; system = its kernel share',
          '(syscalls: sockets, writes, page faults); by thread: main = the JS thread,',
          'others = libuv pool (reads, lz4, fs writes), V8 GC helpers, native worker threads',
          'C reader / C writer = CPU s of bench/baselines/page-link.c moving the same bytes: process_vm_readv into a loopback',
          'TCP socket / from it into an O_DIRECT file + fdatasync (each side of the page path with nothing else: its floor)',
        ],
      ),
    );
  }
  if (r.restore) {
    const rows = r.restore;
    const rowName = (x: RestoreResult) => `${x.config.name}, ${x.cache === 'fresh' ? 'image just written' : 'image in page cache'}`;
    const labels = [...new Set(rows.flatMap((x) => Object.keys(x.steps)))];
    const left = Math.max(...rows.map((x) => x.cachedPagesAfterEvict).filter(Number.isFinite));
    out.push(
      renderTable(
        '6. Restore: receiver restore of a --restorable image (dir:, no network) until the process runs, vs reading the same pages from the store',
        ['image', 'restore s', 'fill ms', 'other steps ms', 'outside steps ms', 'store read s', 'restore GB/s', 'fill / store read'],
        rows.map((x) => [
          rowName(x),
          fmtStat(x.restoreSeconds, 2),
          fmtStat(x.fillMs, 0),
          fmtStat(x.otherStepsMs, 1),
          fmtStat(x.outsideStepsMs, 0),
          fmtStat(x.storeReadSeconds, 3),
          fmtStat(x.restoreGBps),
          fmtNum(x.fillOverStoreRead, 2, 'x'),
        ]),
        [
          'restore = `receiver restore --json` from its spawn to its exit (the process runs then); fill = its step that reads the image and writes the process;',
          'other steps = the sum of its other steps; outside steps = the rest of the command (node start-up, modules, opening the image);',
          'store read = every page of the image read with the store (readPages, 8 MiB at a time) into one reused buffer; restore GB/s = image bytes / restore s;',
          'image just written = the first read of a new image (not in the page cache, as right after a migration: the store writes with O_DIRECT), one image for',
          `the restore and one for the store read, both of the same target (at most ${fmtNum(left, 0)} of their pages were cached); image in page cache = the same read again`,
        ],
      ),
      renderTable(
        '   where the restore goes (the steps of receiver restore --json, median ms)',
        ['step', ...rows.map(rowName)],
        [...labels, 'outside steps'].map((l) => [
          l,
          ...rows.map((x) =>
            fmtNum(l === 'outside steps' ? x.outsideStepsMs.median : (x.steps[l]?.median ?? NaN), l === 'fill' || l === 'outside steps' ? 0 : 1),
          ),
        ]),
      ),
    );
  }
  if (r.handover) {
    const h = r.handover;
    out.push(
      renderTable(
        '7. Handover: from the freeze to the process running at the destination (its own network and PID namespaces), --downtime-ms 25',
        ['target', 'dirty MB/s', 'verify', 'downtime ms', 'freeze to commit', 'verify ms', 'restore ms', 'the rest', 'rounds', 'built in pre-copy'],
        h.cells.map((c) => [
          `${c.mib} MiB`,
          String(c.rateMBps),
          c.verify ? 'yes' : 'no',
          fmtStat(c.downtimeMs, 1),
          fmtStat(c.freezeToCommitMs, 1),
          fmtStat(c.verifyMs, 1),
          fmtStat(c.restoreMs, 1),
          fmtStat(c.restMs, 1),
          fmtStat(c.rounds, 0),
          `${c.prebuiltRuns}/${c.downtimeMs.values.length}`,
        ]),
        [
          'freeze to commit = final round, process state capture, durable commit; restore = what the receiver did after the ask (the process was built',
          'while the rounds arrived); the rest = the ask and answer, the receiver reading the manifest and writing its starting record durably',
          ...h.rollback.map(
            (x) => `rollback (restore failing at its last step), ${x.mib} MiB: the source runs again ${fmtStat(x.rollbackMs, 1)} ms after the freeze`,
          ),
        ],
      ),
    );
  }
  if (r.slowdown) {
    out.push(
      renderTable(
        '8. Slowdown of the program migrated: redis-server, 1 GiB dataset, one client in a closed loop (GET/SET), by when requests were sent',
        ['run', 'phase', 'seconds', 'requests/s', 'p50 ms', 'p99 ms', 'max ms', 'sender CPU s', 'downtime ms', 'frozen ms', 'huge pages MiB'],
        r.slowdown.flatMap((run) =>
          run.phases.map((p, i) => [
            i === 0 ? run.config : '',
            p.phase,
            fmtNum(p.seconds, 2),
            fmtNum(p.rps, 0),
            fmtNum(p.p50Ms, 3),
            fmtNum(p.p99Ms, 2),
            fmtNum(p.maxMs, 1),
            i === 0 ? fmtNum(run.senderCpuSeconds, 2) : '',
            i === 0 ? fmtNum(run.downtimeMs, 1) : '',
            i === 0 ? fmtNum(run.frozenMs, 1) : '',
            i === 0 ? `${run.hugeKiB[0] >> 10} -> ${run.hugeKiB[1] >> 10}` : '',
          ]),
        ),
        [
          'freeze = requests sent while the target was frozen; verify = from the thaw to the end of the migration (the pass reads the snapshot;',
          "the target's first writes to pages are COW faults); --max-rate (a receiver flag) = half of what the default run moved in round 0",
        ],
      ),
    );
  }
  out.push(
    renderTable(
      'Goals',
      ['goal', 'measured', 'met'],
      r.goals.map((g) => [g.goal, g.measured, g.met ? 'yes' : 'NO']),
    ),
  );
  return out.join('\n');
}
