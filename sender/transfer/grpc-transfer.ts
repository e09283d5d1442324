// Network page transfer (the default): one MigrationLink (migration-link.ts) = one gRPC Migrate
// stream to the receiver, the control stream; with --streams N, N-1 more links carry page batches
// as lanes of the same session (docs/design.md, Lanes), each on its own connection. A batch goes
// on the lane of its address (proto/lanes.ts), and each RoundEnd says how many batches every lane
// carried. Backpressure comes from each link: send() resolves once the message is serialized and
// the stream has room, so the sender never queues more than a few batches per lane.
// Connection problems surface as the link's LinkError ("cannot reach receiver at HOST:PORT
// (connection refused)"), a UserError: one line, no stack.

import { encodeProcessState } from '../../image/process-state';
import { digestToBuffer } from '../../common/image-digest';
import { formatHostPort, type HostPort } from '../../common/cli';
import { LinkError, MigrationLink } from './migration-link';
import { encodeLaneCounts, laneOf } from '../../proto/lanes';
import { PLAINTEXT, type LinkSecurity } from '../../common/link-security';
import type { Vma } from '../../common/vma';
import type { HandoverResult } from '../../proto/messages';
import type { CommitInfo, CommitResult, PageBatch, PageTransfer, Phase, Report, RoundAck, RoundEnd, SessionAccepted, SessionStart } from './page-transfer';

export class GrpcTransfer implements PageTransfer {
  readonly description: string;
  private link: MigrationLink | null = null;
  /** Lanes 1..N-1 (index 0 unused: the control link is `link`). */
  private laneLinks: MigrationLink[] = [];
  /** Batches sent on each lane in the open round (index 0: the control link, not counted). */
  private laneBatches: number[];

  constructor(
    private readonly address: HostPort,
    /** TLS and token of the link (sender/cli.ts --tls-*, --token-file). */
    private readonly security: LinkSecurity = PLAINTEXT,
    /** Streams per session (--streams): the control stream and lanes-1 lanes. */
    readonly lanes = 1,
  ) {
    this.description = `receiver at ${formatHostPort(address)}`;
    this.laneBatches = new Array<number>(lanes).fill(0);
  }

  async open(start: SessionStart): Promise<SessionAccepted> {
    this.link = await this.connect();
    return this.openLanes(start, await this.link.start(start));
  }

  /** Connect lanes 1..N-1 to the session the control link just started or resumed. */
  private async openLanes(start: SessionStart, accepted: SessionAccepted): Promise<SessionAccepted> {
    if (this.lanes > 1) {
      if (!accepted.laneKey || accepted.laneKey.length === 0) {
        throw new LinkError(`${this.description} does not take several streams per session (an older receiver?): run with --streams 1`, undefined, false);
      }
      const key = accepted.laneKey;
      this.laneLinks = await Promise.all(
        Array.from({ length: this.lanes - 1 }, async (_, i) => {
          const l = await this.connect();
          await l.startLane({ sessionId: start.sessionId, lane: i + 1, laneKey: key });
          return l;
        }),
      );
    }
    return accepted;
  }

  /** A new link to the receiver (the one connect path of open and reopen). */
  private async connect(connectTimeoutMs?: number): Promise<MigrationLink> {
    const where = formatHostPort(this.address);
    try {
      return await MigrationLink.connect(where, { security: this.security, connectTimeoutMs });
    } catch (err) {
      // The sender's wording: "cannot reach receiver at HOST:PORT (connection refused)".
      const m = err instanceof LinkError ? /^cannot reach receiver at \S+: (.*)$/s.exec(err.message) : null;
      throw m ? new LinkError(`cannot reach receiver at ${where} (${m[1]})`, (err as LinkError).code, (err as LinkError).retryable) : err;
    }
  }

  /** Drop the broken link (no abort: the session stays resumable), connect again (waiting at most
   *  connectTimeoutMs, default 10 s) and resume. */
  async reopen(start: SessionStart, connectTimeoutMs?: number): Promise<SessionAccepted> {
    const old = this.link;
    this.link = null;
    await this.closeLanes();
    await old?.close();
    this.link = await this.connect(connectTimeoutMs);
    return this.openLanes(start, await this.link.start(start));
  }

  cut(err: Error): void {
    for (const l of this.laneLinks) l.cut(err.message);
    this.link?.cut(err.message);
  }

  beginRound(round: number, phase: Phase, layout: Vma[]): Promise<void> {
    this.laneBatches.fill(0);
    return this.use().send({ roundStart: { round, phase, layout } });
  }

  sendBatch(b: PageBatch): Promise<void> {
    const lane = laneOf(b.runs[0] ?? 0, this.lanes);
    if (lane === 0) return this.use().send({ pages: b });
    this.laneBatches[lane]++;
    // A lane lost is a broken link whatever status it ended with (the receiver ends a session's
    // lanes when its control stream goes): reconnecting and resuming says what is left.
    return this.laneLinks[lane - 1].send({ pages: b }).catch((err: unknown) => {
      throw err instanceof LinkError ? new LinkError(`lane ${lane}: ${err.message}`, err.code, true) : err;
    });
  }

  /** The open round's end, with the batch count of every lane. */
  private withLaneCounts(figures: RoundEnd): RoundEnd {
    return this.lanes > 1 ? { ...figures, laneBatches: encodeLaneCounts(this.laneBatches.slice(1)) } : figures;
  }

  discard(runs: number[]): Promise<void> {
    return this.use().send({ discard: { runs } });
  }

  endRound(figures: RoundEnd): Promise<RoundAck> {
    return this.use().endRound(this.withLaneCounts(figures));
  }

  commit(c: CommitInfo): Promise<CommitResult> {
    return this.use().commit({
      layout: c.layout,
      threads: c.threads,
      imageDigest: digestToBuffer(c.imageDigest),
      imagePages: c.imagePages,
      processState: c.processState ? encodeProcessState(c.processState) : Buffer.alloc(0),
      finalRound: c.finalRound ? this.withLaneCounts(c.finalRound) : null,
    });
  }

  /** Ask the receiver to start the committed process (docs/design.md, Handover). */
  handover(timeoutMs: number): Promise<HandoverResult> {
    return this.use().handover(timeoutMs);
  }

  report(r: Report): Promise<void> {
    return this.use().report(r);
  }

  async abort(reason: string): Promise<void> {
    await this.closeLanes();
    await this.link?.abort(reason);
  }

  async close(): Promise<void> {
    const link = this.link;
    this.link = null;
    await this.closeLanes(); // before the control stream, whose end ends them at the receiver
    await link?.close();
  }

  private async closeLanes(): Promise<void> {
    const lanes = this.laneLinks;
    this.laneLinks = [];
    await Promise.all(lanes.map((l) => l.close()));
  }

  private use(): MigrationLink {
    if (!this.link) throw new Error('gRPC transfer used before open() or after close()');
    return this.link;
  }
}
