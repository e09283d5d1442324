// (Over 400 lines on purpose: one class, the link's every wait with its deadline and error text;
// TLS diagnosis and buffers live in their own files.)
// The sender's end of the link: one MigrationLink = one channel + one Migrate stream.
//
//   const link = await MigrationLink.connect('10.0.0.2:7070');      // waits for the receiver
//   const accepted = await link.start({ sessionId, pid, pageSize, ... });
//   await link.send({ roundStart: { round: 0, phase: 'PRECOPY', layout } });
//   await link.send({ pages: batch });                                // backpressure
//   const ack = await link.endRound({ round: 0, ... });               // durable on the receiver
//   const result = await link.commit({ layout, threads, imageDigest, imagePages });
//   await link.report({ result: 'committed', ... });
//   await link.close();
//
// Every wait has its own deadline (connect, each ack, the commit, a send blocked by backpressure)
// on top of the stream's long deadline. Failures reject with LinkError: a UserError whose message
// names the receiver and what happened, with the gRPC code and whether reconnecting may help.

import * as net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { formatHostPort, parseHostPort, type HostPort } from '../../common/cli';
import { UserError } from '../../common/errors';
import { logger } from '../../common/log';
import type {
  Commit,
  CommitResult,
  HandoverResult,
  LaneStart,
  OutgoingSenderMessage,
  ReceiverMessage,
  Report,
  RoundAck,
  RoundEnd,
  SessionAccepted,
  SessionStart,
} from '../../proto/messages';
import { migrationClientConstructor, serializeSenderMessage, type LinkCodec } from '../../proto/service';
import { PLAINTEXT, TOKEN_METADATA_KEY, bearer, type LinkSecurity } from '../../common/link-security';
import { tlsProblem } from './tls-probe';
import { MessageBuffers } from './message-buffers';
import { encodePagesMessage, encodePagesMessageBefore } from '../../proto/page-codec';
import { FRAMING_CHANNEL_OPTIONS, frameInPlace, GRPC_PREFIX_BYTES } from './grpc-framing';

const log = logger('link');

export interface LinkOptions {
  /** Reaching the receiver (default 10 s). */
  connectTimeoutMs?: number;
  /** Waiting for SessionAccepted or a RoundAck (default 120 s: a round's fsync can be long). */
  ackTimeoutMs?: number;
  /** Waiting for the CommitResult (default 30 s). The receiver compares the digest it kept as the
   *  pages arrived and writes the manifest: milliseconds, a few fsyncs on a slow disk. The target
   *  is frozen meanwhile, and frozen-patience.ts already gives up on any wait over 10 s then. */
  commitTimeoutMs?: number;
  /** A send blocked by backpressure with no progress at all for this long fails (default 120 s). */
  sendStallTimeoutMs?: number;
  /** Deadline of the whole stream (default 7 days). */
  streamDeadlineMs?: number;
  /** Serialized bytes queued in the stream before send() waits (default 4 MiB). */
  maxQueuedBytes?: number;
  codec?: LinkCodec;
  /** TLS, the token and the server name (proto/link-security.ts); default: plaintext, no token. */
  security?: LinkSecurity;
}

type Timings = Required<Omit<LinkOptions, 'codec' | 'security'>>;

const DEFAULTS: Timings = {
  connectTimeoutMs: 10_000,
  ackTimeoutMs: 120_000,
  commitTimeoutMs: 30_000,
  sendStallTimeoutMs: 120_000,
  streamDeadlineMs: 7 * 86_400_000,
  // Less than one page batch (4 MiB of pages + header): send() of a batch returns once HTTP/2
  // wrote it, so the stream never holds more than one batch (sender peak RSS in the bench: 8 MiB let
  // three pile up, same throughput).
  maxQueuedBytes: 4 << 20,
};

