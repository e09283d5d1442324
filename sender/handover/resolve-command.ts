// `sender resolve --to HOST:PORT --session S --pid P`: settle a handover whose sender could not
// learn the receiver's decision (it left the source stopped): kill the source if the process runs
// at the destination, continue it if it does not (docs/design.md, Handover).

import { UserError } from '../../common/errors';
import { parseFlags, parseHostPort, parseIntFlag, usageError } from '../../common/cli';
import { SENDER_SECURITY_FLAGS, senderSecurity } from '../../common/link-security';
import { askResolve } from './resolve-client';
import { applyRecord } from './source-fate';

export const RESOLVE_USAGE = `usage: sender resolve --to HOST:PORT --session ID --pid PID [security flags]

Asks the receiver what it decided about the handover of session ID and settles the source
process PID, left stopped by a sender that could not learn it: killed if the process runs at the
destination, continued (SIGCONT) if it does not. Prints what it did. Exit status 0 once settled,
1 when the receiver cannot be asked or has not decided yet (run it again).

options:
  --to HOST:PORT          the receiver of the migration
  --session ID            the migration's session
  --pid PID               the source process (stopped)
  --tls-ca, --tls-cert, --tls-key, --tls-server-name, --token-file, --insecure  as for migrate`;

const OPTIONS = {
  to: { type: 'string' },
  session: { type: 'string' },
  pid: { type: 'string' },
  ...SENDER_SECURITY_FLAGS,
  help: { type: 'boolean', short: 'h' },
} as const;

export async function runResolve(argv: string[]): Promise<number> {
  const { values: v } = parseFlags(argv, OPTIONS, RESOLVE_USAGE);
  if (v.help) {
    process.stdout.write(`${RESOLVE_USAGE}\n`);
    return 0;
  }
  if (v.to === undefined || v.session === undefined || v.pid === undefined) throw usageError('--to, --session and --pid are required', RESOLVE_USAGE);
  const address = parseHostPort(v.to, '--to');
  const security = senderSecurity(v, address);
  const pid = parseIntFlag(v.pid, '--pid', 0, 1, 2 ** 22);
  let r;
  try {
    r = await askResolve(address, security, v.session, 10_000);
  } catch (err) {
    throw new UserError(`cannot ask the receiver at ${v.to} about session ${v.session} (${(err as Error).message}); process ${pid} stays stopped`, 1);
  }
  const done = applyRecord(r, pid);
  if (done === null) throw new UserError(`session ${v.session}: the receiver is still starting the process; process ${pid} stays stopped (run this again)`, 1);
  process.stdout.write(
    done === 'killed'
      ? `session ${v.session}: the process runs at the destination (pid ${r.pid}); source process ${pid} killed\n`
      : `session ${v.session}: the process was not started at the destination (${r.reason}); source process ${pid} continued\n`,
  );
  return 0;
}
