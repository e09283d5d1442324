// The figures a migration produces: one record per round and the summary. The same objects feed
// the per-round table, the summary lines, --json and the receiver's Report message, so the human
// and machine outputs can never disagree.

import type { Phase } from '../../proto/messages';
import type { StopReason } from '../convergence';

export interface RoundRecord {
  round: number;
  phase: Phase;
  /** Pages found dirty (round 0: populated; VERIFY_FIX: found different), zero pages included. */
  dirtyPages: number;
  zeroPages: number;
  /** Page bytes read and sent, zero pages excluded (before compression). */
  rawBytes: number;
  /** Payload bytes on the wire. */
  wireBytes: number;
  batches: number;
  durationSeconds: number;
  /** Page bytes dirtied per second while the previous round ran. */
  dirtyRateBytesPerSecond: number;
  /** Page bytes moved per second (the convergence bandwidth, see sender/convergence.ts). */
  bandwidthBytesPerSecond: number;
  /** Estimate after this round: its dirty page bytes / bandwidth. */
  expectedDowntimeSeconds: number;
  /** Auto-converge throttle in force during this round (percent of each 100 ms frozen). */
  throttlePercent: number;
  /** VMAs that appeared (registered and sent whole) / vanished since the previous round. */
  newVmas: number;
  vanishedVmas: number;
  /** Pages dropped on the receiver (stop-and-copy reconciliation). */
  discardedPages: number;
}

export type VerifyResult =
  | {
      mode: 'ok' | 'fixed';
      /** Pages found different and re-sent. */
      mismatches: number;
      /** The whole pass, fixes included. */
      seconds: number;
      /** Verified from a copy-on-write snapshot after the thaw (docs/design.md, Verify off the
       *  freeze); false: all of it while frozen. */
      offFreeze: boolean;
      /** Of `seconds`, spent with the target frozen (the snapshot's leftovers: shared memory...). */
      frozenSeconds: number;
    }
  | { mode: 'skipped'; mismatches: 0; seconds: 0 };

export interface MigrationSummary {
  result: 'committed';
  sessionId: string;
  pid: number;
  to: string;
  pageSize: number;
  rounds: RoundRecord[];
  /** Pre-copy rounds before the freeze (round 0 included). */
  precopyRounds: number;
  stopReason: StopReason;
  stopWhy: string;
  downtimeTargetSeconds: number;
  /** Freeze to the receiver's commit acknowledgement. */
  downtimeSeconds: number;
  /** Freeze to thaw (verification included). */
  frozenSeconds: number;
  totalSeconds: number;
  /** Payload bytes on the wire, all rounds. */
  bytesSent: number;
  /** Page bytes read and sent before compression, all rounds. */
  rawBytesSent: number;
  /** Bytes of the committed image (pages it holds x page size). */
  memoryBytes: number;
  imagePages: number;
  imageDigest: string;
  /** rawBytesSent / bytesSent (1 when nothing was compressed). */
  compressionRatio: number;
  verify: VerifyResult;
  after: 'resume' | 'stop' | 'kill';
  /** --handover: the process runs at the destination (the source was killed). */
  handover?: HandoverFigures;
  maxThrottlePercent: number;
  /** Times the link broke and the session was resumed (--reconnect-timeout). */
  reconnects: number;
}

/** Freeze to commit, split: the freeze itself, the process state capture, the final round (the
 *  last dirty pages, reconciled, made durable), the commit. */
export interface FreezeSplit {
  freezeSeconds: number;
  captureSeconds: number;
  finalRoundSeconds: number;
  commitSeconds: number;
}

/** The downtime of a handover, split: freeze to the commit acknowledgement (and its steps), the
 *  verify pass, the receiver's restore, and in total from the freeze until the destination process runs. */
export interface HandoverFigures extends FreezeSplit {
  destinationPid: number;
  freezeToCommitSeconds: number;
  verifySeconds: number;
  restoreSeconds: number;
  /** The receiver built the process while the rounds arrived: its restore was only what remained. */
  prebuilt: boolean;
  totalDowntimeSeconds: number;
}

export function verifyText(v: VerifyResult): string {
  if (v.mode === 'skipped') return 'skipped';
  const what = v.mode === 'ok' ? 'ok' : `fixed ${v.mismatches} pages`;
  return v.offFreeze ? `${what} (off the freeze, ${(v.seconds * 1000).toFixed(0)} ms)` : what;
}
