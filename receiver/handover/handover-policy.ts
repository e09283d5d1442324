// Who may start a process on this host (docs/design.md, Handover). A handover runs the sender's
// program here with the credentials it had at the source, so the receiver takes one only when
// told to (--accept-handover), only over a link whose sender proved who it is (the token or a
// client certificate: a plaintext link without a token, even on loopback, proves nothing), and,
// with --handover-users, only for those users. Checked at SessionStart, before the sender freezes
// or arms anything, and again on the captured credentials before the start.

import * as fs from 'node:fs';
import { UserError } from '../../common/errors';
import type { LinkSecurity } from '../../common/link-security';

export interface HandoverPolicy {
  /** --accept-handover. */
  accept: boolean;
  /** --handover-users as uids; null: any user. */
  uids: ReadonlySet<number> | null;
  /** The sender proves who it is: a token, or mutual TLS. */
  authenticated: boolean;
  /** --stdio: what fds 0-2 of a handed-over process become. */
  stdio: string;
}

export const NO_HANDOVERS: HandoverPolicy = { accept: false, uids: null, authenticated: false, stdio: '/dev/null' };

export function authenticatedLink(s: LinkSecurity): boolean {
  return s.token !== null || (s.tls !== null && s.tls.ca !== null);
}

/** Why a handover for a process of `uid` is refused here, or null. */
export function handoverRefusal(p: HandoverPolicy, uid: number): string | null {
  if (!p.accept) return 'handover refused: this receiver does not accept handovers (receiver serve --accept-handover)';
  if (!p.authenticated) return 'handover refused: the link is not authenticated (the receiver needs --token-file or mutual TLS)';
  if (p.uids && !p.uids.has(uid)) return `handover refused: uid ${uid} is not in this receiver's --handover-users`;
  return null;
}

/** --handover-users NAME,...: user names (from /etc/passwd) or numeric uids. */
export function parseHandoverUsers(list: string, passwd = '/etc/passwd'): Set<number> {
  const names = new Map<string, number>();
  for (const line of fs.readFileSync(passwd, 'utf8').split('\n')) {
    const f = line.split(':');
    if (f.length >= 3 && /^\d+$/.test(f[2])) names.set(f[0], Number(f[2]));
  }
  const out = new Set<number>();
  for (const item of list.split(',').map((x) => x.trim())) {
    if (item === '') continue;
    if (/^\d+$/.test(item)) out.add(Number(item));
    else if (names.has(item)) out.add(names.get(item)!);
    else throw new UserError(`--handover-users: no user '${item}' in ${passwd}`);
  }
  if (out.size === 0) throw new UserError('--handover-users: no user given');
  return out;
}
