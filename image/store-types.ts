// Public types of the image store (the contract shared with the gRPC server and the sender's
// local-file transfer).

import type { Vma } from '../common/vma';
import type { RoundEnd, ThreadState } from '../proto/messages';

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

/** One round's figures as the sender reports them (the wire's RoundEnd), kept per round for
 *  `receiver report` and metrics. */
export type RoundFigures = RoundEnd;

export interface CommitRequest {
  layout: Vma[];
  threads: ThreadState[];
  imageDigest: bigint;
  imagePages: number;
}

export interface CommitOutcome {
  ok: boolean;
  /** The receiver's running digest of the pages it holds (verify recomputes it from disk). */
  imageDigest: bigint;
  imagePages: number;
  message: string;
}

export interface RoundDurable {
  round: number;
  /** Pages the image holds after this round. */
  pagesStored: number;
  /** Page bytes written to disk in this round. */
  durableBytes: number;
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
}

export interface VerifyResult {
  ok: boolean;
  /** Why not ok (empty when ok). */
  problems: string[];
  /** Recomputed from disk, when it could be. */
  digest?: bigint;
  pages?: number;
  manifest?: ImageManifest;
}
