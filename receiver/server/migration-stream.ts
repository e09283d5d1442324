// (Over 400 lines on purpose: every transition of the protocol is here, so its order rules read
// together; decoding, checks and storage live in their own files.)
// One Migrate stream: the protocol state machine between the wire and the image store.
//
// Messages are handled one at a time, in order, each awaited before the next (reading pauses
// when a few are queued: that is the backpressure that reaches the sender through HTTP/2 flow
// control). Order: SessionStart, then rounds (RoundStart, PageBatch/Discard*, RoundEnd), then
// Commit, then Report; after a successful Commit a VERIFY_FIX round and a new Commit may follow.
// A refused Commit (CommitResult ok=false: the digest recomputed from disk differs) leaves the
// session receiving: more rounds and a new Commit may follow. A Report with result aborted/failed
// before the commit gives the session up.
//
// How a stream ends:
// - bad message: the session is marked failed, the stream ends with a status naming the problem;
// - client gone (cancel, broken connection, deadline, server shutdown): the session is left as
//   it is, durable at its last acknowledged round, resumable (the service abandons it later);
// - client half-close: after the commit, OK; before it, the session is left resumable;
// - taken over (a resume of its session by another stream, see MigrationService.claim): ended with
//   ABORTED, the session released as on a broken stream.
//
// Limits (session-limits.ts): a session slot is claimed before the session is opened; page
// batches are delayed by --max-rate and refused past --max-image-bytes.
//
// Lanes (session-lanes.ts): a stream that begins with LaneStart instead of SessionStart joins the
// session of the stream holding it (its control stream) and carries only page batches, which go
// through the control stream's page path. A lane lost breaks the session's link as a lost control
// stream does (resumable); a control stream that ends ends its lanes.

import * as grpc from '@grpc/grpc-js';
import { digestFromBuffer, digestToBuffer } from '../../common/image-digest';
import { logger } from '../../common/log';
import { pagesNotHeld, sumPages } from '../../common/page-runs';
import {
  PHASES,
  type Commit,
  type Discard,
  type OutgoingReceiverMessage,
  type PageBatch,
  type Report,
  type RoundEnd,
  type RoundStart,
  type SessionStart,
} from '../../proto/messages';
import type { ImageStore, SessionWriter } from '../../image/image-store';
import { checkPageSize, checkRuns, checkSessionId } from '../../image/input-checks';
import { decodeProcessState, ProcessStateError, type ProcessState } from '../../image/process-state';
import { checkRunCount, decodeBatch, type DecodedBatch } from './batch-checks';
import type { ReceivedMessage } from './message-scan';
import { MAX_REGS_BYTES, MAX_THREADS } from './limits';
import { RateLimit } from './rate-limit';
import { ImageBudget, type ReceiverLimits } from './session-limits';
import type { SessionEvents } from './session-events';
import type { Handovers } from '../handover/handovers';
import { LanesClosed, SessionLanes, type LaneEnd } from './session-lanes';
import type { LaneStart } from '../../proto/messages';
import { failedPrecondition, invalidArgument, resourceExhausted, statusName, toStreamError } from './stream-error';

const log = logger('server');

export type MigrateCall = grpc.ServerDuplexStream<ReceivedMessage, OutgoingReceiverMessage>;

/** What a stream needs from the service that owns it. */
export interface StreamHost {
  readonly store: ImageStore;
  readonly imagesDir: string;
  readonly events: SessionEvents;
  readonly limits: ReceiverLimits;
  readonly handovers: Handovers;
  /** Before opening session `id`: a slot, or a takeover (false: held by another stream, not taken
   *  over); `reopen`: a committed session's stream may be taken over too. */
  claim(id: string, stream: MigrationStream, resume: boolean, reopen?: boolean): Promise<boolean>;
  /** The stream does not hold session `id` (any more). */
  unclaim(id: string, stream: MigrationStream): void;
  /** A stream took session `id` (create or resume). */
  sessionTaken(id: string): void;
  /** A stream let session `id` go while it is still receiving (resumable). */
  sessionLeft(id: string): void;
  /** The stream is over and holds nothing any more. */
  streamDone(stream: MigrationStream): void;
  /** The stream holding session `id` (a LaneStart joins it), if any. */
  holderOf(id: string): MigrationStream | undefined;
}

