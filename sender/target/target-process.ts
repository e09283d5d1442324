// Checks on the process to migrate and on our own rights, done before anything touches the target
// or the receiver, so that user mistakes end with one clear line: "no such process 1234",
// "permission denied: need root or CAP_SYS_PTRACE", and native errors met later (the target
// exiting, or executing a new program, mid-migration) read the same way.
//
// Exec. execve keeps the pid, drops the address space we armed and starts a new one. Seen on 6.18,
// right after the target exec'd (test/e2e/target-exec.test.ts): PAGEMAP_SCAN on the pagemap fd
// opened at arming fails with ESRCH and UFFDIO_REGISTER with ENOMEM (both act on the old mm), and
// reads of /proc/PID/mem or /proc/PID/pagemap fds opened before the exec return 0 bytes; but
// /proc/PID/maps, process_vm_readv(pid) and /proc/PID/mem opened afterwards all see the NEW program,
// and ESRCH alone reads as "exited". So checkTarget() keeps a witness of the address space: a
// /proc/PID/pagemap fd opened before anything else, from which one 8-byte entry can be read as long
// as that address space lives (the fd pins only the mm_struct, not the memory). Empty read + same
// process (pid and start time) still holding an address space = it executed a new program. Exec is
// final, so the check the stop-and-copy makes after freezing (every thread stopped: no exec can
// follow) proves the frozen memory is the one we tracked.

import * as fs from 'node:fs';
import { UserError } from '../../common/errors';
import { NativeError } from '../../native';

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
  const fields = statFields(stat);
  if (!fields || fields.state === 'Z' || fields.state === 'X') throw new UserError(`process ${pid} has exited (zombie)`);
  const command = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
  checkPrivileges();
  if (fs.readFileSync(`/proc/${pid}/maps`, 'utf8') === '') {
    throw new UserError(`process ${pid} (${command}) has no user memory (a kernel thread?)`);
  }
  watchProgram(pid, fields.startTime);
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

/** A failure met while migrating pid, said the way a user understands it: whatever failed, a
 *  target checkTarget() accepted that executed a new program (or, in round `round`, exited)
 *  meanwhile is the reason. */
export function explainTargetError(err: unknown, pid: number, round?: number): unknown {
  const state = watched.has(pid) ? targetState(pid) : 'running';
  if (state === 'executed' || (state === 'exited' && round !== undefined)) {
    const what = state === 'executed' ? 'executed a new program' : 'exited';
    const when = round === undefined ? '' : ` (round ${round})`;
    return new UserError(`process ${pid} ${what} during the migration${when}; nothing was committed`, 1);
  }
  if (!(err instanceof NativeError)) return err;
  if (err.code === 'ESRCH') return new UserError(`process ${pid} exited during the migration (${err.syscall}: ${err.message})`);
  if (err.code === 'EPERM' || err.code === 'EACCES') {
    return new UserError(`permission denied: need root or CAP_SYS_PTRACE (${err.syscall} on ${pid}: ${err.message})`);
  }
  return err;
}

/** The process we checked is still there running the same program: it exists, is not a zombie
 *  and (when checkTarget() watched it) has neither executed a new program nor been replaced by
 *  another process with the same pid. */
export function isAlive(pid: number): boolean {
  return targetState(pid) === 'running';
}

export type TargetState = 'running' | 'exited' | 'executed';

/** Where the process checkTarget() saw stands now. */
export function targetState(pid: number): TargetState {
  const w = watched.get(pid);
  let stat: ReturnType<typeof statFields>;
  try {
    stat = statFields(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    stat = null;
  }
  // (The witness stays until forgetTarget: a pid reused later must keep reading "exited".)
  if (!stat || stat.state === 'Z' || stat.state === 'X' || (w && stat.startTime !== w.startTime)) return 'exited';
  if (!w || w.addressSpaceLives()) return 'running';
  // Old address space gone: an exec, or an exit that dropped its memory and is not a zombie yet
  // (vsize 0: no address space at all).
  return stat.vsize > 0 ? 'executed' : 'exited';
}

/** Close the witness of pid (the migration is over). */
export function forgetTarget(pid: number): void {
  watched.get(pid)?.close();
  watched.delete(pid);
}

/** The fields of /proc/PID/stat we use; comm (field 2) may hold spaces and parentheses. */
function statFields(stat: string): { state: string; startTime: string; vsize: number } | null {
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  if (f.length < 21) return null;
  // f[0] is field 3 (state); starttime is field 22, vsize field 23
  return { state: f[0], startTime: f[19], vsize: Number(f[20]) };
}

/** A /proc/PID/pagemap fd opened at checkTarget(): bound to the address space of that moment. */
class ProgramWitness {
  private readonly entry = Buffer.alloc(8);
  constructor(
    private fd: number | null,
    readonly startTime: string,
  ) {}

  addressSpaceLives(): boolean {
    if (this.fd === null) return true;
    try {
      return fs.readSync(this.fd, this.entry, 0, 8, 0) === 8;
    } catch {
      return false;
    }
  }

  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }
}

const watched = new Map<number, ProgramWitness>();

function watchProgram(pid: number, startTime: string): void {
  forgetTarget(pid);
  let fd: number | null = null;
  try {
    fd = fs.openSync(`/proc/${pid}/pagemap`, 'r');
  } catch {
    // Gone already, or not ours to read: arming will say so in its own words.
  }
  watched.set(pid, new ProgramWitness(fd, startTime));
}
