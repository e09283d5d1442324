// Public types of the image store (the contract shared with the gRPC server and the sender's
// local-file transfer). Where the store takes or gives exactly what crosses the link (a round's
// phase and figures, a thread's registers, a round's acknowledgement) it uses the wire's type
// from proto/messages.ts under the wire's name, re-exported here.

import type { Vma } from '../common/vma';
import type { Phase, RoundAck, RoundEnd, ThreadState } from '../proto/messages';
import type { ProcessState } from './process-state';

export type { Phase, RoundAck, RoundEnd, ThreadState };
export { PHASES } from '../proto/messages';

export interface SessionMeta {
  sessionId: string;
  sourceHost: string;
  pid: number;
  pageSize: number;
  kernel: string;
  command: string;
  memoryBytes: number;
  /** ISO 8601. */
  createdAt: string;
  /** The sender's --downtime-ms in seconds, for the report and metrics (absent: not given). */
  downtimeTargetSeconds?: number;
}

export type SessionState = 'receiving' | 'committed' | 'failed' | 'aborted';
export const SESSION_STATES: readonly SessionState[] = ['receiving', 'committed', 'failed', 'aborted'];

export interface SessionSummary {
  meta: SessionMeta;
  state: SessionState;
  /** Rounds made durable. */
  rounds: number;
  /** Pages the image holds (data and zero pages). */
  imagePages: number;
  /** imagePages * page size: the memory the image describes (zero pages take no disk space). */
  imageBytes: number;
  /** ISO 8601 time of the last durable change. */
  updatedAt: string;
  reason?: string;
}

/** A durable round as state.json records it: the sender's figures (the wire's RoundEnd, kept for
 *  `receiver report` and metrics), its phase and when it became durable. */
export interface StoredRound {
  round: number;
  phase: Phase;
  endedAt: string;
  figures: RoundEnd;
}

export interface CommitRequest {
  /** What a restore needs beyond memory (a restorable image); undefined: memory only. */
  processState?: ProcessState;
  layout: Vma[];
  threads: ThreadState[];
  imageDigest: bigint;
  imagePages: number;
  /** The open round, ended by this commit and made durable with it (one set of fsyncs). */
  finalRound?: RoundEnd | null;
}

export interface CommitOutcome {
  ok: boolean;
  /** The receiver's running digest of the pages it holds (verify recomputes it from disk). */
  imageDigest: bigint;
  imagePages: number;
  message: string;
}

/** What a committed image is (manifest.json, decoded). */
export interface ImageManifest {
  sessionId: string;
  meta: SessionMeta;
  commit: number;
  committedAt: string;
  layout: Vma[];
  threads: ThreadState[];
  imageDigest: bigint;
  imagePages: number;
  dataPages: number;
  /** Present in a restorable image (sender migrate --restorable). */
  processState?: ProcessState;
}

/** What `verify` found: the stored image checked against its manifest, the digest recomputed
 *  from disk. */
export interface ImageVerification {
  ok: boolean;
  /** Why not ok (empty when ok). */
  problems: string[];
  /** Recomputed from disk, when it could be. */
  digest?: bigint;
  pages?: number;
  manifest?: ImageManifest;
}
