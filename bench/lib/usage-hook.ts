// Preloaded into the sender by the bench (node --require): when the process exits, writes its
// peak RSS (VmHWM), CPU seconds (all threads) and those of the main thread apart from the others
// (libuv pool, V8 GC helpers) as JSON to $PRECOPY_BENCH_USAGE_FILE. Read at exit,
// so the figures cover the whole migration, not a sample taken while it ran.

import { readFileSync, writeFileSync } from 'node:fs';
import { threadCpu } from './proc-stat';

export interface ProcessUsage {
  peakRssBytes: number;
  userSeconds: number;
  systemSeconds: number;
  /** CPU seconds of the main (JS) thread and of the other threads still alive at exit. */
  threads: { main: number; others: number };
}

const file = process.env.PRECOPY_BENCH_USAGE_FILE;
if (file) {
  process.on('exit', () => {
    const hwm = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
    const u = process.resourceUsage();
    const usage: ProcessUsage = {
      peakRssBytes: Number(hwm?.[1] ?? NaN) * 1024,
      userSeconds: u.userCPUTime / 1e6,
      systemSeconds: u.systemCPUTime / 1e6,
      threads: threadCpu(process.pid),
    };
    writeFileSync(file, JSON.stringify(usage));
  });
}