type State = 'await-start' | 'between-rounds' | 'in-round' | 'committed' | 'finished' | 'lane';

/** Marks the client's half-close in the message queue. */
const HALF_CLOSE = Symbol('half-close');
type QueueItem = ReceivedMessage | typeof HALF_CLOSE;

// Pause reading when this many messages wait (each up to 64 MiB), resume when few are left.
const QUEUE_HIGH = 4;
const QUEUE_LOW = 1;
// Page batches being written at once: the next batch is decoded (lz4) on this thread while the
// previous ones are copied into the page cache on libuv's threads.
const WRITE_DEPTH = 4;

export class MigrationStream implements LaneEnd {
  private state: State = 'await-start';
  /** This stream's lanes, when it holds a session (their key goes out in SessionAccepted). */
  private readonly lanes = new SessionLanes();
  /** A lane stream: the control stream it carries pages for, and its lane number. */
  private laneOf: { owner: MigrationStream; lane: number } | null = null;
  private session: SessionWriter | null = null;
  private sessionId = '';
  private openRound = -1;
  /** Last round made durable (by this stream, or before the resume). */
  private lastRound = -1;
  private reported = false;
  /** SessionStart asked for a handover (accepted by the policy): a HandoverStart may follow the commit. */
  private handover = false;
  /** Page writes not finished yet, and the first one that failed. */
  private readonly writes = new Set<Promise<void>>();
  private writeError: unknown = null;
  private readonly queue: QueueItem[] = [];
  private draining: Promise<void> | null = null;
  private paused = false;
  /** Nothing more is handled: the stream failed, ended or broke. */
  private closed = false;
  private released = false;
  /** The session id this stream claimed a slot for (MigrationService.claim). */
  private claimed: string | null = null;
  private readonly rate: RateLimit;
  private budget: ImageBudget | null = null;
  readonly peer: string;
  /** Settles when the stream is over and its session is released. */
  readonly done: Promise<void>;
  private markDone!: () => void;

  constructor(
    private readonly call: MigrateCall,
    private readonly host: StreamHost,
  ) {
    this.peer = call.getPeer();
    this.rate = new RateLimit(host.limits.maxRateBytesPerSecond);
    this.done = new Promise((resolve) => (this.markDone = resolve));
    call.on('data', (m: ReceivedMessage) => this.enqueue(m));
    call.on('end', () => this.enqueue(HALF_CLOSE));
    call.on('cancelled', () => {
      // A lane cancelled may have looked half-closed first: its session's link is broken either way.
      if (this.laneOf) this.laneOf.owner.laneLost(this.laneOf.lane, 'the lane was cancelled or its connection lost');
      void this.broken('the stream was cancelled or the connection lost');
    });
    log.debug(`stream from ${this.peer} opened`);
  }

  /** Holds a session that a resume may take over (receiving, not given up or committed). */
  get resumable(): boolean {
    return this.state === 'between-rounds' || this.state === 'in-round';
  }

  /** Holds a committed session (a resume that reopens it may take it over). */
  get committed(): boolean {
    return this.state === 'committed';
  }

  /** A resume from `by` takes this stream's session: end the stream (ABORTED, for a sender still
   *  listening) and release the session as on a broken stream. Resolves once it is released. */
  async takenOver(by: string): Promise<void> {
    const ended = this.broken(`taken over by a resume from ${by}`);
    if (!this.call.cancelled && !this.call.writableEnded) {
      this.call.emit('error', { code: grpc.status.ABORTED, details: `session ${this.sessionId} was taken over by a resume from ${by}` });
    }
    await ended;
    await this.done;
  }

  private get label(): string {
    return this.sessionId ? `session ${this.sessionId}` : `stream from ${this.peer}`;
  }

  // ---------------------------------------------------------------- queue

