// What Handovers tells the outside world about handovers: the receiver's metrics
// (receiver/receiver-metrics.ts has these methods) or nothing. An interface, so that the handover
// code has no metrics dependency and runs with no events at all (tests, a receiver without
// --metrics-listen).

/** Why a handover ended rolled back (the source goes on running): a closed set, so the metric's
 *  reason label stays bounded whatever a restore error says. */
export const ROLLBACK_REASONS = [
  /** Nothing was started: the policy, an image that is not restorable, a session already decided
   *  or being decided, or the image or the `starting` record could not be read or written. */
  'refused',
  /** The restore failed; it killed the half-made process. */
  'restore_failed',
  /** A Resolve found no record: the ask never arrived, and the session was closed to it. */
  'never_asked',
  /** A `starting` record an earlier run of the receiver left, decided with no process running. */
  'receiver_restart',
] as const;
export type RollbackReason = (typeof ROLLBACK_REASONS)[number];

export interface HandoverEvents {
  /** A HandoverStart arrived; it ends in exactly one handoverSucceeded or handoverRolledBack. */
  handoverStarted(): void;
  /** The process runs here (its `running` record is written); restoreSeconds: the restore's time. */
  handoverSucceeded(restoreSeconds: number): void;
  /** A handover was decided rolled back: a start that failed, or a decision Resolve or a restart made. */
  handoverRolledBack(reason: RollbackReason): void;
  /** A process handoverSucceeded counted has ended (reaped) or is no longer this receiver's child. */
  handedOverProcessEnded(): void;
}

export const NO_HANDOVER_EVENTS: HandoverEvents = {
  handoverStarted: () => undefined,
  handoverSucceeded: () => undefined,
  handoverRolledBack: () => undefined,
  handedOverProcessEnded: () => undefined,
};
