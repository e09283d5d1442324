// Everything the demo starts (receivers, workloads, namespaces, temporary directories) is undone
// here, last first, whether the demo succeeds, fails or is interrupted: each step registers its
// undo as soon as the thing exists, so a failure halfway leaves nothing behind.

type Undo = () => unknown;

export class Cleanup {
  private readonly undos: Undo[] = [];
  private running: Promise<void> | null = null;

  constructor() {
    // Ctrl-C or a kill: undo, then exit as interrupted (the helpers' exit hooks run after).
    for (const sig of ['SIGINT', 'SIGTERM'] as const) {
      process.once(sig, () => void this.run().finally(() => process.exit(130)));
    }
  }

  add(undo: Undo): void {
    this.undos.push(undo);
  }

  /** Undo everything registered, last first; an undo that throws does not stop the others. */
  run(): Promise<void> {
    this.running ??= (async () => {
      for (const undo of this.undos.reverse()) {
        try {
          await undo();
        } catch (e) {
          process.stderr.write(`demo: cleanup: ${(e as Error).message}\n`);
        }
      }
    })();
    return this.running;
  }
}
