#!/usr/bin/env node
// `sender`: live-migrate a running process's memory to a receiver.
//   sender migrate --pid P --to HOST:PORT [flags]     (see USAGE)
// Parses and checks flags, then hands over to migrate.ts; user mistakes end with one line on
// stderr and a non-zero exit, never a stack trace.

import { ON_NO_CONVERGENCE } from './convergence';
import { MAX_LANES } from '../proto/lanes';
import * as os from 'node:os';
import { UserError, runMain } from '../common/errors';
import { parseEnumFlag, parseFlags, parseHostPort, parseIntFlag, type HostPort, usageError } from '../common/cli';
import { DEFAULT_RECONNECT_TIMEOUT_SECONDS, migrate, type MigrateOptions } from './migrate';
import { HumanReporter, JsonReporter } from './report/reporter';
import { SENDER_SECURITY_FLAGS, refuseSecurityFlags, senderSecurity } from '../common/link-security';
import { parseTransferTarget } from './transfer/open-transfer';
import { runResolve } from './handover/resolve-command';
import { securityFlagArgs } from './handover/security-flags';

const USAGE = `usage: sender migrate --pid PID --to HOST:PORT [options]

Copies the memory of running process PID to a precopy receiver while it keeps running
(iterative pre-copy), then freezes it briefly to copy the last dirty pages and commits a
verified image on the receiver. Needs root or CAP_SYS_PTRACE and Linux >= 6.7.

options:
  --pid PID               process to migrate (required)
  --to HOST:PORT          receiver address (required); or dir:PATH to write the image straight
                          into an images directory on this host (no network)
  --session ID            image name on the receiver, [A-Za-z0-9._-]{1,64}
                          (default: COMMAND-PID-TIMESTAMP)
  --downtime-ms MS        freeze once the expected downtime is under MS (default 300)
  --max-rounds N          pre-copy rounds at most, round 0 included (default 30)
  --max-pages N           pages per scan batch (default 4096)
  --compress lz4|none     page compression on the wire (default lz4)
  --streams N             gRPC streams (connections) per session, 1-16: pages are spread over
                          them by address (default 1; more helps when one stream, not the CPU,
                          is the limit: a long fat link)
  --on-no-convergence throttle|abort|freeze
                          when the target dirties memory too fast for --downtime-ms: throttle
                          it (freeze it a growing share of each 100 ms) until it converges;
                          abort: give up, the target runs on untouched, exit 3; freeze: freeze
                          it anyway for as long as the rest takes (default throttle; freeze
                          with --restorable or --handover)
  --auto-converge         the same as --on-no-convergence throttle (the default)
  --after resume|stop|kill  what to do with the target once the image is committed
                          (default resume: it keeps running)
  --verify / --no-verify  compare the frozen target's memory with the image (default --verify);
                          with --after resume it reads a copy-on-write snapshot after the thaw
  --verify-frozen         compare before the thaw even with --after resume: a pause that grows
                          with memory, but no copy-on-write faults in the target afterwards
  --reconnect-timeout SECONDS  if the link to the receiver breaks, keep the target running
                          (thawed) and tracked, reconnect and resume the session for up to
                          SECONDS (default 120; 0: fail at once); pre-copy then starts a
                          new series of up to --max-rounds rounds
  --restorable            make an image "receiver restore" can start as a process: refuse,
                          before the target is touched, a process holding anything a restore
                          cannot recreate (named in the error), and capture its threads,
                          signals and file descriptors at the freeze
  --handover              move the process: once the image is committed, the receiver starts it
                          on its host and the source is killed (implies --restorable; not with
                          --after). If the receiver refuses or fails, the source runs on; if
                          its answer is lost, the source stays stopped until the receiver's
                          record is known ('sender resolve' settles it later)
  --drop-connections      with --restorable: restore connected sockets as sockets whose peer
                          has gone, instead of refusing them
  --json                  print one JSON document with every figure instead of the table
  --metrics-listen HOST:PORT  serve Prometheus metrics while migrating
  -h, --help              this help

security (plaintext is refused to any address but loopback unless --insecure is given):
  --tls-ca FILE           use TLS; the receiver's certificate must be signed by this PEM CA
  --tls-cert FILE --tls-key FILE  client certificate and key (for a receiver run with --tls-ca)
  --tls-server-name NAME  the name the receiver's certificate carries, when it is not the
                          host in --to
  --token-file FILE       the shared token the receiver asks for (the file's one line; mode 600)
  --insecure              allow plaintext to a non-loopback address

exit status: 0 only when the receiver committed a verified image.`;