const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  // A connection of its own (not shared with other links to the same receiver): the HTTP/2
  // connection window is per connection.
  'grpc.use_local_subchannel_pool': 1,
  // Retries would keep copies of sent messages for a replay that cannot apply to this stream.
  'grpc.enable_retries': 0,
  'grpc.max_send_message_length': -1,
  'grpc-node.flow_control_window': 16 << 20,
  // Ping the receiver every 10 s, give up on the connection after 5 s without an answer: a cut
  // network otherwise looks like a quiet one until a deadline (minutes) runs out. The grpc-js
  // server answers pings whatever their rate (no ping policy to trip).
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5_000,
  ...FRAMING_CHANNEL_OPTIONS,
};

/** A link failure: what happened, with the gRPC code (undefined: not from gRPC). */
export class LinkError extends UserError {
  constructor(
    message: string,
    readonly code: grpc.status | undefined,
    /** true when reconnecting and resuming may succeed (connection lost, receiver restarting). */
    readonly retryable: boolean,
  ) {
    super(message, 1);
    this.name = 'LinkError';
  }
}

const RETRYABLE = new Set<grpc.status>([grpc.status.UNAVAILABLE, grpc.status.CANCELLED, grpc.status.DEADLINE_EXCEEDED, grpc.status.UNKNOWN]);

type Kind = ReceiverMessage['msg'];
type Of<K extends Kind> = Extract<ReceiverMessage, { msg: K }>;

interface Waiter {
  accept(m: ReceiverMessage): boolean;
  reject(err: LinkError): void;
}

export class MigrationLink {
  private call: grpc.ClientDuplexStream<OutgoingSenderMessage | Buffer, ReceiverMessage> | null = null;
  private readonly inbox: ReceiverMessage[] = [];
  private readonly waiters = new Set<Waiter>();
  private failure: LinkError | null = null;
  private ended: Promise<void> = Promise.resolve();
  private queuedBytes = 0;
  /** Woken whenever a queued write completes (or the link fails). */
  private readonly progress = new Set<() => void>();
  /** Serialized page batches, reused once written (message-buffers.ts): with maxQueuedBytes of
   *  one batch, at most two are in use at once. */
  private readonly pageBuffers = new MessageBuffers(2);
  private readonly opts: Timings & { codec: LinkCodec; security: LinkSecurity };

  private constructor(
    private readonly client: grpc.Client & { Migrate(metadata: grpc.Metadata, opts: grpc.CallOptions): grpc.ClientDuplexStream<unknown, unknown> },
    /** HOST:PORT of the receiver, as given. */
    readonly target: string,
    opts: LinkOptions,
  ) {
    this.opts = { ...DEFAULTS, ...opts, codec: opts.codec ?? 'fast', security: opts.security ?? PLAINTEXT };
  }

  /** Connect and wait until the receiver answers (or fail with why it could not be reached). */
  static async connect(target: string, opts: LinkOptions = {}): Promise<MigrationLink> {
    const hp = parseHostPort(target, 'receiver address');
    const where = formatHostPort(hp);
    const security = opts.security ?? PLAINTEXT;
    const Client = migrationClientConstructor(opts.codec);
    const client = new Client(where, channelCredentials(security), channelOptions(security)) as unknown as MigrationLink['client'];
    const timeout = opts.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs;
    try {
      // A failed attempt is looked at at once: a TLS mismatch will not heal by waiting.
      await awaitReady(client.getChannel(), Date.now() + timeout, async () => {
        const problem = await tlsProblem(hp, security, timeout);
        return problem ? new LinkError(problem, grpc.status.UNAVAILABLE, false) : null;
      });
    } catch (err) {
      client.close();
      if (err instanceof LinkError) throw err;
      throw new LinkError(`cannot reach receiver at ${where}: ${await whyUnreachable(hp, timeout)}`, grpc.status.UNAVAILABLE, true);
    }
    log.debug(`connected to ${where}`);
    return new MigrationLink(client, where, opts);
  }

