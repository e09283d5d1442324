// Whatever the bench starts or creates (targets, receivers, image directories) registers how to
// undo it here; the undo runs when the job is done, and in any case when the bench exits, is
// interrupted (SIGINT, SIGTERM) or fails. Undo steps are synchronous so that they also run from
// the 'exit' event.

const steps = new Set<() => void>();

/** Register an undo step; returns a function that runs it now (once) and forgets it. */
export function onCleanup(step: () => void): () => void {
  let done = false;
  const run = () => {
    if (done) return;
    done = true;
    steps.delete(run);
    try {
      step();
    } catch {
      /* best effort: the thing may be gone already */
    }
  };
  steps.add(run);
  return run;
}

export function cleanupAll(): void {
  for (const run of [...steps].reverse()) run();
}

let installed = false;

export function installCleanupHandlers(): void {
  if (installed) return;
  installed = true;
  process.on('exit', cleanupAll);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      process.stderr.write(`bench: ${sig}: cleaning up\n`);
      cleanupAll();
      process.exit(130);
    });
  }
}
