// `receiver serve`: run the gRPC receiver until SIGTERM/SIGINT.
// Prints exactly one line on stdout once it accepts connections: `receiver listening on HOST:PORT`
// (the real port when 0 was given), so scripts and tests can wait for it; logs go to stderr.

import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { formatHostPort, parseFlags, parseHostPort, parseIntFlag, type HostPort } from '../../common/cli';
import { UserError } from '../../common/errors';
import { logger } from '../../common/log';
import { startMetricsServer, type MetricsServer } from '../../common/metrics/metrics-server';
import { MigrationMetrics } from '../../common/metrics/migration-metrics';
import { DEFAULT_ABANDON_AFTER_MS } from '../server/migration-service';
import { DEFAULT_SHUTDOWN_GRACE_MS, ReceiverServer } from '../server/receiver-server';

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
  -h, --help                  this help`;

const OPTIONS = {
  listen: { type: 'string' },
  images: { type: 'string' },
  'metrics-listen': { type: 'string' },
  'abandon-after': { type: 'string' },
  'shutdown-grace': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

export interface ServeOptions {
  listen: HostPort;
  imagesDir: string;
  metricsListen?: HostPort;
  abandonAfterMs: number;
  shutdownGraceMs: number;
}

export function parseServeFlags(argv: string[]): ServeOptions | 'help' {
  const { values: v } = parseFlags(argv, OPTIONS, USAGE);
  if (v.help) return 'help';
  return {
    listen: parseHostPort(v.listen ?? '127.0.0.1:7070', '--listen'),
    imagesDir: path.resolve(v.images ?? 'precopy-images'),
    metricsListen: v['metrics-listen'] === undefined ? undefined : parseHostPort(v['metrics-listen'], '--metrics-listen'),
    abandonAfterMs: parseIntFlag(v['abandon-after'], '--abandon-after', DEFAULT_ABANDON_AFTER_MS / 1000, 1, 365 * 86400) * 1000,
    shutdownGraceMs: parseIntFlag(v['shutdown-grace'], '--shutdown-grace', DEFAULT_SHUTDOWN_GRACE_MS / 1000, 0, 3600) * 1000,
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

  let metrics: MigrationMetrics | undefined;
  let metricsServer: MetricsServer | undefined;
  if (opts.metricsListen) {
    metrics = new MigrationMetrics({ role: 'receiver' });
    metricsServer = await startMetricsServer(metrics.registry, opts.metricsListen);
  }

  let server: ReceiverServer;
  try {
    server = await ReceiverServer.start({
      listen: opts.listen,
      imagesDir: opts.imagesDir,
      abandonAfterMs: opts.abandonAfterMs,
      events: metrics,
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
  log.info(`images in ${opts.imagesDir}`);

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