  private enqueue(item: QueueItem): void {
    if (this.closed) return;
    this.queue.push(item);
    if (!this.paused && this.queue.length >= QUEUE_HIGH) {
      this.paused = true;
      this.call.pause();
    }
    this.draining ??= this.drain();
  }

  private async drain(): Promise<void> {
    try {
      while (!this.closed && this.queue.length > 0) {
        const item = this.queue.shift()!;
        if (this.paused && this.queue.length <= QUEUE_LOW) {
          this.paused = false;
          this.call.resume();
        }
        try {
          if (item === HALF_CLOSE) await this.halfClosed();
          else await this.handle(item);
        } catch (err) {
          await this.failWith(err);
        }
      }
    } finally {
      this.draining = null;
    }
  }

  // ---------------------------------------------------------------- messages

  private async handle(m: ReceivedMessage): Promise<void> {
    if (m.msg === 'malformed') throw invalidArgument(m.error);
    if (m.msg === 'oversized') throw resourceExhausted(m.error);
    if (m.msg === undefined) throw invalidArgument('empty SenderMessage: no field of its oneof is set');
    if (this.state === 'await-start' && m.msg === 'lane') return this.joinLane(m.lane);
    if (this.state === 'await-start' && m.msg !== 'start') {
      throw failedPrecondition(`the stream must begin with SessionStart, not ${m.msg}`);
    }
    if (this.state === 'lane') {
      if (m.msg !== 'pages') throw failedPrecondition(`a lane carries only page batches, not ${m.msg}`);
      return this.lanePages(m.pages);
    }
    if (this.state === 'finished') throw failedPrecondition(`${m.msg} after the session was given up`);
    // Anything but more pages waits until the pages before it are written (or one failed).
    if (m.msg !== 'pages') await this.settleWrites();
    switch (m.msg) {
      case 'start':
        return this.start(m.start);
      case 'roundStart':
        return this.roundStart(m.roundStart);
      case 'pages':
        return this.pages(m.pages);
      case 'discard':
        return this.discard(m.discard);
      case 'roundEnd':
        return this.roundEnd(m.roundEnd);
      case 'commit':
        return this.commit(m.commit);
      case 'report':
        return this.report(m.report);
      case 'handover':
        return this.startHandover();
      default:
        throw invalidArgument(`unknown message ${(m as { msg: string }).msg}`);
    }
  }

  private async start(s: SessionStart): Promise<void> {
    if (this.state !== 'await-start') throw failedPrecondition('a second SessionStart on one stream');
    const id = checkSessionId(s.sessionId);
    const pageSize = checkPageSize(s.pageSize);
    if (s.handover) {
      // Before the session is touched, and so before the sender freezes or arms anything.
      const why = this.host.handovers.refusal(s.uid ?? 0);
      if (why) throw failedPrecondition(why);
      this.handover = true;
    }
    // A sender that lost its Commit's answer may reopen a session that Commit committed, unless a
    // handover of it was asked for (docs/design.md, Resume).
    const reopen = s.resume && s.reopenCommitted === true && !(await this.host.handovers.asked(id));
    if (await this.host.claim(id, this, s.resume, reopen)) this.claimed = id;
    const session = await this.openSession(s, id, pageSize, reopen);
    if (this.closed) {
      // The client went away while the session was opened: let it go again.
      await session.close();
      this.unclaim();
      if (session.state === 'receiving') this.host.sessionLeft(id);
      return;
    }
    if (session.meta.pageSize !== pageSize) {
      await session.close();
      this.unclaim();
      throw invalidArgument(`session ${id} has page size ${session.meta.pageSize}, the resuming sender says ${pageSize}`);
    }
    if (this.claimed === null) {
      // Cannot happen (the stream that holds the session holds its store lock too), but a
      // session this stream did not claim would escape --max-sessions.
      await session.close();
      throw failedPrecondition(`session ${id} is in use by another stream of this receiver`);
    }
    this.session = session;
    this.sessionId = id;
    this.lastRound = session.lastDurableRound;
    this.state = 'between-rounds';
    if (Number.isFinite(this.host.limits.maxImageBytes)) {
      this.budget = new ImageBudget(this.host.limits.maxImageBytes, id, pageSize, session.imagePages);
    }
    // A handover's destination process is built while the rounds arrive (docs/design.md, Handover).
    if (this.handover) await this.host.handovers.prebuilt.open(session, s.resume);
    this.host.sessionTaken(id);
    this.host.events.sessionStarted(s);
    log.info(
      s.resume
        ? `session ${id}: resumed by ${this.peer} (pid ${session.meta.pid}), last durable round ${this.lastRound}`
        : `session ${id}: started by ${this.peer} (pid ${s.pid} ${s.command || '?'} on ${s.sourceHost || '?'}, page size ${pageSize})`,
    );
    await this.reply({ accepted: { sessionId: id, resumed: s.resume, lastDurableRound: this.lastRound, laneKey: this.lanes.key } });
  }

