// The receiver's gRPC server: precopy.v1.Migration and grpc.health.v1.Health on one port
// (TLS, mutual TLS and the Migrate token check when configured: proto/link-security.ts, auth.ts),
// the raised HTTP/2 receive window, and a graceful shutdown (NOT_SERVING, drain with a deadline,
// then force; sessions in flight stay durable at their last acknowledged round).

import * as grpc from '@grpc/grpc-js';
import { formatHostPort, type HostPort } from '../../common/cli';
import { UserError } from '../../common/errors';
import { logger } from '../../common/log';
import { healthService } from '../../proto/health';
import { PLAINTEXT, type LinkSecurity } from '../../common/link-security';
import type { LinkCodec } from '../../proto/service';
import { requireToken } from './auth';
import { HealthService } from './health-service';
import { WINDOW_SERVER_OPTIONS, raiseReceiveWindows } from './http2-window';
import { MAX_MESSAGE_BYTES } from './limits';
import { MigrationService } from './migration-service';
import { scannedMigrationDefinition } from './message-scan';
import type { SessionEvents } from './session-events';
import type { ReceiverLimits } from './session-limits';
import { authenticatedLink, type HandoverPolicy } from '../handover/handover-policy';
import { resolveHandler } from '../handover/resolve-handler';

const log = logger('server');

export const MIGRATION_SERVICE_NAME = 'precopy.v1.Migration';
export const DEFAULT_SHUTDOWN_GRACE_MS = 10_000;

export interface ReceiverServerOptions {
  listen: HostPort;
  imagesDir: string;
  abandonAfterMs?: number;
  events?: SessionEvents;
  /** Request codec (the benchmark compares them); default 'fast'. */
  codec?: LinkCodec;
  /** TLS and the shared token (proto/link-security.ts); default: plaintext, no token. */
  security?: LinkSecurity;
  /** --max-sessions, --max-image-bytes, --max-rate, --max-message-bytes (session-limits.ts). */
  limits?: Partial<ReceiverLimits>;
  /** --accept-handover, --handover-users, --stdio (handover/handover-policy.ts). */
  handover?: HandoverPolicy;
}

/** grpc.Server options of the receiver (also used by bench/link-throughput.ts's discarding server). */
export const RECEIVER_SERVER_OPTIONS: grpc.ServerOptions = {
  ...WINDOW_SERVER_OPTIONS,
  'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
  // Ping idle connections so that a sender whose host or network vanished is noticed and its
  // session released for a resume (no TCP keepalive needed).
  'grpc.keepalive_time_ms': 30_000,
  'grpc.keepalive_timeout_ms': 10_000,
};

export class ReceiverServer {
  private shuttingDown: Promise<void> | null = null;

  private constructor(
    private readonly server: grpc.Server,
    readonly service: MigrationService,
    readonly health: HealthService,
    /** The bound address (the real port when 0 was asked for). */
    readonly address: HostPort,
  ) {}

  static async start(opts: ReceiverServerOptions): Promise<ReceiverServer> {
    const service = new MigrationService({
      imagesDir: opts.imagesDir,
      abandonAfterMs: opts.abandonAfterMs,
      events: opts.events,
      limits: opts.limits,
      handover: withLink(opts.handover, opts.security ?? PLAINTEXT),
    });
    await service.start();
    const health = new HealthService([MIGRATION_SERVICE_NAME]);
    const server = new grpc.Server({ ...RECEIVER_SERVER_OPTIONS, 'grpc.max_receive_message_length': service.limits.maxMessageBytes });
    const security = opts.security ?? PLAINTEXT;
    server.addService(scannedMigrationDefinition(opts.codec), {
      Migrate: requireToken(security.token, service.migrate, () => service.events.streamRefused('unauthenticated')),
      Resolve: resolveHandler(service.handovers, security.token),
    });
    server.addService(healthService().service, health.implementation());

    const where = formatHostPort(opts.listen);
    const port = await new Promise<number>((resolve, reject) => {
      server.bindAsync(where, serverCredentials(security), (err, p) => (err ? reject(err) : resolve(p)));
    }).catch((err: Error) => {
      service.close();
      throw new UserError(`--listen: cannot listen on ${where}: ${bindProblem(err.message)}`);
    });
    raiseReceiveWindows(server);
    return new ReceiverServer(server, service, health, { host: opts.listen.host, port });
  }

  /**
   * Stop: health NOT_SERVING, no new calls, wait up to `graceMs` for streams to finish, then cut
   * the rest. Cut streams leave their sessions resumable; resolves once every session is released.
   */
  shutdown(graceMs = DEFAULT_SHUTDOWN_GRACE_MS): Promise<void> {
    this.shuttingDown ??= this.stop(graceMs);
    return this.shuttingDown;
  }

  private async stop(graceMs: number): Promise<void> {
    this.health.shutdown();
    this.health.closeWatchers();
    const active = this.service.activeStreams;
    if (active) log.info(`shutting down: waiting up to ${graceMs / 1000}s for ${active} migration stream(s)`);
    const drained = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), graceMs);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
    if (!drained) {
      log.warn(`shutting down: ${this.service.activeStreams} stream(s) still open after ${graceMs / 1000}s: cutting them (their sessions stay resumable)`);
      this.server.forceShutdown();
    }
    await this.service.settled();
    this.service.close();
  }
}

/** The policy, with whether this server's link authenticates senders (said by the link itself,
 *  not by whoever built the policy). */
function withLink(p: HandoverPolicy | undefined, security: LinkSecurity): HandoverPolicy | undefined {
  return p && { ...p, authenticated: authenticatedLink(security) };
}

/** TLS when the receiver has a certificate; with a CA too, client certificates signed by it are required. */
function serverCredentials({ tls }: LinkSecurity): grpc.ServerCredentials {
  if (!tls?.cert || !tls.key) return grpc.ServerCredentials.createInsecure();
  return grpc.ServerCredentials.createSsl(tls.ca, [{ private_key: tls.key, cert_chain: tls.cert }], tls.ca !== null);
}

function bindProblem(message: string): string {
  if (/EADDRINUSE/.test(message)) return 'address already in use';
  if (/EADDRNOTAVAIL/.test(message)) return 'no such local address';
  if (/EACCES/.test(message)) return 'permission denied (ports below 1024 need privileges)';
  if (/ENOTFOUND|EAI_AGAIN|Name resolution failed/i.test(message)) return 'unknown host';
  return message;
}
