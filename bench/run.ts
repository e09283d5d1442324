// `npm run bench` (= build, then node dist/bench/run.js): precopy against the limits and the tools
// people use, measured in the same run on this machine. Sections:
//   1. throughput    round 0 end to end vs process_vm_readv (bench/baselines/pvr-read.c)
//   2. scan          one dirty round: the sender's scan path vs the raw ioctl and a pagemap read
//   3. downtime      downtime and convergence at 0-400 MB/s of dirtying, with and without verify
//   4. alternatives  gcore's and criu's pause on the same kind of target
//   5. resources     sender peak RSS and CPU (from section 1's runs)
//   6. restore       receiver restore of a --restorable image vs reading its pages from the store
//   7. handover      downtime from the freeze to the process running at the destination; rollback
//   8. slowdown      a redis-server's requests/s and latency before, during and after its migration
// Writes bench/results.json, table.txt and chart.svg; prints the table. How to read it:
// bench/README.md.
//
//   node dist/bench/run.js [--only throughput,scan,downtime,alternatives,restore,handover,slowdown] [--runs N] [--configs 1,7] [--node-flags F] [--out DIR]

import { mkdirSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseFlags, parseIntFlag } from '../common/cli';
import { UserError, runMain } from '../common/errors';
import { REPO_ROOT } from '../test/helpers/target';
import { buildBaselines } from './lib/baselines';
import { cleanupAll, installCleanupHandlers } from './lib/cleanup';
import type { BenchContext } from './lib/context';
import { setNodeFlags } from './lib/migration';
import { loadAverage } from './lib/proc-stat';
import { renderChart } from './report/chart';
import { alternativesResult, judgeGoals, renderResults, resourcesOf, type BenchResults } from './report/results';
import { runAlternatives } from './sections/alternatives';
import { runDowntime } from './sections/downtime';
import { runHandover } from './sections/handover';
import { runRestore } from './sections/restore';
import { runScan } from './sections/scan';
import { runSlowdown } from './sections/slowdown';
import { THROUGHPUT_CONFIGS, runThroughput } from './sections/throughput';

const SECTIONS = ['throughput', 'scan', 'downtime', 'alternatives', 'restore', 'handover', 'slowdown'] as const;
type Section = (typeof SECTIONS)[number];

const USAGE = `usage: node dist/bench/run.js [--only SECTION,...] [--runs N] [--configs N,...] [--node-flags F] [--out DIR]

Benchmarks precopy against baselines measured in the same run (see bench/README.md).
  --only LIST   sections to run, comma-separated: ${SECTIONS.join(', ')} (default: all;
                resources come with throughput)
  --runs N      runs per figure, each shown as median (min-max) (default 3; scan runs at least 5)
  --configs L   throughput rows to run, by number (1-${THROUGHPUT_CONFIGS.length}, comma-separated; default all):
${THROUGHPUT_CONFIGS.map((c, i) => `                  ${i + 1} ${c.name}`).join('\n')}
  --node-flags F
                node/V8 flags for every sender and receiver process the bench starts, space-separated
                (e.g. --node-flags=--initial-old-space-size=128; default none)
  --out DIR     where results.json, table.txt and chart.svg go (default bench/)`;

const OPTIONS = {
  only: { type: 'string' },
  runs: { type: 'string' },
  configs: { type: 'string' },
  'node-flags': { type: 'string' },
  out: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

runMain('bench', async () => {
  const { values: v } = parseFlags(process.argv.slice(2), OPTIONS, USAGE);
  if (v.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const only = (v.only ?? SECTIONS.join(',')).split(',').map((s) => s.trim());
  for (const s of only) if (!(SECTIONS as readonly string[]).includes(s)) throw new UserError(`--only: unknown section '${s}'\n\n${USAGE}`);
  const want = (s: Section) => only.includes(s);
  const runs = parseIntFlag(v.runs, '--runs', 3, 1, 50);
  // One throughput row alone (a change to the page path measured without the 6-minute whole).
  const configs = (v.configs ?? THROUGHPUT_CONFIGS.map((_, i) => i + 1).join(','))
    .split(',')
    .map((n) => THROUGHPUT_CONFIGS[parseIntFlag(n.trim(), '--configs', 1, 1, THROUGHPUT_CONFIGS.length) - 1]);
  // The reports go where bench/README.md names them (bench/results.json, table.txt, chart.svg: git-ignored);
  // the compiled baselines are build products and stay in bench/out/bin.
  const outDir = path.resolve(v.out ?? path.join(REPO_ROOT, 'bench'));
  if (process.getuid?.() !== 0) throw new UserError('the bench arms and freezes processes: run it as root (or with CAP_SYS_PTRACE)');

  setNodeFlags((v['node-flags'] ?? '').split(/\s+/).filter(Boolean));
  installCleanupHandlers();
  const t0 = performance.now();
  const startedAt = new Date().toISOString();
  const loadBefore = loadAverage();
  const progress = (msg: string) => process.stderr.write(`bench: ${msg}\n`);
  const ctx: BenchContext = { bins: await buildBaselines(path.join(REPO_ROOT, 'bench', 'out')), runs, progress };

  try {
    // 1./5. throughput and resources; 2. scan; 3. downtime; 4. alternatives (uses 3's figures);
    // 6. restore, last: its store read tunes this process's GC for page buffers (ImageStore).
    const throughput = want('throughput') ? await runThroughput(ctx, configs) : undefined;
    const scan = want('scan') ? await runScan(ctx) : undefined;
    const downtime = want('downtime') ? await runDowntime(ctx) : undefined;
    const alternatives = want('alternatives') ? alternativesResult(await runAlternatives(ctx), downtime) : undefined;
    const restore = want('restore') ? await runRestore(ctx) : undefined;
    const handover = want('handover') ? await runHandover(ctx) : undefined;
    const slowdown = want('slowdown') ? await runSlowdown(ctx) : undefined;
    const partial: Omit<BenchResults, 'goals'> = {
      startedAt,
      seconds: (performance.now() - t0) / 1000,
      runs,
      machine: {
        cpus: os.cpus().length,
        memoryGiB: Math.round(os.totalmem() / 2 ** 30),
        kernel: os.release(),
        node: process.versions.node,
        loadBefore,
        loadAfter: loadAverage(),
      },
      throughput,
      scan,
      downtime,
      alternatives,
      resources: throughput ? resourcesOf(throughput) : undefined,
      restore,
      handover,
      slowdown,
    };
    const results: BenchResults = { ...partial, goals: judgeGoals(partial) };
    const table = renderResults(results);
    mkdirSync(outDir, { recursive: true });
    writeFileSync(path.join(outDir, 'results.json'), `${JSON.stringify(results, null, 2)}\n`);
    writeFileSync(path.join(outDir, 'table.txt'), table);
    writeFileSync(path.join(outDir, 'chart.svg'), renderChart(results));
    process.stdout.write(`${table}\nwritten: ${path.join(outDir, 'results.json')}, table.txt, chart.svg\n`);
    return 0;
  } finally {
    cleanupAll();
  }
});
