// The ProcessState of a frozen process (image/process-state.ts): thread and signal state from the
// capture helper (native freezeForRestore().capture()), the fd table from fd-table.ts, everything
// else from /proc, read here. Call while the process is frozen, so that all of it describes the
// same instant.

import * as fs from 'node:fs';
import * as os from 'node:os';
import { type CapturedThread, type RestorableFrozen, SYSCALL_RESTART } from '../../native';
import { describeRefusal, readFdTable } from './fd-table';
import {
  type Credentials,
  type MappedFile,
  type SpecialMapping,
  type MmImage,
  PROCESS_STATE_VERSION,
  type ProcessState,
  RLIM_INFINITY,
  RLIMIT_NAMES,
  type RlimitImage,
  type ThreadImage,
  REG,
} from '../../image/process-state';

export class CaptureError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CaptureError';
  }
}

export interface CaptureOptions {
  /** Connected sockets become peerless sockets instead of a refusal. */
  dropConnections: boolean;
}

export function captureProcessState(frozen: RestorableFrozen, pid: number, opts: CaptureOptions = { dropConnections: false }): ProcessState {
  if (frozen.pid !== pid) throw new CaptureError(`the frozen process is ${frozen.pid}, not ${pid}`);
  // The check at the start passed, but the process ran on since: what it holds now decides.
  const table = readFdTable(pid, { withContents: true, dropConnections: opts.dropConnections });
  if (table.refusals.length > 0) {
    const named = table.refusals.map(describeRefusal).join('; ');
    throw new CaptureError(`since the migration started, process ${pid} took something a restore cannot recreate: ${named}`);
  }
  const cap = frozen.capture();
  const status = readStatus(pid);
  const threads = cap.threads.map((t) => threadImage(pid, t));
  return {
    version: PROCESS_STATE_VERSION,
    pid,
    kernelRelease: os.release(),
    threads,
    sigactions: cap.sigactions.map((a) => ({ ...a })),
    mm: readMm(pid, cap.brk),
    personality: parseInt(readProc(pid, 'personality').trim(), 16),
    cwd: readLink(pid, 'cwd'),
    umask: parseInt(field(status, 'Umask'), 8),
    rlimits: readLimits(pid),
    creds: readCreds(status, cap.securebits),
    comm: readProc(pid, 'comm').replace(/\n$/, ''),
    noNewPrivs: field(status, 'NoNewPrivs') === '1',
    // THP_enabled is 0 when PR_SET_THP_DISABLE is set (fs/proc/array.c).
    thpDisabled: field(status, 'THP_enabled') === '0',
    dumpable: cap.dumpable,
    files: table.files,
    mappedFiles: readMappedFiles(pid),
    specials: readSpecials(pid),
  };
}

/** stat() of the file behind every file-backed mapping, through /proc/PID/map_files (the very
 *  inode mapped, even if its path now names another file). */
function readMappedFiles(pid: number): MappedFile[] {
  const out: MappedFile[] = [];
  for (const line of readProc(pid, 'maps').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) \S+ (\d+)\s+(\/.*)$/.exec(line);
    if (!m || m[5] === '0' || /^\/(memfd:|SYSV|dev\/zero)/.test(m[6])) continue; // shared memory: its pages are in the image
    let st: fs.BigIntStats;
    try {
      st = fs.statSync(`/proc/${pid}/map_files/${m[1]}-${m[2]}`, { bigint: true });
    } catch {
      continue; // a mapping of something that cannot be stat'ed (the restore refuses it by path)
    }
    if (!st.isFile()) continue;
    const file = m[6].replace(/ \(deleted\)$/, '');
    const [start, end, offset] = [parseInt(m[1], 16), parseInt(m[2], 16), parseInt(m[4], 16)];
    out.push({ start, end, perms: m[3], offset, path: file, dev: st.dev, inode: st.ino, size: st.size, mtimeNs: st.mtimeNs });
  }
  return out;
}

/** Where the kernel's [vvar], [vvar_vclock] and [vdso] are. */
function readSpecials(pid: number): SpecialMapping[] {
  const out: SpecialMapping[] = [];
  for (const line of readProc(pid, 'maps').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) .*\s(\[vvar\]|\[vvar_vclock\]|\[vdso\])$/.exec(line);
    if (m) out.push({ name: m[3], start: parseInt(m[1], 16), end: parseInt(m[2], 16) });
  }
  return out;
}

