// Destination processes built while a handover's rounds arrive (docs/design.md, Handover), so
// that the downtime does not grow with memory: one ProcessBuilder per session, opened at its
// SessionStart, following each round's layout and taking each page batch after the image store
// accepted it. At HandoverStart the commit's handler takes it and finishes it.
//
// The image on disk stays the truth. Anything going wrong with a built process (a pid taken, a
// mapping refused, the stream broken) drops it, killed; the handover then restores the committed
// image in full: slower, never different. A resumed session rebuilds it from the durable image.

import { logger } from '../../common/log';
import { prebuildFailPoint, faultVariable } from '../../common/fault-injection';
import type { Vma } from '../../common/vma';
import { heldMemory, layoutVmaByPath } from '../../image/image-memory';
import type { SessionReader } from '../../image/session-reader';
import { ProcessBuilder } from '../restore/process-builder';
import { RestoreError } from '../restore/remote';

const log = logger('handover');

export class PrebuiltProcesses {
  private readonly built = new Map<string, ProcessBuilder>();

  /** Start building session `id`'s process (pid: the source's); on a resume, from what the image holds. */
  async open(session: SessionReader, resumed: boolean): Promise<void> {
    const id = session.id;
    this.drop(id, 'opened again');
    await this.guard(id, 'open', async () => {
      const b = ProcessBuilder.spawn(session.meta.pid, (m) => {
        throw new RestoreError(m);
      });
      this.built.set(id, b);
      const memory = heldMemory(session, resumed ? session.layout : []);
      b.clearStub(memory.vmas);
      if (memory.vmas.length === 0) return;
      b.applyLayout(memory.vmas, { everyWritable: true });
      await b.fill(memory);
    });
  }

  /** A round's layout (the store accepted it). */
  layout(id: string, layout: readonly Vma[]): void {
    this.withBuilt(id, 'layout', (b) =>
      b.applyLayout(
        layout.map((v) => layoutVmaByPath(v, [])),
        { everyWritable: true },
      ),
    );
  }

  /** A page batch the store accepted. */
  pages(id: string, runs: ArrayLike<number>, zeroMap: Buffer | null, data: Buffer, pageSize: number): void {
    this.withBuilt(id, 'pages', (b) => b.writePages(runs, zeroMap, data, pageSize));
  }

  /** A Discard the store accepted. */
  discard(id: string, runs: ArrayLike<number>, pageSize: number): void {
    this.withBuilt(id, 'discard', (b) => b.discard(runs, pageSize));
  }

  /** The built process of session `id`, now the caller's (undefined: none, or it was dropped). */
  take(id: string): ProcessBuilder | undefined {
    const b = this.built.get(id);
    this.built.delete(id);
    return b;
  }

  /** Kill session `id`'s built process, if any. */
  drop(id: string, why: string): void {
    const b = this.built.get(id);
    if (!b) return;
    this.built.delete(id);
    b.kill();
    log.debug(`session ${id}: process built during pre-copy dropped (${why})`);
  }

  /** One step on the session's built process, if it has one (synchronous: in message order). */
  private withBuilt(id: string, what: string, step: (b: ProcessBuilder) => void): void {
    const b = this.built.get(id);
    if (b) void this.guard(id, what, () => step(b));
  }

  /** Run a step; a failure drops the built process (the handover restores the image in full). */
  private async guard(id: string, what: string, step: () => void | Promise<void>): Promise<void> {
    try {
      if (prebuildFailPoint() === what) throw new Error(`injected failure (${faultVariable('PREBUILD_FAIL_AT')})`);
      await step();
    } catch (err) {
      log.warn(
        `session ${id}: building the process during pre-copy failed at ${what} (${(err as Error).message}); the handover will restore the image in full`,
      );
      this.drop(id, what);
    }
  }
}