  /** Create or resume the session in the store; a failure gives the claimed slot back. */
  private async openSession(s: SessionStart, id: string, pageSize: number, reopen: boolean): Promise<SessionWriter> {
    const { store } = this.host;
    try {
      return s.resume
        ? await store.resume(id, { reopenCommitted: reopen })
        : await store.create({
            sessionId: id,
            sourceHost: s.sourceHost,
            pid: s.pid,
            pageSize,
            kernel: s.kernel,
            command: s.command,
            memoryBytes: s.memoryBytes,
            createdAt: new Date().toISOString(),
            downtimeTargetSeconds: s.downtimeTargetSeconds,
          });
    } catch (err) {
      this.unclaim();
      throw err;
    }
  }

  private unclaim(): void {
    if (this.claimed !== null) this.host.unclaim(this.claimed, this);
    this.claimed = null;
  }

  private async roundStart(r: RoundStart): Promise<void> {
    if (this.state === 'in-round') throw failedPrecondition(`RoundStart ${r.round} while round ${this.openRound} is still open`);
    if (this.state === 'committed' && r.phase !== 'VERIFY_FIX') {
      throw failedPrecondition(`after the commit only a VERIFY_FIX round may follow, not ${r.phase}`);
    }
    if (!PHASES.includes(r.phase)) throw invalidArgument(`RoundStart phase ${String(r.phase)} is unknown`);
    if (r.round <= this.lastRound) throw failedPrecondition(`round ${r.round} does not follow round ${this.lastRound}`);
    await this.session!.beginRound(r.round, r.phase, r.layout);
    if (this.handover) this.host.handovers.prebuilt.layout(this.sessionId, this.session!.layout);
    this.openRound = r.round;
    this.state = 'in-round';
    this.lanes.opened();
    log.debug(`${this.label}: round ${r.round} (${r.phase}) started, ${r.layout.length} VMAs`);
  }

  private requireRound(what: string): void {
    if (this.state !== 'in-round') throw failedPrecondition(`${what} outside a round (send RoundStart first)`);
  }

  private async pages(b: PageBatch): Promise<void> {
    this.requireRound('PageBatch');
    this.throwWriteError();
    const c = decodeBatch(b);
    await this.rate.take(c.data.length);
    if (this.closed) return;
    if (this.budget && !this.budget.fits(sumPages(c.runs))) await this.checkImageSize(c);
    const session = this.session!;
    const write: Promise<void> = session.writePages(c.runs, c.zeroMap, c.data).then(
      () => {
        // Once the store took the batch (checked, in order with overlapping ones before it).
        if (this.handover) this.host.handovers.prebuilt.pages(this.sessionId, c.runs, c.zeroMap, c.data, session.pageSize);
        this.writes.delete(write);
      },
      (err: unknown) => {
        this.writes.delete(write);
        this.writeError ??= err;
      },
    );
    this.writes.add(write);
    if (this.writes.size >= WRITE_DEPTH) await Promise.race(this.writes);
    this.throwWriteError();
  }

