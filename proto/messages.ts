// TypeScript shapes of the precopy.v1 messages as they cross the link, i.e. as proto-loader
// produces them with PROTO_LOADER_OPTIONS (camelCase fields, uint64 as number, bytes as Buffer,
// enums as strings, oneof name in `msg`). proto/migration.proto stays the contract; these types
// only mirror it so that both ends are type-checked.

import type { Vma } from '../common/vma';
import type { ThreadState } from '../native';

export type { Vma };
/** A thread's registers, as the sender's freeze captures them (native Frozen.threads()), the wire
 *  carries them and the image stores them: one shape, defined in native/ (the layer below). */
export type { ThreadState };

/** A round's phase: in RoundStart, in the sender's round records and in the image's. */
export type Phase = 'PRECOPY' | 'STOP_AND_COPY' | 'VERIFY_FIX';
export const PHASES: readonly Phase[] = ['PRECOPY', 'STOP_AND_COPY', 'VERIFY_FIX'];

export type Encoding = 'RAW' | 'LZ4';

export interface SessionStart {
  sessionId: string;
  sourceHost: string;
  pid: number;
  pageSize: number;
  kernel: string;
  command: string;
  resume: boolean;
  memoryBytes: number;
  /** The sender's downtime target (0 = not given); for metrics and the session report. */
  downtimeTargetSeconds: number;
  /** --handover: the sender will ask for the process to be started here after the commit. */
  handover?: boolean;
  /** Real uid of the target (the receiver's --handover-users check). */
  uid?: number;
  /** With resume: a session committed by a Commit whose answer was lost may be reopened. */
  reopenCommitted?: boolean;
}

export interface RoundStart {
  round: number;
  phase: Phase;
  layout: Vma[];
}

export interface PageBatch {
  /** Packed (start address, page count) pairs. */
  runs: number[];
  /** One bit per page in run order; empty when the batch has no zero pages. */
  zeroMap: Buffer;
  encoding: Encoding;
  /** (pages - zero pages) * page size. */
  rawLength: number;
  payload: Buffer;
  /** Not on the wire: bytes just before `payload`, in the same memory, that the sender's encoder
   *  may overwrite with the message header instead of copying the payload (page-codec.ts). */
  payloadHeadroom?: number;
}

export interface Discard {
  runs: number[];
}

export interface RoundEnd {
  round: number;
  dirtyPages: number;
  zeroPages: number;
  rawBytes: number;
  wireBytes: number;
  durationSeconds: number;
  dirtyRateBytesPerSecond: number;
  transferRateBytesPerSecond: number;
  expectedDowntimeSeconds: number;
  remainingBytes: number;
  throttlePercent: number;
  batches: number;
  /** Batches sent on lanes 1..N-1, uint32 LE each (empty: no lanes). Not a figure: not stored. */
  laneBatches?: Buffer;
}

export interface LaneStart {
  sessionId: string;
  lane: number;
  laneKey: Buffer;
}

export interface Commit {
  layout: Vma[];
  threads: ThreadState[];
  /** 8 bytes, little-endian (common/image-digest.ts digestToBuffer). */
  imageDigest: Buffer;
  imagePages: number;
  /** image/process-state.ts encodeProcessState(); empty: a memory-only image. */
  processState?: Buffer;
  /** The open round this commit ends (made durable with it); null/absent: none may be open. */
  finalRound?: RoundEnd | null;
}

export interface Report {
  stopReason: string;
  downtimeSeconds: number;
  frozenSeconds: number;
  totalSeconds: number;
  bytesSent: number;
  memoryBytes: number;
  verify: string;
  verifyMismatches: number;
  result: string;
  error: string;
}

/** One SenderMessage; `msg` names the oneof member that is set. */
export type SenderMessage =
  | { msg: 'start'; start: SessionStart }
  | { msg: 'roundStart'; roundStart: RoundStart }
  | { msg: 'pages'; pages: PageBatch }
  | { msg: 'discard'; discard: Discard }
  | { msg: 'roundEnd'; roundEnd: RoundEnd }
  | { msg: 'commit'; commit: Commit }
  | { msg: 'report'; report: Report }
  | { msg: 'handover'; handover: Record<string, never> }
  | { msg: 'lane'; lane: LaneStart };

/** What the sender may pass: every field optional except the oneof choice (proto3 defaults). */
export type OutgoingSenderMessage =
  | { start: Partial<SessionStart> }
  | { roundStart: Partial<RoundStart> }
  | { pages: PageBatch }
  | { discard: Discard }
  | { roundEnd: Partial<RoundEnd> & { round: number } }
  | { commit: Partial<Commit> }
  | { report: Partial<Report> }
  | { handover: Record<string, never> }
  | { lane: LaneStart };

export interface SessionAccepted {
  sessionId: string;
  resumed: boolean;
  /** -1 when no round is durable. */
  lastDurableRound: number;
  /** What a LaneStart must present to join this session (empty from a receiver without lanes). */
  laneKey?: Buffer;
}

export interface RoundAck {
  round: number;
  pagesStored: number;
  durableBytes: number;
}

export interface CommitResult {
  ok: boolean;
  imageDigest: Buffer;
  imagePages: number;
  message: string;
}

export interface HandoverResult {
  ok: boolean;
  pid: number;
  restoreSeconds: number;
  message: string;
  /** Built while the rounds arrived; false: restored in full after the commit. */
  prebuilt: boolean;
}

/** The durable decision of a handover (receiver/handover/handover-record.ts). */
export type HandoverState = 'starting' | 'running' | 'rolled-back';

export interface HandoverRecord {
  state: HandoverState;
  pid: number;
  reason: string;
}

export type ReceiverMessage =
  | { msg: 'accepted'; accepted: SessionAccepted }
  | { msg: 'roundAck'; roundAck: RoundAck }
  | { msg: 'commit'; commit: CommitResult }
  | { msg: 'handover'; handover: HandoverResult }
  | { msg: 'laneAccepted'; laneAccepted: { lane: number } };

export type OutgoingReceiverMessage =
  { accepted: SessionAccepted } | { roundAck: RoundAck } | { commit: CommitResult } | { handover: HandoverResult } | { laneAccepted: { lane: number } };
