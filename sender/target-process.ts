// Checks on the process to migrate and on our own rights, done before anything touches the target
// or the receiver, so that user mistakes end with one clear line: "no such process 1234",
// "permission denied: need root or CAP_SYS_PTRACE", and native errors met later (the target
// exiting mid-migration) read the same way.

import * as fs from 'node:fs';
import { UserError } from '../common/errors';
import { NativeError } from '../native';

const CAP_SYS_PTRACE = 19;

export interface TargetIdentity {
  pid: number;
  /** /proc/PID/comm */
  command: string;
}

/** The process exists, is not a zombie or a kernel thread, and we may trace it. */
export function checkTarget(pid: number): TargetIdentity {
  if (pid === process.pid) throw new UserError(`process ${pid} is the sender itself`);
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    throw new UserError(`no such process ${pid}`);
  }
  // state is the field after the parenthesised comm (which may itself hold spaces and parens)
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  if (state === 'Z' || state === 'X') throw new UserError(`process ${pid} has exited (zombie)`);
  const command = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
  checkPrivileges();
  if (fs.readFileSync(`/proc/${pid}/maps`, 'utf8') === '') {
    throw new UserError(`process ${pid} (${command}) has no user memory (a kernel thread?)`);
  }
  return { pid, command };
}

/** Root, or CAP_SYS_PTRACE in our effective set (userfaultfd and ptrace on others need it). */
export function checkPrivileges(): void {
  if (process.getuid?.() === 0) return;
  const status = fs.readFileSync('/proc/self/status', 'utf8');
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
  if (m && (BigInt('0x' + m[1]) >> BigInt(CAP_SYS_PTRACE)) & 1n) return;
  throw new UserError('permission denied: need root or CAP_SYS_PTRACE');
}

/** Populated memory the sender will copy, estimated from the kernel's counters (anonymous pages,
 *  copies of private file pages included, plus shared memory): the progress bar's total and the
 *  receiver's memory_bytes, before round 0 has counted it exactly. */
export function estimateMemoryBytes(pid: number): number {
  const field = (text: string, name: string) => {
    const m = new RegExp(`^${name}:\\s*(\\d+) kB$`, 'm').exec(text);
    return m ? Number(m[1]) * 1024 : 0;
  };
  try {
    const rollup = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    return field(rollup, 'Anonymous') + field(status, 'RssShmem');
  } catch {
    return 0;
  }
}

/** A native failure on the target, said the way a user understands it. */
export function explainTargetError(err: unknown, pid: number): unknown {
  if (!(err instanceof NativeError)) return err;
  if (err.code === 'ESRCH') return new UserError(`process ${pid} exited during the migration (${err.syscall}: ${err.message})`);
  if (err.code === 'EPERM' || err.code === 'EACCES') {
    return new UserError(`permission denied: need root or CAP_SYS_PTRACE (${err.syscall} on ${pid}: ${err.message})`);
  }
  return err;
}

/** The process exists and is not a zombie. */
export function isAlive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat[stat.lastIndexOf(')') + 2];
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}