  /** --max-image-bytes, exactly: pages held once the writes before are in, plus the batch's new ones. */
  private async checkImageSize(c: DecodedBatch): Promise<void> {
    await this.settleWrites();
    const session = this.session!;
    // Runs the store would refuse get its message (INVALID_ARGUMENT), not a size refusal.
    checkRuns(c.runs, session.pageSize, session.layout);
    const n = c.runs.length;
    const held = n === 0 ? [] : session.populatedRanges(c.runs[0], c.runs[n - 2] + c.runs[n - 1] * session.pageSize);
    this.budget!.check(session.imagePages, pagesNotHeld(c.runs, held, session.pageSize));
  }

  private async settleWrites(): Promise<void> {
    while (this.writes.size > 0) await Promise.all(this.writes);
    this.throwWriteError();
  }

  private throwWriteError(): void {
    if (this.writeError !== null) throw this.writeError;
  }

  private async discard(d: Discard): Promise<void> {
    this.requireRound('Discard');
    checkRunCount(d.runs, 'Discard');
    await this.session!.discard(d.runs);
    if (this.handover) this.host.handovers.prebuilt.discard(this.sessionId, d.runs, this.session!.pageSize);
  }

  private async roundEnd(e: RoundEnd): Promise<void> {
    this.requireRound('RoundEnd');
    if (e.round !== this.openRound) throw invalidArgument(`RoundEnd says round ${e.round}, but round ${this.openRound} is open`);
    await this.lanesDelivered(e);
    // The store takes the wire's RoundEnd as it is (and checks the figures).
    const durable = await this.session!.endRound(e);
    this.lastRound = e.round;
    this.state = 'between-rounds';
    log.debug(`${this.label}: round ${e.round} durable: ${durable.pagesStored} pages held, ${durable.durableBytes} bytes written`);
    await this.reply({ roundAck: { round: durable.round, pagesStored: durable.pagesStored, durableBytes: durable.durableBytes } });
    this.host.events.roundEnded(this.sessionId, e);
  }

  private async commit(c: Commit): Promise<void> {
    const final = c.finalRound ?? null;
    if (final) {
      // The commit ends the open round (docs/design.md, Wire protocol): one durable write for both.
      this.requireRound('Commit with a final round');
      if (final.round !== this.openRound) throw invalidArgument(`Commit ends round ${final.round}, but round ${this.openRound} is open`);
      await this.lanesDelivered(final);
    } else {
      if (this.state === 'in-round') throw failedPrecondition(`Commit while round ${this.openRound} is still open`);
      if (this.state === 'committed') throw failedPrecondition('Commit of a session already committed (send a VERIFY_FIX round first)');
      if (this.lastRound < 0) throw failedPrecondition('Commit before any round was made durable');
    }
    if (c.imageDigest.length !== 8) throw invalidArgument(`Commit image_digest is ${c.imageDigest.length} bytes, not 8`);
    if (c.threads.length > MAX_THREADS) throw resourceExhausted(`Commit has ${c.threads.length} threads, more than ${MAX_THREADS}`);
    for (const t of c.threads) {
      if (t.regs.length > MAX_REGS_BYTES || t.fpregs.length > MAX_REGS_BYTES || (t.xstate?.length ?? 0) > MAX_REGS_BYTES) {
        throw resourceExhausted(`Commit registers of thread ${t.tid} exceed ${MAX_REGS_BYTES} bytes`);
      }
    }
    let processState: ProcessState | undefined;
    if (c.processState && c.processState.length > 0) {
      try {
        processState = decodeProcessState(c.processState);
      } catch (e) {
        if (e instanceof ProcessStateError) throw invalidArgument(`Commit process_state: ${e.message}`);
        throw e;
      }
    }
    const out = await this.session!.commit({
      processState,
      layout: c.layout,
      threads: c.threads.map((t) => ({ tid: t.tid, regs: t.regs, fpregs: t.fpregs, xstate: t.xstate })),
      imageDigest: digestFromBuffer(c.imageDigest),
      imagePages: c.imagePages,
      finalRound: final,
    });
    if (final) {
      // Durable now, with the commit or (refused) on its own.
      this.lastRound = final.round;
      this.state = 'between-rounds';
      this.host.events.roundEnded(this.sessionId, final);
    }
    await this.reply({
      commit: { ok: out.ok, imageDigest: digestToBuffer(out.imageDigest), imagePages: out.imagePages, message: out.message },
    });
    if (!out.ok) {
      // The image differs from what the sender says it sent. The store keeps the session
      // receiving: the sender may re-send pages in a new round and commit again, or give up.
      log.warn(`${this.label}: commit refused: ${out.message}`);
      return;
    }
    this.state = 'committed';
    log.info(`${this.label}: committed, ${out.imagePages} pages`);
  }

