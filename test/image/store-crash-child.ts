// Child process of the crash tests: node store-crash-child.js DIR SESSION STEP... creates the
// session and plays the steps (see store-crash-scenario.ts); PRECOPY_FAULT_STORE_CRASH_AT makes the
// store SIGKILL this process at a named point. Prints "STEP done" after each step.

import { ImageStore } from '../../image/image-store';
import { Model } from './store-helpers';
import { LAYOUT, playSteps, type Step } from './store-crash-scenario';

async function main(): Promise<void> {
  const [dir, id, ...steps] = process.argv.slice(2);
  const store = new ImageStore(dir);
  const img = await store.create({
    sessionId: id,
    sourceHost: 'crash-child',
    pid: process.pid,
    pageSize: 4096,
    kernel: 'test',
    command: 'crash-child',
    memoryBytes: 0,
    createdAt: new Date().toISOString(),
  });
  const model = new Model();
  model.setLayout(LAYOUT);
  await playSteps(img, model, steps as Step[], (s) => process.stdout.write(`${s}\n`));
  await img.close();
  process.stdout.write('finished\n');
}

main().catch((err) => {
  process.stderr.write(`crash-child: ${(err as Error).stack}\n`);
  process.exit(1);
});