  /** Open the stream and start (or resume) the session. */
  async start(start: Partial<SessionStart>): Promise<SessionAccepted> {
    if (this.call) throw new Error('MigrationLink.start called twice');
    this.open();
    await this.send({ start });
    return (await this.next('accepted', this.opts.ackTimeoutMs, 'the session start')).accepted;
  }

  /** Open the Migrate stream (with the token) and route what comes back. */
  private open(): void {
    const metadata = new grpc.Metadata();
    if (this.opts.security.token !== null) metadata.set(TOKEN_METADATA_KEY, bearer(this.opts.security.token));
    const call = this.client.Migrate(metadata, { deadline: Date.now() + this.opts.streamDeadlineMs }) as NonNullable<MigrationLink['call']>;
    this.call = call;
    this.ended = new Promise((resolve) => {
      call.on('data', (m: ReceiverMessage) => this.receive(m));
      call.on('error', (err: grpc.ServiceError) => {
        this.fail(this.statusError(err.code, err.details));
        resolve();
      });
      call.on('status', (s: grpc.StatusObject) => {
        if (s.code === grpc.status.OK) this.fail(new LinkError(`receiver at ${this.target} ended the stream`, grpc.status.OK, false));
        resolve();
      });
    });
  }

  /**
   * Queue one message. Resolves once it is serialized and the stream has room for more (the
   * caller may then reuse its buffers); rejects when the link failed.
   */
  async send(m: OutgoingSenderMessage): Promise<void> {
    if (this.failure) throw this.failure;
    const call = this.call;
    if (!call) throw new Error('MigrationLink.send before start');
    const fast = this.opts.codec === 'fast' && 'pages' in m;
    // A page batch whose payload has room before it is encoded and framed there, with no copy;
    // the caller's buffer is then read until the write completes, so send() waits for that
    // (docs/design.md, Page path; grpc-framing.ts).
    const inPlace = fast ? encodePagesMessageBefore(m.pages, GRPC_PREFIX_BYTES) : null;
    if (inPlace) frameInPlace(inPlace);
    const pooled = fast && !inPlace;
    const bytes = inPlace ?? (pooled ? encodePagesMessage(m.pages, this.pageBuffers.take) : serializeSenderMessage(m, this.opts.codec));
    let written = false;
    this.queuedBytes += bytes.length;
    call.write(bytes, () => {
      // Framed and handed to HTTP/2 (or dropped with the stream): the bytes are free again.
      if (pooled) this.pageBuffers.give(bytes);
      written = true;
      this.queuedBytes -= bytes.length;
      for (const wake of this.progress) wake();
    });
    while ((this.queuedBytes > this.opts.maxQueuedBytes || (inPlace && !written)) && !this.failure) await this.awaitProgress();
    if (this.failure) throw this.failure;
  }

  /** Open the stream as lane `l.lane` of a session another link started (docs/design.md, Lanes). */
  async startLane(l: LaneStart): Promise<void> {
    if (this.call) throw new Error('MigrationLink.startLane on a started link');
    this.open();
    await this.send({ lane: l });
    await this.next('laneAccepted', this.opts.ackTimeoutMs, `lane ${l.lane} of session ${l.sessionId}`);
  }

  /** Send the RoundEnd and wait until the receiver says the round is durable. */
  async endRound(figures: Partial<RoundEnd> & { round: number }): Promise<RoundAck> {
    await this.send({ roundEnd: figures });
    return this.awaitRoundAck(figures.round);
  }

  /** The RoundAck of `round` (acks of earlier rounds are skipped). */
  async awaitRoundAck(round: number, timeoutMs = this.opts.ackTimeoutMs): Promise<RoundAck> {
    for (;;) {
      const { roundAck } = await this.next('roundAck', timeoutMs, `the acknowledgement of round ${round}`);
      if (roundAck.round === round) return roundAck;
      if (roundAck.round > round) {
        throw this.fail(new LinkError(`receiver at ${this.target} acknowledged round ${roundAck.round} while round ${round} was awaited`, undefined, false));
      }
    }
  }