  /** Start the committed image's process here (docs/design.md, Handover); the answer says
   *  whether it runs. The decision is durable (handover.json) before it is sent. */
  private async startHandover(): Promise<void> {
    if (!this.handover) throw failedPrecondition('HandoverStart on a session that did not ask for a handover in its SessionStart');
    if (this.state !== 'committed') throw failedPrecondition('HandoverStart before the commit');
    await this.host.handovers.start(this.session!, (result) => this.reply({ handover: result }));
  }

  // ---------------------------------------------------------------- lanes

  /** The round's batches on every lane are in the store (RoundEnd.lane_batches says how many). */
  private async lanesDelivered(e: RoundEnd): Promise<void> {
    try {
      await this.lanes.ended(e.laneBatches);
    } catch (err) {
      if (err instanceof LanesClosed) throw err;
      throw invalidArgument((err as Error).message);
    }
    await this.settleWrites();
  }

  /** This stream becomes lane `l.lane` of the session another stream holds. */
  private async joinLane(l: LaneStart): Promise<void> {
    const id = checkSessionId(l.sessionId);
    const owner = this.host.holderOf(id);
    if (!owner || owner.laneOf || !owner.session) throw failedPrecondition(`LaneStart: no stream of this receiver holds session ${id}`);
    const why = owner.lanes.attach(l.lane, l.laneKey, this);
    if (why) throw failedPrecondition(`LaneStart for session ${id}: ${why}`);
    this.laneOf = { owner, lane: l.lane };
    this.sessionId = id;
    this.state = 'lane';
    log.debug(`session ${id}: lane ${l.lane} joined from ${this.peer}`);
    await this.reply({ laneAccepted: { lane: l.lane } });
  }

  /** A batch on this lane: into the control stream's page path once its round is open. */
  private async lanePages(b: PageBatch): Promise<void> {
    const { owner, lane } = this.laneOf!;
    await owner.lanes.roundOpened();
    try {
      await owner.pages(b);
    } catch (err) {
      await owner.failWith(err); // a bad batch fails the session, whichever stream carried it
      throw err;
    }
    owner.lanes.count(lane);
  }

  /** Lane `lane` broke: the session's link is broken as if this stream had (resumable). */
  private laneLost(lane: number, reason: string): void {
    if (this.closed || !this.resumable) return; // after the commit a lane has nothing left to carry
    const why = `lane ${lane} lost: ${reason}`;
    if (!this.call.cancelled && !this.call.writableEnded) this.call.emit('error', { code: grpc.status.UNAVAILABLE, details: why });
    void this.broken(why);
  }

  /** LaneEnd: the control stream of this lane is over. */
  ownerGone(why: string): void {
    if (this.closed) return;
    this.closed = true;
    this.queue.length = 0;
    if (!this.call.cancelled && !this.call.writableEnded) this.call.emit('error', { code: grpc.status.ABORTED, details: `the session's stream ended: ${why}` });
    void this.release();
  }

  private async report(r: Report): Promise<void> {
    const session = this.session!;
    if (this.state === 'committed') {
      await session.recordReport({ ...r });
      this.reported = true;
      this.host.events.sessionEnded(this.sessionId, r);
      return;
    }
    if (r.result === 'aborted' || r.result === 'failed') {
      // The sender gives the session up: it will never be committed.
      const reason = r.error || `${r.result} by the sender`;
      await session.abort(reason);
      this.state = 'finished';
      this.host.events.sessionEnded(this.sessionId, r);
      log.info(`${this.label}: aborted by the sender: ${reason}`);
      return;
    }
    throw failedPrecondition(`Report with result '${r.result}' before the commit`);
  }

