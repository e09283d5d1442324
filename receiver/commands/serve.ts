// `receiver serve`: run the gRPC receiver until SIGTERM/SIGINT.
// Prints exactly one line on stdout once it accepts connections: `receiver listening on HOST:PORT`
// (the real port when 0 was given), so scripts and tests can wait for it; logs go to stderr.

import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { formatHostPort, parseFlags, parseHostPort, parseIntFlag, parseSizeFlag, type HostPort } from '../../common/cli';
import { UserError } from '../../common/errors';
import { logger } from '../../common/log';
import { startMetricsServer, type MetricsServer } from '../../common/metrics/metrics-server';
import { ReceiverMetrics } from '../receiver-metrics';
import { SECURITY_FLAGS, describeSecurity, receiverSecurity, type LinkSecurity } from '../../common/link-security';
import { DEFAULT_ABANDON_AFTER_MS } from '../server/migration-service';
import { DEFAULT_SHUTDOWN_GRACE_MS, ReceiverServer } from '../server/receiver-server';
import { MAX_MESSAGE_BYTES } from '../server/limits';
import { NO_HANDOVERS, authenticatedLink, parseHandoverUsers, type HandoverPolicy } from '../handover/handover-policy';
import { DEFAULT_MAX_SESSIONS, describeLimits, type ReceiverLimits } from '../server/session-limits';

const log = logger('serve');
const grpcLog = logger('grpc');

export const USAGE = `usage: receiver serve [--listen HOST:PORT] [--images DIR] [options]

Accepts live migrations over gRPC (precopy.v1.Migration; grpc.health.v1 on the same port) and
keeps each session's memory image under DIR/SESSION, durable round by round. Prints
'receiver listening on HOST:PORT' on stdout once ready. SIGTERM or SIGINT stops it gracefully:
health turns NOT_SERVING, streams get --shutdown-grace to finish, the rest are cut and their
sessions stay resumable at their last acknowledged round.

options:
  --listen HOST:PORT          address to listen on (default 127.0.0.1:7070; port 0: any free port)
  --images DIR                images directory, created if missing (default ./precopy-images)
  --metrics-listen HOST:PORT  also serve Prometheus metrics on http://HOST:PORT/metrics
  --abandon-after SECONDS     mark a session aborted when no sender resumed it this long after
                              its stream broke (default ${DEFAULT_ABANDON_AFTER_MS / 1000})
  --shutdown-grace SECONDS    on SIGTERM/SIGINT, wait this long for streams (default ${DEFAULT_SHUTDOWN_GRACE_MS / 1000})
  -h, --help                  this help

limits (SIZE: bytes, or with a binary suffix K, M, G, T: 512M, 2G; a refusal ends the sender's
stream with RESOURCE_EXHAUSTED and the reason):
  --max-sessions N            sessions receiving at once; more are refused before they touch
                              their session, so a resume can be retried later (default ${DEFAULT_MAX_SESSIONS})
  --max-image-bytes SIZE      page bytes one session's image may hold (default unlimited)
  --max-message-bytes SIZE    largest gRPC message accepted (default and maximum ${MAX_MESSAGE_BYTES / 2 ** 20}M;
                              a sender's page batches must fit)
  --max-rate SIZE             page bytes per second one session may write; faster senders are
                              slowed through flow control, not refused (default unlimited)

handover (docs/design.md, Handover: the receiver starts the migrated process on this host):
  --accept-handover           start the process of a 'sender migrate --handover' here once its
                              image is committed; needs --token-file or mutual TLS (a handover
                              runs the sender's program here)
  --handover-users NAME,...   only for processes of these users (names or uids; default any)
  --stdio FILE                what fds 0, 1 and 2 of a handed-over process become (default
                              /dev/null), opened for appending

security (plaintext is refused on any address but loopback unless --insecure is given):
  --tls-cert FILE --tls-key FILE  serve TLS with this PEM certificate chain and private key
  --tls-ca FILE               require client certificates signed by this PEM CA (mutual TLS)
  --token-file FILE           require this shared token (the file's one line; mode 600) on every
                              migration; senders give the same file
  --insecure                  allow plaintext on a non-loopback address`;

const OPTIONS = {
  listen: { type: 'string' },
  images: { type: 'string' },
  'metrics-listen': { type: 'string' },
  'abandon-after': { type: 'string' },
  'shutdown-grace': { type: 'string' },
  'max-sessions': { type: 'string' },
  'max-image-bytes': { type: 'string' },
  'max-message-bytes': { type: 'string' },
  'max-rate': { type: 'string' },
  'accept-handover': { type: 'boolean' },
  'handover-users': { type: 'string' },
  stdio: { type: 'string' },
  ...SECURITY_FLAGS,
  help: { type: 'boolean', short: 'h' },
} as const;

export interface ServeOptions {
  listen: HostPort;
  imagesDir: string;
  metricsListen?: HostPort;
  abandonAfterMs: number;
  shutdownGraceMs: number;
  limits: ReceiverLimits;
  security: LinkSecurity;
  handover: HandoverPolicy;
}