  /** Commit; resolves with the receiver's answer (ok=false: refused, with its message). */
  async commit(c: Partial<Commit>): Promise<CommitResult> {
    await this.send({ commit: c });
    return (await this.next('commit', this.opts.commitTimeoutMs, 'the commit result')).commit;
  }

  /** Ask the receiver to start the committed process (a handover); resolves with its answer. */
  async handover(timeoutMs: number): Promise<HandoverResult> {
    await this.send({ handover: {} });
    return (await this.next('handover', timeoutMs, 'the handover start')).handover;
  }

  async report(r: Partial<Report>): Promise<void> {
    await this.send({ report: r });
  }

  /**
   * Resolves when the stream is over, with the failure that ended it (a receiver that ended the
   * stream normally gives code OK; before start(): resolves at once with null).
   */
  async whenEnded(): Promise<LinkError | null> {
    await this.ended;
    return this.failure;
  }

  /** Give the session up (the receiver marks it aborted), then close. Never throws. */
  async abort(reason: string): Promise<void> {
    if (this.call && !this.failure) {
      await this.send({ report: { result: 'aborted', error: reason } }).catch(() => undefined);
    }
    await this.close();
  }

  /** Break the link now, as a lost connection (retryable): the receiver keeps the session
   *  resumable; every pending call rejects. For a receiver that stopped answering. */
  cut(why: string): void {
    this.fail(new LinkError(why, grpc.status.DEADLINE_EXCEEDED, true));
    this.call?.cancel();
  }

  /** Half-close the stream, wait briefly for the receiver to end it, release the channel. Never throws. */
  async close(): Promise<void> {
    const call = this.call;
    if (call && !this.failure) {
      call.end();
      const closed = await Promise.race([this.ended.then(() => true), delay(5000).then(() => false)]);
      if (!closed) call.cancel();
    }
    this.fail(new LinkError(`link to receiver at ${this.target} is closed`, grpc.status.CANCELLED, false));
    call?.cancel();
    this.client.close();
  }

  // ---------------------------------------------------------------- internals

  private receive(m: ReceiverMessage): void {
    for (const w of this.waiters) if (w.accept(m)) return;
    this.inbox.push(m);
  }

  /** The next message of one kind (earlier ones of other kinds stay in the inbox). */
  private next<K extends Kind>(kind: K, timeoutMs: number, what: string): Promise<Of<K>> {
    const i = this.inbox.findIndex((m) => m.msg === kind);
    if (i >= 0) return Promise.resolve(this.inbox.splice(i, 1)[0] as Of<K>);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<Of<K>>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(w);
        const err = new LinkError(`no answer from receiver at ${this.target} for ${what} within ${timeoutMs / 1000}s`, grpc.status.DEADLINE_EXCEEDED, true);
        reject(err);
        this.fail(err);
        this.call?.cancel();
      }, timeoutMs);
      const w: Waiter = {
        accept: (m) => {
          if (m.msg !== kind) return false;
          clearTimeout(timer);
          this.waiters.delete(w);
          resolve(m as Of<K>);
          return true;
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      this.waiters.add(w);
    });
  }

  /** Wait until a queued write completes or the link fails; a stall past the limit fails it. */
  private awaitProgress(): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        const s = this.opts.sendStallTimeoutMs / 1000;
        this.fail(new LinkError(`receiver at ${this.target} accepted no data for ${s}s`, grpc.status.DEADLINE_EXCEEDED, true));
        this.call?.cancel();
      }, this.opts.sendStallTimeoutMs);
      const wake = () => {
        clearTimeout(timer);
        this.progress.delete(wake);
        resolve();
      };
      this.progress.add(wake);
    });
  }

  /** Record the first failure, wake everything waiting. Returns the failure in effect. */
  private fail(err: LinkError): LinkError {
    if (!this.failure) {
      this.failure = err;
      if (err.code !== grpc.status.OK && err.code !== grpc.status.CANCELLED) log.debug(err.message);
    }
    for (const w of this.waiters) w.reject(this.failure);
    this.waiters.clear();
    for (const wake of this.progress) wake();
    return this.failure;
  }

  private statusError(code: grpc.status, details: string): LinkError {
    const name = grpc.status[code] ?? String(code);
    const what =
      code === grpc.status.UNAVAILABLE
        ? `connection to receiver at ${this.target} lost (${details})`
        : code === grpc.status.CANCELLED
          ? `stream to receiver at ${this.target} cancelled (${details})`
          : code === grpc.status.UNAUTHENTICATED
            ? `receiver at ${this.target} refused the sender: ${details} (${name}; check --token-file)`
            : `receiver at ${this.target}: ${details} (${name})`;
    return new LinkError(what, code, RETRYABLE.has(code));
  }
}

