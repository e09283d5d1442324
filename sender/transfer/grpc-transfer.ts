// Network page transfer (the default): one MigrationLink (proto/client.ts) = one gRPC Migrate
// stream to the receiver. Backpressure comes from the link: send() resolves once the message is
// serialized and the stream has room, so the sender never queues more than a few batches.
// Connection problems surface as the link's LinkError ("cannot reach receiver at HOST:PORT
// (connection refused)"), a UserError: one line, no stack.

import { encodeProcessState } from '../../image/process-state';
import { digestToBuffer } from '../../common/image-digest';
import { formatHostPort, type HostPort } from '../../common/cli';
import { LinkError, MigrationLink } from './migration-link';
import { PLAINTEXT, type LinkSecurity } from '../../common/link-security';
import type { Vma } from '../../common/vma';
import type { HandoverResult } from '../../proto/messages';
import type { CommitInfo, CommitResult, PageBatch, PageTransfer, Phase, Report, RoundAck, RoundEnd, SessionAccepted, SessionStart } from './page-transfer';

export class GrpcTransfer implements PageTransfer {
  readonly description: string;
  private link: MigrationLink | null = null;

  constructor(
    private readonly address: HostPort,
    /** TLS and token of the link (sender/cli.ts --tls-*, --token-file). */
    private readonly security: LinkSecurity = PLAINTEXT,
  ) {
    this.description = `receiver at ${formatHostPort(address)}`;
  }

  async open(start: SessionStart): Promise<SessionAccepted> {
    this.link = await this.connect();
    return this.link.start(start);
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
    await old?.close();
    this.link = await this.connect(connectTimeoutMs);
    return this.link.start(start);
  }

  cut(err: Error): void {
    this.link?.cut(err.message);
  }

  beginRound(round: number, phase: Phase, layout: Vma[]): Promise<void> {
    return this.use().send({ roundStart: { round, phase, layout } });
  }

  sendBatch(b: PageBatch): Promise<void> {
    return this.use().send({ pages: b });
  }

  discard(runs: number[]): Promise<void> {
    return this.use().send({ discard: { runs } });
  }

  endRound(figures: RoundEnd): Promise<RoundAck> {
    return this.use().endRound(figures);
  }

  commit(c: CommitInfo): Promise<CommitResult> {
    return this.use().commit({
      layout: c.layout,
      threads: c.threads,
      imageDigest: digestToBuffer(c.imageDigest),
      imagePages: c.imagePages,
      processState: c.processState ? encodeProcessState(c.processState) : Buffer.alloc(0),
      finalRound: c.finalRound ?? null,
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
    await this.link?.abort(reason);
  }

  async close(): Promise<void> {
    const link = this.link;
    this.link = null;
    await link?.close();
  }

  private use(): MigrationLink {
    if (!this.link) throw new Error('gRPC transfer used before open() or after close()');
    return this.link;
  }
}
