// Can this process be restored at the destination? Checked at the start of a migration that asks
// for a restorable image (--restorable, and every handover), before the target is touched: the
// check only reads /proc and takes pidfd_getfd copies of sockets. Everything a restore cannot
// recreate is named in one error, so a user learns all of it at once (docs/design.md, Restore).

import * as fs from 'node:fs';
import { UserError } from '../../common/errors';
import { describeRefusal, readFdTable, type FdTableOptions } from './fd-table';

/** Process-wide state the restore does not recreate, each with the reason shown to the user. */
function processProblems(pid: number): string[] {
  const out: string[] = [];
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string) => new RegExp(`^${name}:\\s*(.*)$`, 'm').exec(status)?.[1].trim() ?? '';
  if (field('Seccomp') !== '' && field('Seccomp') !== '0') out.push(`it runs under seccomp (mode ${field('Seccomp')}): seccomp filters are not restored`);
  const children: number[] = [];
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      const text = fs.readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
      if (text) children.push(...text.split(/\s+/).map(Number));
    } catch {
      // thread gone meanwhile
    }
  }
  if (children.length > 0)
    out.push(`it has child processes (${children.slice(0, 8).join(', ')}${children.length > 8 ? ', ...' : ''}): only a single process is restored`);
  const maps = fs.readFileSync(`/proc/${pid}/maps`, 'utf8');
  if (/\s\/SYSV[0-9a-f]+/.test(maps)) out.push('it has SysV shared memory attached: SysV IPC is not restored');
  const locks = fs
    .readFileSync('/proc/locks', 'utf8')
    .split('\n')
    .filter((l) => l.split(/\s+/)[4] === String(pid));
  if (locks.length > 0) out.push(`it holds ${locks.length} file lock${locks.length === 1 ? '' : 's'}: file locks are not restored`);
  return out;
}

/** Every reason `pid` cannot be restored, in words; empty when it can. */
export function restoreProblems(pid: number, opts: Pick<FdTableOptions, 'dropConnections'>): string[] {
  const table = readFdTable(pid, { withContents: false, dropConnections: opts.dropConnections });
  return [...processProblems(pid), ...table.refusals.map(describeRefusal)];
}

/** Throws one UserError naming everything that keeps `pid` from being restored. */
export function checkRestorable(pid: number, opts: Pick<FdTableOptions, 'dropConnections'>): void {
  const problems = restoreProblems(pid, opts);
  if (problems.length === 0) return;
  throw new UserError(`process ${pid} cannot be restored at the destination: ${problems.join('; ')}`);
}