export function channelCredentials({ tls }: LinkSecurity): grpc.ChannelCredentials {
  return tls ? grpc.credentials.createSsl(tls.ca, tls.key, tls.cert) : grpc.credentials.createInsecure();
}

export function channelOptions({ serverName }: LinkSecurity): grpc.ChannelOptions {
  // The name the receiver's certificate must carry, when it is not the host dialled.
  return serverName ? { ...CHANNEL_OPTIONS, 'grpc.ssl_target_name_override': serverName } : CHANNEL_OPTIONS;
}

/**
 * client.waitForReady, with a look at failed attempts: `diagnose` runs (one at a time, alongside
 * the channel's own retries) when an attempt failed, and a problem it returns ends the wait at once
 * (one that retrying cannot fix). Rejects at the deadline.
 */
async function awaitReady(channel: ReturnType<grpc.Client['getChannel']>, deadline: number, diagnose: () => Promise<Error | null>): Promise<void> {
  let problem: Error | null = null;
  let probing = false;
  let wake = () => {};
  let state = channel.getConnectivityState(true);
  while (state !== grpc.connectivityState.READY) {
    if (state === grpc.connectivityState.SHUTDOWN) throw new Error('channel closed');
    if (state === grpc.connectivityState.TRANSIENT_FAILURE && !probing) {
      probing = true;
      void diagnose()
        .catch(() => null)
        .then((err) => {
          probing = false;
          problem = err;
          if (err) wake();
        });
    }
    const changed = await new Promise<boolean>((resolve) => {
      wake = () => resolve(true);
      channel.watchConnectivityState(state, deadline, (err) => resolve(!err));
    });
    if (problem) throw problem;
    if (!changed) throw new Error('deadline exceeded');
    state = channel.getConnectivityState(true);
  }
}

/** Why a TCP connection to hp fails, in words ("connection refused", "no answer within 10s"). */
async function whyUnreachable(hp: HostPort, timeoutMs: number): Promise<string> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: hp.host, port: hp.port });
    const done = (why: string) => {
      sock.destroy();
      resolve(why);
    };
    sock.setTimeout(Math.min(timeoutMs, 5000), () => done(`no answer within ${timeoutMs / 1000}s`));
    sock.once('connect', () => done('it accepts TCP connections but does not speak gRPC (is it a precopy receiver?)'));
    sock.once('error', (err: NodeJS.ErrnoException) => {
      const words: Record<string, string> = {
        ECONNREFUSED: 'connection refused',
        EHOSTUNREACH: 'host unreachable',
        ENETUNREACH: 'network unreachable',
        ENOTFOUND: 'unknown host',
        EAI_AGAIN: 'host name lookup failed',
        ETIMEDOUT: 'connection timed out',
      };
      done(words[err.code ?? ''] ?? err.message);
    });
  });
}

const delay = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());
