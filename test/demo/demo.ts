// `npm run demo` (via scripts/demo.mjs): the whole product in about a minute, with real processes.
//  1. a migration to an image, checked page by page against the process (image-phase.ts)
//  2. a handover: a self-checking workload moved to a destination "host" (its own network and
//     PID namespaces), running there with its pid while the source is gone (handover-phase.ts)
// Runs as root (ptrace, namespaces). Exits 0 when everything shown held; otherwise prints one line
// `demo failed: ...` and exits 1. Everything it started is undone either way (cleanup.ts).
// Options: --mib N (first part's workload, default 256), --rate BYTES_PER_SEC (its writers,
// default 20000000), --keep (keep the first part's images), --verbose (a failure's stack).

import { parseArgs } from 'node:util';
import { Cleanup } from './cleanup';
import { handoverPhase } from './handover-phase';
import { imagePhase } from './image-phase';
import { DemoFailure } from './output';

const { values } = parseArgs({
  options: { mib: { type: 'string' }, rate: { type: 'string' }, keep: { type: 'boolean' }, verbose: { type: 'boolean' } },
});

async function main(cleanup: Cleanup): Promise<void> {
  await imagePhase(cleanup, { mib: Number(values.mib ?? 256), rate: Number(values.rate ?? 20_000_000), keep: !!values.keep });
  await handoverPhase(cleanup);
}

const cleanup = new Cleanup();
const t0 = Date.now();
main(cleanup).then(
  async () => {
    await cleanup.run();
    process.stdout.write(`\ndemo: done in ${((Date.now() - t0) / 1000).toFixed(0)} s\n`);
    process.exit(0);
  },
  async (err: Error) => {
    await cleanup.run();
    // One line: a DemoFailure says what did not hold; anything else is its message's first line.
    const why = err instanceof DemoFailure ? err.message : (err.message ?? String(err)).split('\n')[0];
    process.stderr.write(`demo failed: ${why}\n`);
    if (values.verbose && !(err instanceof DemoFailure)) process.stderr.write(`${err.stack}\n`);
    process.exit(1);
  },
);
