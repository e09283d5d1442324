// precopy.v1.Migration on the receiver: owns the image store, the live streams, and the
// abandonment of sessions whose sender went away.
//
// A session whose stream breaks stays 'receiving', durable at its last acknowledged round, so a
// sender that reconnects can resume it (issue 6). If no stream takes it again within
// `abandonAfterMs` (default 10 minutes; also counted from startup for sessions an earlier run left
// receiving), it is marked aborted, and `receiver gc` may remove it.

import { logger } from '../../common/log';
import { ImageStore } from '../store/image-store';
import { MigrationStream, type MigrateCall, type StreamHost } from './migration-stream';
import { NO_EVENTS, type SessionEvents } from './session-events';

const log = logger('server');

export const DEFAULT_ABANDON_AFTER_MS = 10 * 60 * 1000;

export interface MigrationServiceOptions {
  imagesDir: string;
  abandonAfterMs?: number;
  events?: SessionEvents;
}

export class MigrationService implements StreamHost {
  readonly store: ImageStore;
  readonly imagesDir: string;
  readonly events: SessionEvents;
  private readonly abandonAfterMs: number;
  private readonly streams = new Set<MigrationStream>();
  private readonly abandonTimers = new Map<string, NodeJS.Timeout>();

  constructor(opts: MigrationServiceOptions) {
    this.imagesDir = opts.imagesDir;
    this.store = new ImageStore(opts.imagesDir);
    this.events = opts.events ?? NO_EVENTS;
    this.abandonAfterMs = opts.abandonAfterMs ?? DEFAULT_ABANDON_AFTER_MS;
  }

  /** Schedule the abandonment of sessions an earlier run left receiving. */
  async start(): Promise<void> {
    let waiting = 0;
    for (const s of await this.store.list()) {
      if (s.state !== 'receiving') continue;
      this.sessionLeft(s.meta.sessionId);
      waiting++;
    }
    if (waiting) log.info(`${waiting} session(s) left receiving by an earlier run can be resumed for ${this.abandonAfterMs / 1000}s`);
  }

  /** The grpc-js handler of Migrate. */
  readonly migrate = (call: MigrateCall): void => {
    this.streams.add(new MigrationStream(call, this));
  };

  sessionTaken(id: string): void {
    const t = this.abandonTimers.get(id);
    if (t) clearTimeout(t);
    this.abandonTimers.delete(id);
  }

  sessionLeft(id: string): void {
    this.sessionTaken(id);
    const t = setTimeout(() => void this.abandon(id), this.abandonAfterMs);
    t.unref(); // never keeps the process alive on its own
    this.abandonTimers.set(id, t);
  }

  streamDone(stream: MigrationStream): void {
    this.streams.delete(stream);
  }

  /** Streams in progress. */
  get activeStreams(): number {
    return this.streams.size;
  }

  /** Resolves once every stream is over and has released its session (after a forced shutdown). */
  async settled(): Promise<void> {
    await Promise.all([...this.streams].map((s) => s.done));
  }

  close(): void {
    for (const t of this.abandonTimers.values()) clearTimeout(t);
    this.abandonTimers.clear();
  }

  private async abandon(id: string): Promise<void> {
    this.abandonTimers.delete(id);
    let session;
    try {
      session = await this.store.resume(id);
    } catch (err) {
      // Taken again, committed, failed or removed meanwhile: nothing to abandon.
      log.debug(`session ${id}: not abandoned: ${(err as Error).message}`);
      return;
    }
    try {
      const reason = `abandoned: no sender resumed it within ${Math.round(this.abandonAfterMs / 1000)}s`;
      await session.abort(reason);
      this.events.sessionEnded(id, { result: 'aborted', error: reason });
      log.info(`session ${id}: ${reason}`);
    } catch (err) {
      log.warn(`session ${id}: could not mark it aborted: ${(err as Error).message}`);
    } finally {
      await session.close().catch(() => undefined);
    }
  }
}
