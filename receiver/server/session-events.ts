// What the migration service tells the outside world about sessions: the receiver's metrics
// (common/metrics/migration-metrics.ts MigrationMetrics has these methods, ReceiverMetrics the
// rest) or nothing. Its handovers' events (handover/handover-events.ts) are part of it: the
// service hands the same object to its Handovers.

import type { RefusalReason } from '../receiver-metrics';
import { NO_HANDOVER_EVENTS, type HandoverEvents } from '../handover/handover-events';
import type { Report, RoundEnd, SessionStart } from '../../proto/messages';

export interface SessionEvents extends HandoverEvents {
  /** A session was created or resumed by a stream. */
  sessionStarted(start: SessionStart): void;
  /** A round is durable (after its RoundAck went out). */
  roundEnded(sessionId: string, figures: RoundEnd): void;
  /** The session is over: committed (with the sender's Report when it sent one), failed, aborted. */
  sessionEnded(sessionId: string, outcome: Pick<Report, 'result'> & Partial<Report>): void;
  /** A stream was refused or ended for the token (auth.ts) or a limit (session-limits.ts). */
  streamRefused(reason: RefusalReason): void;
  /** A resume took a session over from a stale stream of this receiver. */
  sessionTakenOver(sessionId: string): void;
}

export const NO_EVENTS: SessionEvents = {
  ...NO_HANDOVER_EVENTS,
  sessionStarted: () => undefined,
  roundEnded: () => undefined,
  sessionEnded: () => undefined,
  streamRefused: () => undefined,
  sessionTakenOver: () => undefined,
};