export function parseServeFlags(argv: string[]): ServeOptions | 'help' {
  const { values: v } = parseFlags(argv, OPTIONS, USAGE);
  if (v.help) return 'help';
  const listen = parseHostPort(v.listen ?? '127.0.0.1:7070', '--listen');
  const security = receiverSecurity(v, listen);
  return {
    listen,
    imagesDir: path.resolve(v.images ?? 'precopy-images'),
    metricsListen: v['metrics-listen'] === undefined ? undefined : parseHostPort(v['metrics-listen'], '--metrics-listen'),
    abandonAfterMs: parseIntFlag(v['abandon-after'], '--abandon-after', DEFAULT_ABANDON_AFTER_MS / 1000, 1, 365 * 86400) * 1000,
    shutdownGraceMs: parseIntFlag(v['shutdown-grace'], '--shutdown-grace', DEFAULT_SHUTDOWN_GRACE_MS / 1000, 0, 3600) * 1000,
    limits: parseLimitFlags(v),
    security,
    handover: parseHandoverFlags(v, security),
  };
}

function parseHandoverFlags(v: { 'accept-handover'?: boolean; 'handover-users'?: string; stdio?: string }, security: LinkSecurity): HandoverPolicy {
  if (!v['accept-handover']) {
    if (v['handover-users'] !== undefined || v.stdio !== undefined) throw new UserError('--handover-users and --stdio apply only with --accept-handover');
    return NO_HANDOVERS;
  }
  // Refused here rather than on every SessionStart: such a receiver could never accept one.
  if (!authenticatedLink(security)) throw new UserError('--accept-handover needs an authenticated link: --token-file, or --tls-ca (mutual TLS)');
  return {
    accept: true,
    uids: v['handover-users'] === undefined ? null : parseHandoverUsers(v['handover-users']),
    authenticated: true,
    stdio: path.resolve(v.stdio ?? '/dev/null'),
  };
}

const MAX_SIZE = 2 ** 50;

function parseLimitFlags(v: Partial<Record<'max-sessions' | 'max-image-bytes' | 'max-message-bytes' | 'max-rate', string>>): ReceiverLimits {
  return {
    maxSessions: parseIntFlag(v['max-sessions'], '--max-sessions', DEFAULT_MAX_SESSIONS, 1, 100_000),
    maxImageBytes: parseSizeFlag(v['max-image-bytes'], '--max-image-bytes', Infinity, 4096, MAX_SIZE),
    // Below 64 KiB not even a small page batch fits; above the default the batch limits refuse anyway.
    maxMessageBytes: parseSizeFlag(v['max-message-bytes'], '--max-message-bytes', MAX_MESSAGE_BYTES, 64 << 10, MAX_MESSAGE_BYTES),
    maxRateBytesPerSecond: parseSizeFlag(v['max-rate'], '--max-rate', Infinity, 4096, MAX_SIZE),
  };
}

export async function run(argv: string[]): Promise<number> {
  const opts = parseServeFlags(argv);
  if (opts === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }

  // grpc-js prints its own errors on stderr ("E No address added ..."): the receiver reports
  // every problem itself, so grpc-js's lines go to the debug log.
  grpc.setLogger({ error: (...args: unknown[]) => grpcLog.debug(args.join(' ')) });

  let metrics: ReceiverMetrics | undefined;
  let metricsServer: MetricsServer | undefined;
  if (opts.metricsListen) {
    metrics = new ReceiverMetrics();
    metricsServer = await startMetricsServer(metrics.registry, opts.metricsListen);
  }

  let server: ReceiverServer;
  try {
    server = await ReceiverServer.start({
      listen: opts.listen,
      imagesDir: opts.imagesDir,
      abandonAfterMs: opts.abandonAfterMs,
      events: metrics,
      limits: opts.limits,
      security: opts.security,
      handover: opts.handover,
    });
  } catch (err) {
    await metricsServer?.close();
    throw imagesDirProblem(err, opts.imagesDir);
  }
  // Handlers before the ready line: whoever reads it may signal at once.
  const signalled = new Promise<NodeJS.Signals>((resolve) => {
    const on = (s: NodeJS.Signals) => {
      process.off('SIGTERM', on);
      process.off('SIGINT', on);
      resolve(s);
    };
    process.on('SIGTERM', on);
    process.on('SIGINT', on);
  });
  process.stdout.write(`receiver listening on ${formatHostPort(server.address)}\n`);
  log.info(`images in ${opts.imagesDir}; link: ${describeSecurity(opts.security)}`);
  log.info(`limits: ${describeLimits(opts.limits)}`);
  if (opts.handover.accept)
    log.info(`handovers accepted${opts.handover.uids ? ` for uids ${[...opts.handover.uids].join(',')}` : ''}; stdio ${opts.handover.stdio}`);

  const signal = await signalled;
  log.info(`${signal}: shutting down (a second signal stops at once)`);
  await server.shutdown(opts.shutdownGraceMs);
  await metricsServer?.close();
  metrics?.close();
  log.info('stopped');
  return 0;
}

/** The image store creates DIR on start: turn its file errors into a plain message. */
function imagesDirProblem(err: unknown, dir: string): unknown {
  const e = err as NodeJS.ErrnoException;
  if (typeof e?.code === 'string' && typeof e.syscall === 'string') {
    const why = e.code === 'EACCES' ? 'permission denied' : e.code === 'ENOTDIR' ? 'not a directory' : e.code === 'EROFS' ? 'read-only file system' : e.message;
    return new UserError(`--images: cannot use ${dir}: ${why}`);
  }
  return err;
}
