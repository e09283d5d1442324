// `--to` names where the pages go: HOST:PORT (a receiver, over gRPC: the default) or dir:PATH (an
// images directory on this host, written through receiver/store with no network in between).

import * as path from 'node:path';
import { UserError } from '../../common/errors';
import { formatHostPort, parseHostPort, type HostPort } from '../../common/cli';
import { PLAINTEXT, type LinkSecurity } from '../../common/link-security';
import type { PageTransfer } from './page-transfer';

/** grpc: `security` is the link's TLS and token (plaintext as parsed; sender/cli.ts fills it in),
 *  `streams` the streams per session (--streams). */
export type TransferTarget = { kind: 'grpc'; address: HostPort; security: LinkSecurity; streams: number } | { kind: 'dir'; path: string };

export function parseTransferTarget(value: string): TransferTarget {
  if (value.startsWith('dir:')) {
    const dir = value.slice(4);
    if (dir === '') throw new UserError('--to dir: needs a directory, e.g. --to dir:/var/lib/precopy');
    return { kind: 'dir', path: path.resolve(dir) };
  }
  return { kind: 'grpc', address: parseHostPort(value, '--to'), security: PLAINTEXT, streams: 1 };
}

export function describeTarget(t: TransferTarget): string {
  return t.kind === 'dir' ? `dir:${t.path}` : formatHostPort(t.address);
}

/** A PageTransfer for the target; nothing is contacted until open(). */
export async function createTransfer(t: TransferTarget): Promise<PageTransfer> {
  if (t.kind === 'dir') {
    const { LocalTransfer } = await import('./local-transfer');
    return new LocalTransfer(t.path);
  }
  const { GrpcTransfer } = await import('./grpc-transfer');
  return new GrpcTransfer(t.address, t.security, t.streams);
}