const TOP_USAGE = `usage: sender <command> [options]

commands:
  migrate     live-migrate a process's memory to a receiver (sender migrate --help)
  resolve     settle the source of a handover whose outcome the sender did not learn (sender resolve --help)`;

const OPTIONS = {
  pid: { type: 'string' },
  to: { type: 'string' },
  session: { type: 'string' },
  'downtime-ms': { type: 'string' },
  'max-rounds': { type: 'string' },
  'max-pages': { type: 'string' },
  streams: { type: 'string' },
  compress: { type: 'string' },
  'auto-converge': { type: 'boolean' },
  'on-no-convergence': { type: 'string' },
  after: { type: 'string' },
  verify: { type: 'boolean' },
  'no-verify': { type: 'boolean' },
  'verify-frozen': { type: 'boolean' },
  'reconnect-timeout': { type: 'string' },
  restorable: { type: 'boolean' },
  handover: { type: 'boolean' },
  'drop-connections': { type: 'boolean' },
  json: { type: 'boolean' },
  'metrics-listen': { type: 'string' },
  ...SENDER_SECURITY_FLAGS,
  help: { type: 'boolean', short: 'h' },
} as const;

const SESSION_ID = /^(?!\.)[A-Za-z0-9._-]{1,64}$/;

export type ParsedMigrate = Omit<MigrateOptions, 'reporter' | 'signal'> & { json: boolean; metricsListen: HostPort | null };

export function parseMigrateArgs(argv: string[]): ParsedMigrate | 'help' {
  const { values: v } = parseFlags(argv, OPTIONS, USAGE);
  if (v.help) return 'help';
  if (v.pid === undefined) throw usageError('--pid is required', USAGE);
  if (v.to === undefined) throw usageError('--to is required (HOST:PORT of a receiver, or dir:PATH)', USAGE);
  if (v.verify && v['no-verify']) throw new UserError('--verify and --no-verify contradict each other');
  if (v['verify-frozen'] && v['no-verify']) throw new UserError('--verify-frozen and --no-verify contradict each other');
  if (v.handover && v.after !== undefined)
    throw new UserError('--handover decides what becomes of the source (killed once the destination runs): drop --after');
  if (v['drop-connections'] && !v.restorable && !v.handover) throw new UserError('--drop-connections applies only with --restorable or --handover');
  if (v.session !== undefined && !SESSION_ID.test(v.session)) {
    throw new UserError(`--session must be 1-64 characters of A-Z a-z 0-9 . _ - not starting with '.', got '${v.session}'`);
  }
  const to = parseTransferTarget(v.to);
  // Before anything is contacted or attached: a plaintext link off loopback is refused here.
  if (to.kind === 'grpc') {
    to.security = senderSecurity(v, to.address);
    to.streams = parseIntFlag(v.streams, '--streams', 1, 1, MAX_LANES);
  } else {
    refuseSecurityFlags(v, 'apply to a receiver address, not to --to dir:');
    if (v.streams !== undefined) throw new UserError('--streams applies to a receiver address, not to --to dir:');
  }
  if (v.handover && to.kind !== 'grpc') throw new UserError('--handover needs a receiver (--to HOST:PORT), not an images directory');
  return {
    pid: parseIntFlag(v.pid, '--pid', 0, 1, 2 ** 22),
    to,
    sessionId: v.session ?? null,
    downtimeMs: parseIntFlag(v['downtime-ms'], '--downtime-ms', 300, 1, 3_600_000),
    maxRounds: parseIntFlag(v['max-rounds'], '--max-rounds', 30, 1, 10_000),
    maxPages: parseIntFlag(v['max-pages'], '--max-pages', 4096, 1, 262_144),
    compress: parseEnumFlag(v.compress, '--compress', 'lz4', ['lz4', 'none'] as const),
    ...convergencePolicy(v['on-no-convergence'], v['auto-converge'], !!(v.restorable || v.handover)),
    after: parseEnumFlag(v.after, '--after', 'resume', ['resume', 'stop', 'kill'] as const),
    verify: !v['no-verify'],
    verifyFrozen: v['verify-frozen'] ?? false,
    restorable: v.restorable || v.handover ? { dropConnections: v['drop-connections'] ?? false } : null,
    handover: v.handover ? { securityFlags: securityFlagArgs(v) } : null,
    reconnectTimeoutSeconds: parseIntFlag(v['reconnect-timeout'], '--reconnect-timeout', DEFAULT_RECONNECT_TIMEOUT_SECONDS, 0, 86_400),
    json: v.json ?? false,
    metricsListen: v['metrics-listen'] !== undefined ? parseHostPort(v['metrics-listen'], '--metrics-listen') : null,
    sourceHost: os.hostname(),
  };
}