  // ---------------------------------------------------------------- replies and endings

  private async reply(m: OutgoingReceiverMessage): Promise<void> {
    if (this.call.write(m) || this.closed || this.call.cancelled) return;
    // Respect backpressure; give up waiting when the client is gone. A cancelled grpc-js call
    // emits 'cancelled', never 'drain' nor 'close': waiting for those alone hung the message in
    // hand when a sender died mid-round, so broken() never released the session and it was never
    // abandoned (found by test/e2e/sender-kill.test.ts).
    await new Promise<void>((resolve) => {
      const done = () => {
        this.call.off('drain', done);
        this.call.off('close', done);
        this.call.off('cancelled', done);
        resolve();
      };
      this.call.once('drain', done);
      this.call.once('close', done);
      this.call.once('cancelled', done);
    });
  }

  /** The client half-closed its side. */
  private async halfClosed(): Promise<void> {
    await this.settleWrites(); // a bad batch just before the half-close still fails the session
    this.closed = true;
    if (this.state === 'committed' && !this.reported) this.host.events.sessionEnded(this.sessionId, { result: 'committed' });
    if (this.state === 'between-rounds' || this.state === 'in-round') {
      log.warn(`${this.label}: the sender closed the stream before committing; the session stays resumable at round ${this.lastRound}`);
    }
    // Release first: once the sender sees the end of its stream, the session is free to resume.
    await this.release();
    this.call.end();
  }

  /** A bad message or a store error: fail the session (when this stream holds one and it is not
   *  committed) and end the stream with the status. */
  private async failWith(err: unknown): Promise<void> {
    const e = toStreamError(err, this.host.imagesDir);
    if (this.closed) {
      log.debug(`${this.label}: ${e.message} (after the stream ended)`);
      return;
    }
    this.closed = true;
    this.queue.length = 0;
    const level = e.code === grpc.status.INTERNAL ? 'error' : 'warn';
    log[level](`${this.label}: ${statusName(e.code)}: ${e.message}`);
    if (e.refusal) this.host.events.streamRefused(e.refusal);
    if (this.session && (this.state === 'between-rounds' || this.state === 'in-round')) {
      await this.session.fail(e.message).catch((f: Error) => log.debug(`${this.label}: could not mark failed: ${f.message}`));
      this.state = 'finished';
      this.host.events.sessionEnded(this.sessionId, { result: 'failed', error: e.message });
    }
    await this.release();
    this.call.emit('error', { code: e.code, details: e.message });
  }

  /** The client is gone: stop, let the message in hand finish, keep the session resumable. */
  private async broken(reason: string): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.queue.length = 0;
    this.rate.cancel();
    await this.draining;
    if (this.state === 'between-rounds' || this.state === 'in-round') {
      log.warn(`${this.label}: ${reason}; the session stays resumable at round ${this.lastRound}`);
    } else {
      log.debug(`${this.label}: ${reason}`);
    }
    await this.release();
  }

  private async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    if (this.laneOf) {
      this.laneOf.owner.lanes.detach(this.laneOf.lane, this);
      this.host.streamDone(this);
      this.markDone();
      return;
    }
    this.lanes.close(`the stream of session ${this.sessionId || '?'} ended`);
    const session = this.session;
    this.session = null;
    // A process built for a handover that did not take it: a resume rebuilds it from the image.
    if (this.handover && this.sessionId) this.host.handovers.prebuilt.drop(this.sessionId, 'its stream ended');
    if (session) {
      await session.close().catch((err: Error) => log.warn(`${this.label}: closing the session: ${err.message}`));
      if (this.state === 'between-rounds' || this.state === 'in-round') this.host.sessionLeft(this.sessionId);
    }
    this.unclaim();
    this.host.streamDone(this);
    this.markDone();
  }
}
