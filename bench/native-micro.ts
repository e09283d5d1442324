// Micro-benchmarks of the native layer against a real 1 GiB target:
//   - arming (inject + pidfd_getfd) and the arming WP scan of 1 GiB,
//   - a dirty round: PAGEMAP_SCAN (WP matching) over 1 GiB with 1% of its pages written,
//     through the addon's sync and async paths (compare: C probe 0.5-0.7 ms, docs/design.md, Kernel facts),
//   - readPages throughput on the frozen target, in 2 MiB and in 4 KiB ranges,
//   - hashPages throughput.
// Run: node dist/bench/native-micro.js [--mib N] [--rounds N]

import { arm, freeze, hashPages, PAGE_IS_WRITTEN, PM_SCAN_WP_MATCHING, readPages, type ScanArgs, type Tracker } from '../native';
import { Target } from '../test/helpers/target';

const PAGE = 4096;

function flag(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
}

const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Whole walk of [start, end) with a 64 Ki-region vec; returns pages reported. */
async function walk(tr: Tracker, args: ScanArgs, vec: BigUint64Array, async: boolean): Promise<number> {
  let pages = 0;
  for (let start = args.start; start < args.end;) {
    const r = async ? await tr.scanAsync({ ...args, start }, vec) : tr.scan({ ...args, start }, vec);
    for (let i = 0; i < r.count; i++) pages += Number(vec[3 * i + 1] - vec[3 * i]) / PAGE;
    start = r.walkEnd;
  }
  return pages;
}

async function main(): Promise<void> {
  const mib = flag('mib', 1024);
  const rounds = flag('rounds', 9);
  let t0 = process.hrtime.bigint();
  const tg = await Target.start({ mib, seed: 1 });
  console.log(`target: ${mib} MiB filled in ${ms(t0).toFixed(0)} ms (pid ${tg.pid})`);
  const start = tg.base;
  const end = start + tg.pages * PAGE;
  const vec = new BigUint64Array(3 * 65536);
  const dirtyArgs: ScanArgs = { start, end, flags: PM_SCAN_WP_MATCHING, categoryMask: PAGE_IS_WRITTEN, returnMask: PAGE_IS_WRITTEN };
  try {
    t0 = process.hrtime.bigint();
    const tr = arm(tg.pid);
    console.log(`arm (helper, inject userfaultfd + close, pidfd_getfd): ${ms(t0).toFixed(2)} ms`);
    tr.register(start, end);
    t0 = process.hrtime.bigint();
    const populated = await walk(tr, { ...dirtyArgs, returnMask: 0x3a }, vec, false);
    console.log(`arming WP scan of ${mib} MiB: ${ms(t0).toFixed(2)} ms (${populated} pages)`);

    const dirtyPages = Math.round(tg.pages / 100);
    for (const async of [false, true]) {
      const times: number[] = [];
      for (let r = 0; r < rounds; r++) {
        for (let i = 0; i < dirtyPages; i++) await tg.write(Math.floor(Math.random() * tg.pages), 1);
        t0 = process.hrtime.bigint();
        const n = await walk(tr, dirtyArgs, vec, async);
        times.push(ms(t0));
        if (n < dirtyPages * 0.95) throw new Error(`dirty round reported ${n} pages, wrote ~${dirtyPages}`);
      }
      const clean: number[] = [];
      for (let r = 0; r < rounds; r++) {
        t0 = process.hrtime.bigint();
        await walk(tr, dirtyArgs, vec, async);
        clean.push(ms(t0));
      }
      console.log(
        `dirty round (${async ? 'scanAsync' : 'scan'}) over ${mib} MiB, 1% written (${dirtyPages} pages): ` +
          `median ${median(times).toFixed(3)} ms, min ${Math.min(...times).toFixed(3)} ms; clean round median ${median(clean).toFixed(3)} ms`,
      );
    }
    tr.close();

    const f = freeze(tg.pid);
    try {
      const chunk = Buffer.alloc(64 << 20, 1); // touched: no first-write page faults in the timing
      for (const rangeBytes of [2 << 20, PAGE]) {
        const perChunk = chunk.length / rangeBytes;
        const ranges = new Float64Array(2 * perChunk);
        let bytes = 0;
        t0 = process.hrtime.bigint();
        for (let off = 0; off < tg.pages * PAGE; off += chunk.length) {
          for (let i = 0; i < perChunk; i++) {
            ranges[2 * i] = start + off + i * rangeBytes;
            ranges[2 * i + 1] = rangeBytes;
          }
          bytes += readPages(tg.pid, ranges, chunk).bytesRead;
        }
        const sec = ms(t0) / 1e3;
        console.log(`readPages of the frozen ${mib} MiB in ${rangeBytes / 1024} KiB ranges: ${(bytes / sec / 1e9).toFixed(2)} GB/s`);
      }
      const hashes = new BigUint64Array(chunk.length / PAGE);
      t0 = process.hrtime.bigint();
      for (let i = 0; i < 8; i++) hashPages(chunk, PAGE, hashes);
      console.log(`hashPages: ${((8 * chunk.length) / (ms(t0) / 1e3) / 1e9).toFixed(2)} GB/s (64 MiB buffer, from memory)`);
    } finally {
      f.thaw();
    }
  } finally {
    await tg.kill();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