function threadImage(pid: number, t: CapturedThread): ThreadImage {
  const decision = SYSCALL_RESTART[t.restart];
  if (decision === undefined) throw new CaptureError(`thread ${t.tid}: unknown syscall-restart decision ${t.restart}`);
  return {
    tid: t.tid,
    regs: t.restoreRegs,
    syscallRestart: { decision, syscall: Number(t.regs.readBigInt64LE(REG.orig_rax * 8)), rax: t.regs.readBigUInt64LE(REG.rax * 8) },
    xstate: t.xstate,
    sigmask: t.sigmask,
    altStack: { sp: t.altSp, flags: t.altFlags, size: t.altSize },
    rseq: t.rseqAddr === 0n ? null : { addr: t.rseqAddr, len: t.rseqLen, sig: t.rseqSig, flags: t.rseqFlags },
    robustList: { head: t.robustHead, len: t.robustLen },
    clearChildTid: t.clearChildTid,
    comm: readProc(pid, `task/${t.tid}/comm`).replace(/\n$/, ''),
  };
}

function readProc(pid: number, name: string): string {
  try {
    return fs.readFileSync(`/proc/${pid}/${name}`, 'utf8');
  } catch (e) {
    throw new CaptureError(`cannot read /proc/${pid}/${name}: ${(e as Error).message}`);
  }
}

function readLink(pid: number, name: string): string {
  try {
    return fs.readlinkSync(`/proc/${pid}/${name}`);
  } catch (e) {
    throw new CaptureError(`cannot read /proc/${pid}/${name}: ${(e as Error).message}`);
  }
}

function readStatus(pid: number): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of readProc(pid, 'status').split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) m.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  return m;
}

function field(status: Map<string, string>, name: string): string {
  const v = status.get(name);
  if (v === undefined) throw new CaptureError(`/proc status has no ${name} line`);
  return v;
}

/** /proc/PID/stat fields 26-28 and 45-51 (1-based, proc(5)); brk itself from brk(0). */
function readMm(pid: number, brk: bigint): MmImage {
  const stat = readProc(pid, 'stat');
  // "pid (comm) state ...": comm may hold spaces and ')' - split after the last ')'.
  const rest = stat
    .slice(stat.lastIndexOf(')') + 2)
    .trim()
    .split(' ');
  const f = (n: number): bigint => BigInt(rest[n - 3]); // field n is rest[n - 3] (rest starts at field 3)
  if (rest.length < 49) throw new CaptureError(`/proc/${pid}/stat has ${rest.length + 2} fields, expected 51 or more`);
  return {
    startCode: f(26),
    endCode: f(27),
    startStack: f(28),
    startData: f(45),
    endData: f(46),
    startBrk: f(47),
    brk,
    argStart: f(48),
    argEnd: f(49),
    envStart: f(50),
    envEnd: f(51),
    auxv: fs.readFileSync(`/proc/${pid}/auxv`),
    exePath: readLink(pid, 'exe'),
  };
}

/** /proc/PID/limits: one row per RLIMIT_* in resource order (fs/proc/base.c lnames). */
function readLimits(pid: number): RlimitImage[] {
  const rows = readProc(pid, 'limits')
    .split('\n')
    .slice(1)
    .filter((l) => l.trim() !== '');
  if (rows.length !== RLIMIT_NAMES.length) throw new CaptureError(`/proc/${pid}/limits has ${rows.length} limits, expected ${RLIMIT_NAMES.length}`);
  const value = (s: string): bigint => (s === 'unlimited' ? RLIM_INFINITY : BigInt(s));
  return rows.map((row) => {
    // "%-25s %-20s %-20s %-10s": the name column is 25 wide and may contain spaces.
    const cols = row.slice(26).trim().split(/\s+/);
    return { cur: value(cols[0]), max: value(cols[1]) };
  });
}

function readCreds(status: Map<string, string>, securebits: number): Credentials {
  const ids = (name: string): [number, number, number, number] => {
    const v = field(status, name).split(/\s+/).map(Number);
    if (v.length !== 4 || v.some((x) => !Number.isInteger(x))) throw new CaptureError(`bad ${name} line in /proc status`);
    return [v[0], v[1], v[2], v[3]];
  };
  const groups = field(status, 'Groups');
  const cap = (name: string): bigint => BigInt(`0x${field(status, name)}`);
  return {
    uid: ids('Uid'),
    gid: ids('Gid'),
    groups: groups === '' ? [] : groups.split(/\s+/).map(Number),
    capEff: cap('CapEff'),
    capPrm: cap('CapPrm'),
    capInh: cap('CapInh'),
    capBnd: cap('CapBnd'),
    capAmb: cap('CapAmb'),
    securebits,
  };
}
