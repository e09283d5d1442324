// The page-transfer interface (CRIU's page-xfer): where the sender's staged batches go. Two
// implementations: grpc-transfer.ts (the network, over proto/client.ts MigrationLink; the default)
// and local-transfer.ts (straight into a receiver/store ImageStore on this host: isolates the
// network in the benchmark and in tests). migrate.ts talks only to this interface, in the order
// open → (beginRound → sendBatch* → discard* → endRound)* → commit → [VERIFY_FIX round → commit]
// → report → close, or abort at any point. After a broken link (a retryable LinkError), reopen()
// starts over with SessionStart.resume: the receiver answers with its last durable round.

import type { ProcessState } from '../../image/process-state';
import type { Vma } from '../../common/vma';
import type { CommitResult, PageBatch, Phase, Report, RoundAck, RoundEnd, SessionAccepted, SessionStart, ThreadState } from '../../proto/messages';

export type { CommitResult, PageBatch, Phase, Report, RoundAck, RoundEnd, SessionAccepted, SessionStart, ThreadState };

/** What commit() takes: the final layout, the registers and the digest of what was sent. */
export interface CommitInfo {
  layout: Vma[];
  threads: ThreadState[];
  /** common/image-digest.ts digest of every page the receiver should hold. */
  imageDigest: bigint;
  imagePages: number;
  /** A restorable image's process state (image/process-state.ts); undefined: memory only. */
  processState?: ProcessState;
  /** The open round's end: the commit ends it and makes it durable together with the image. */
  finalRound?: RoundEnd;
}

export interface PageTransfer {
  /** Where the pages go, for messages: "receiver at 10.0.0.2:7070", "image directory /x". */
  readonly description: string;
  /** Streams the pages are spread over (proto/lanes.ts laneOf); 1 for an images directory. */
  readonly lanes: number;
  /** Start the session (refused: UserError naming the reason). */
  open(start: SessionStart): Promise<SessionAccepted>;
  /** After a broken link: drop it WITHOUT giving the session up, connect again (waiting at most
   *  connectTimeoutMs for the receiver) and send `start` (resume: true). Rejects as open() does;
   *  a LinkError says whether trying again may help. */
  reopen(start: SessionStart, connectTimeoutMs?: number): Promise<SessionAccepted>;
  /** Break the link now (the session stays resumable): every pending call rejects with `err`.
   *  For a receiver that stopped answering while the target waits frozen. */
  cut(err: Error): void;
  /** Start a round; `layout` is the complete memory being migrated (pages outside it are dropped). */
  beginRound(round: number, phase: Phase, layout: Vma[]): Promise<void>;
  /** Resolves once the batch is accepted (backpressure): its buffers may then be reused. */
  sendBatch(batch: PageBatch): Promise<void>;
  /** Pages the receiver holds that the target no longer has. */
  discard(runs: number[]): Promise<void>;
  /** Resolves when the round is durable on the receiver. */
  endRound(figures: RoundEnd): Promise<RoundAck>;
  /** Resolves with the receiver's answer (ok false: refused, with its message). */
  commit(c: CommitInfo): Promise<CommitResult>;
  /** Figures known only after the commit (or the failure). Best effort. */
  report(r: Report): Promise<void>;
  /** Give the session up: the receiver marks it aborted and never commits it. Never throws. */
  abort(reason: string): Promise<void>;
  /** Release the connection / files. Never throws. */
  close(): Promise<void>;
}