/**
 * grpc-js sends the receiver's IP address as the TLS server name (SNI) when --to is an address,
 * which Node answers with a one-time DeprecationWarning (DEP0123) on stderr: noise the user can do
 * nothing about, in the middle of the sender's output. Only that warning is dropped.
 */
function dropIpServerNameWarning(): void {
  const emitWarning = process.emitWarning.bind(process) as (...args: unknown[]) => void;
  process.emitWarning = ((...args: unknown[]) => {
    if (args.includes('DEP0123')) return;
    emitWarning(...args);
  }) as typeof process.emitWarning;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '-h' || command === '--help' || command === 'help') {
    process.stdout.write(TOP_USAGE + '\n');
    return command === undefined ? 2 : 0;
  }
  if (command === 'resolve') return runResolve(rest);
  if (command !== 'migrate') throw new UserError(`unknown command '${command}'\n\n${TOP_USAGE}`);
  const parsed = parseMigrateArgs(rest);
  if (parsed === 'help') {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  if (parsed.to.kind === 'grpc' && parsed.to.security.tls) dropIpServerNameWarning();
  const reporter = parsed.json ? new JsonReporter() : new HumanReporter();
  await migrate({ ...parsed, reporter, handleSignals: true });
  return 0;
}

if (require.main === module) runMain('sender', () => main(process.argv.slice(2)));

/**
 * --on-no-convergence (and the older --auto-converge, the same as throttle): the convergence
 * options. The default is throttle, but freeze for an image that is to be restored (--restorable,
 * --handover): each throttle freeze leaves a sleeping thread inside restart_syscall for the rest of
 * its sleep, and a restore can only resume that as EINTR (docs/design.md, Convergence).
 */
function convergencePolicy(
  value: string | undefined,
  autoConverge: boolean | undefined,
  restorable: boolean,
): { autoConverge: boolean; abortIfUnmet: boolean } {
  const policy = parseEnumFlag(value, '--on-no-convergence', autoConverge || !restorable ? 'throttle' : 'freeze', ON_NO_CONVERGENCE);
  if (autoConverge && policy !== 'throttle') throw new UserError(`--auto-converge throttles the target; it contradicts --on-no-convergence ${policy}`);
  return { autoConverge: policy === 'throttle', abortIfUnmet: policy === 'abort' };
}
