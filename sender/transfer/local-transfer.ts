// Local-file page transfer (`--to dir:PATH`): the session is written straight into an images
// directory through the receiver's own ImageStore, with the same checks, durability and commit
// digest as over the network, minus the network. Used by the benchmark and tests to isolate the
// link, and by anyone migrating to a disk on the same host.

import { UserError } from '../../common/errors';
import { digestToBuffer } from '../../common/image-digest';
import { logger } from '../../common/log';
import { decodeLz4Block } from '../../common/lz4-block';
import { ImageStore, StoreError, type SessionWriter } from '../../image/image-store';
import type { Vma } from '../../common/vma';
import type { CommitInfo, CommitResult, PageBatch, PageTransfer, Phase, Report, RoundAck, RoundEnd, SessionAccepted, SessionStart } from './page-transfer';

const log = logger('xfer-local');

export class LocalTransfer implements PageTransfer {
  readonly description: string;
  readonly lanes = 1;
  private store: ImageStore | null = null;
  private img: SessionWriter | null = null;

  constructor(private readonly dir: string) {
    this.description = `image directory ${dir}`;
  }

  async open(start: SessionStart): Promise<SessionAccepted> {
    try {
      this.store = new ImageStore(this.dir);
      this.img = await this.store.create({
        sessionId: start.sessionId,
        sourceHost: start.sourceHost,
        pid: start.pid,
        pageSize: start.pageSize,
        kernel: start.kernel,
        command: start.command,
        memoryBytes: start.memoryBytes,
        createdAt: new Date().toISOString(),
      });
    } catch (err) {
      throw this.plain(err);
    }
    return { sessionId: start.sessionId, resumed: false, lastDurableRound: -1 };
  }

  /** Never needed: a local transfer has no link to lose (its errors are never retryable). */
  reopen(): Promise<SessionAccepted> {
    return Promise.reject(new Error('a local transfer cannot be reopened'));
  }

  cut(): void {}

  beginRound(round: number, phase: Phase, layout: Vma[]): Promise<void> {
    return this.call(() => this.session().beginRound(round, phase, layout));
  }

  sendBatch(b: PageBatch): Promise<void> {
    return this.call(() => {
      // The store takes raw page bytes; lz4 here only costs time, but --compress is honoured so
      // that local and network runs exercise the same staging.
      const data = b.encoding === 'LZ4' ? decodeLz4Block(b.payload, b.rawLength) : b.payload;
      return this.session().writePages(b.runs, b.zeroMap.length > 0 ? b.zeroMap : null, data);
    });
  }

  discard(runs: number[]): Promise<void> {
    return this.call(() => this.session().discard(runs));
  }

  endRound(figures: RoundEnd): Promise<RoundAck> {
    return this.call(() => this.session().endRound(figures));
  }

  async commit(c: CommitInfo): Promise<CommitResult> {
    const r = await this.call(() => this.session().commit(c));
    return { ok: r.ok, imageDigest: digestToBuffer(r.imageDigest), imagePages: r.imagePages, message: r.message };
  }

  report(r: Report): Promise<void> {
    return this.call(() => this.session().recordReport({ ...r }));
  }

  async abort(reason: string): Promise<void> {
    try {
      await this.img?.abort(reason);
    } catch (err) {
      log.debug(`abort: ${(err as Error).message}`);
    }
  }

  async close(): Promise<void> {
    const img = this.img;
    this.img = null;
    try {
      await img?.close();
    } catch (err) {
      log.debug(`close: ${(err as Error).message}`);
    }
  }

  private session(): SessionWriter {
    if (!this.img) throw new Error('local transfer used before open() or after close()');
    return this.img;
  }

  private async call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw this.plain(err);
    }
  }

  /** Store errors a user can act on (session exists, disk full) become UserErrors. */
  private plain(err: unknown): unknown {
    if (!(err instanceof StoreError)) return err;
    const what = `${this.description}: ${err.message}`;
    return err.code === 'EXISTS' || err.code === 'NO_SPACE' || err.code === 'BAD_ID' ? new UserError(what, 1) : new Error(what);
  }
}
