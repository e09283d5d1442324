// precopy.v1.Migration on the receiver: owns the image store, the live streams, and the
// abandonment of sessions whose sender went away.
//
// A session whose stream breaks stays 'receiving', durable at its last acknowledged round, so a
// sender that reconnects can resume it (docs/design.md, Resume). If no stream takes it again within
// `abandonAfterMs` (default 10 minutes; also counted from startup for sessions an earlier run left
// receiving), it is marked aborted, and `receiver gc` may remove it.
//
// A broken connection is not always noticed at once (a cut network looks like a quiet one until
// the keepalive gives up), so a sender may resume a session whose old stream this receiver still
// holds: the resume takes the session over (see claim below). A session held by another receiver
// process (its owner.lock names a live pid) is refused by the store as before.

import { logger } from '../../common/log';
import { ImageStore } from '../../image/image-store';
import { MigrationStream, type MigrateCall, type StreamHost } from './migration-stream';
import { NO_EVENTS, type SessionEvents } from './session-events';
import { DEFAULT_LIMITS, SessionSlots, type ReceiverLimits } from './session-limits';
import { Handovers } from '../handover/handovers';
import { NO_HANDOVERS, type HandoverPolicy } from '../handover/handover-policy';

const log = logger('server');

export const DEFAULT_ABANDON_AFTER_MS = 10 * 60 * 1000;

export interface MigrationServiceOptions {
  imagesDir: string;
  abandonAfterMs?: number;
  events?: SessionEvents;
  limits?: Partial<ReceiverLimits>;
  /** serve --accept-handover and friends; default: no handovers. */
  handover?: HandoverPolicy;
}

export class MigrationService implements StreamHost {
  readonly store: ImageStore;
  readonly imagesDir: string;
  readonly events: SessionEvents;
  readonly limits: ReceiverLimits;
  readonly handovers: Handovers;
  private readonly abandonAfterMs: number;
  private readonly slots: SessionSlots<MigrationStream>;
  private readonly streams = new Set<MigrationStream>();
  private readonly abandonTimers = new Map<string, NodeJS.Timeout>();

  constructor(opts: MigrationServiceOptions) {
    this.imagesDir = opts.imagesDir;
    this.store = new ImageStore(opts.imagesDir);
    this.events = opts.events ?? NO_EVENTS;
    this.abandonAfterMs = opts.abandonAfterMs ?? DEFAULT_ABANDON_AFTER_MS;
    this.limits = { ...DEFAULT_LIMITS, ...opts.limits };
    this.slots = new SessionSlots(this.limits.maxSessions);
    this.handovers = new Handovers(opts.handover ?? NO_HANDOVERS, opts.imagesDir, this.events);
  }

  /** Schedule the abandonment of sessions an earlier run left receiving. */
  async start(): Promise<void> {
    let waiting = 0;
    const sessions = await this.store.list();
    // A handover start an earlier run did not finish is decided before anyone can ask.
    await this.handovers.recover(sessions.filter((s) => s.state === 'committed').map((s) => s.meta.sessionId));
    for (const s of sessions) {
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

  /**
   * Before a stream opens session `id`: take a slot (--max-sessions), or take the session over
   * from a stream of this receiver that still holds it when `resume` is set (that stream is ended
   * as a broken one: its session is released durable at its last acknowledged round, its pending
   * writes settled). Returns false when another stream holds the session and it is not taken
   * over: the store then refuses with its own message.
   */
  async claim(id: string, stream: MigrationStream, resume: boolean, reopen = false): Promise<boolean> {
    const old = this.slots.holder(id);
    if (old === undefined || old === stream) {
      this.slots.claim(id, stream);
      return true;
    }
    if (!resume || !(old.resumable || (reopen && old.committed))) return false;
    this.slots.claim(id, stream);
    log.warn(
      `session ${id}: a resume from ${stream.peer} takes it over from the stream of ${old.peer}, which still held it (a connection gone stale?); ending that stream`,
    );
    this.events.sessionTakenOver(id);
    await old.takenOver(stream.peer);
    return true;
  }

  /** The stream no longer holds (or will not open) session `id`. */
  unclaim(id: string, stream: MigrationStream): void {
    this.slots.release(id, stream);
  }

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

  holderOf(id: string): MigrationStream | undefined {
    return this.slots.holder(id);
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
