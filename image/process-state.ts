// (Over 400 lines on purpose: one format, its types next to the checks that decode it as hostile
// input, field by field.)
// The state of a process beyond its memory: what a restore needs to make a stopped process run
// on from the exact instruction where it was frozen (x86_64, same kernel release).
//
// Wire format: one JSON document, versioned. bigints (u64 register words, masks, addresses in
// kernel structs) travel as decimal strings, binary blobs (register sets, auxv) as base64.
// decodeProcessState treats its input as hostile: every field is checked for type and range,
// sizes are capped, unknown versions are refused; any problem is one ProcessStateError whose
// message names the field.

import { checkFdStates, type FdState } from './fd-state';

export type { FdState };

/** Bump when a field changes meaning; decode refuses other versions. */
export const PROCESS_STATE_VERSION = 1;

/** struct user_regs_struct (x86_64): 27 u64 words. */
export const USER_REGS_WORDS = 27;
export const USER_REGS_BYTES = USER_REGS_WORDS * 8;
/** Word indexes in user_regs_struct (arch/x86/include/asm/user_64.h). */
export const REG = {
  r15: 0,
  r14: 1,
  r13: 2,
  r12: 3,
  rbp: 4,
  rbx: 5,
  r11: 6,
  r10: 7,
  r9: 8,
  r8: 9,
  rax: 10,
  rcx: 11,
  rdx: 12,
  rsi: 13,
  rdi: 14,
  orig_rax: 15,
  rip: 16,
  cs: 17,
  eflags: 18,
  rsp: 19,
  ss: 20,
  fs_base: 21,
  gs_base: 22,
  ds: 23,
  es: 24,
  fs: 25,
  gs: 26,
} as const;

/** Caps of decode (hostile input). */
export const LIMITS = {
  /** pid_max can be 4194304, but one process with more threads than this is not a restore case. */
  threads: 32768,
  /** NT_X86_XSTATE is 832 bytes here, ~11 KiB with AMX; 64 KiB leaves room. */
  xstateBytes: 64 * 1024,
  /** mm->saved_auxv is AT_VECTOR_SIZE (~50) u64 pairs; 4 KiB is generous. */
  auxvBytes: 4096,
  pathBytes: 4096,
  groups: 65536,
  files: 1 << 20,
  /** vm.max_map_count is 65530 by default. */
  mappings: 1 << 20,
  /** Whole encoded document. */
  documentBytes: 512 * 1024 * 1024,
} as const;

export const U64_MAX = (1n << 64n) - 1n;
export const RLIM_INFINITY = U64_MAX;
/** RLIMIT_CPU .. RLIMIT_RTTIME (include/uapi/asm-generic/resource.h). */
export const RLIMIT_NAMES = [
  'cpu',
  'fsize',
  'data',
  'stack',
  'core',
  'rss',
  'nproc',
  'nofile',
  'memlock',
  'as',
  'locks',
  'sigpending',
  'msgqueue',
  'nice',
  'rtprio',
  'rttime',
] as const;

/**
 * What was done to the registers of a thread caught inside a system call (rax = -ERESTART*,
 * orig_rax = the syscall number) so that they can be loaded as they are into a new thread.
 *
 * At the freeze no signal is being delivered, so on resume the kernel would take its "no handler"
 * path (arch_do_signal_or_restart):
 *  - -ERESTARTSYS (512), -ERESTARTNOINTR (513), -ERESTARTNOHAND (514): restart the same syscall:
 *    rip -= 2 (back onto the `syscall` instruction), rax = orig_rax. We do exactly that:
 *    'restart'. (Had a handler run, -ERESTARTNOHAND and -ERESTARTSYS without SA_RESTART would
 *    have become -EINTR, but none does here.)
 *  - -ERESTART_RESTARTBLOCK (516): restart through restart_syscall(), which continues from
 *    current->restart_block (e.g. the remaining time of nanosleep). That block is kernel state
 *    and does not survive; we re-issue the original syscall instead: 'reissue-restart-block'.
 *    A relative sleep/timeout starts over (the thread sleeps up to one full timeout longer, never
 *    shorter); absolute ones (clock_nanosleep TIMER_ABSTIME, futex with a bitset) are exact.
 *  - anything else (a finished syscall's return value, or not in a syscall): 'none'.
 * In every case orig_rax is then set to -1 in the stored regs so that the kernel applies no
 * further restart logic to them when the restored thread resumes.
 */
export type SyscallRestart = 'none' | 'restart' | 'reissue-restart-block';

export interface ThreadImage {
  tid: number;
  /** user_regs_struct bytes with the restart decision applied (see SyscallRestart). */
  regs: Buffer;
  /** The decision, and the syscall / rax it was made from (for diagnostics). */
  syscallRestart: { decision: SyscallRestart; syscall: number; rax: bigint };
  /** NT_X86_XSTATE bytes (XSAVE layout; XSTATE_BV as captured). */
  xstate: Buffer;
  /** Blocked signals (kernel sigset, bit n-1 = signal n). */
  sigmask: bigint;
  /** sigaltstack(): ss_flags as the kernel reported them (SS_DISABLE = 2, SS_ONSTACK = 1, SS_AUTODISARM). */
  altStack: { sp: bigint; flags: number; size: bigint };
  /** rseq registration (PTRACE_GET_RSEQ_CONFIGURATION), null when none. */
  rseq: { addr: bigint; len: number; sig: number; flags: number } | null;
  /** set_robust_list() head (0 = none) and length. */
  robustList: { head: bigint; len: bigint };
  /** clear_child_tid (set_tid_address): pthread_join waits on the futex there. */
  clearChildTid: bigint;
  /** Thread name (/proc/PID/task/TID/comm), at most 15 bytes. */
  comm: string;
}

/** struct sigaction as the kernel keeps it (x86_64 rt_sigaction layout). */
export interface SigactionImage {
  handler: bigint;
  flags: bigint;
  restorer: bigint;
  mask: bigint;
}

/** Fields of PR_SET_MM_MAP (struct prctl_mm_map) plus the exe link. */
export interface MmImage {
  startCode: bigint;
  endCode: bigint;
  startData: bigint;
  endData: bigint;
  startBrk: bigint;
  brk: bigint;
  startStack: bigint;
  argStart: bigint;
  argEnd: bigint;
  envStart: bigint;
  envEnd: bigint;
  /** /proc/PID/auxv bytes (u64 pairs up to and including AT_NULL). */
  auxv: Buffer;
  /** /proc/PID/exe target. */
  exePath: string;
}

export interface Credentials {
  /** real, effective, saved, filesystem. */
  uid: [number, number, number, number];
  gid: [number, number, number, number];
  groups: number[];
  capEff: bigint;
  capPrm: bigint;
  capInh: bigint;
  capBnd: bigint;
  capAmb: bigint;
  /** prctl(PR_GET_SECUREBITS). */
  securebits: number;
}

export interface RlimitImage {
  cur: bigint;
  max: bigint;
}

export interface ProcessState {
  version: number;
  pid: number;
  /** `uname -r` of the source: a restore refuses any other kernel. */
  kernelRelease: string;
  /** The group leader first (tid === pid). */
  threads: ThreadImage[];
  /** Index i is signal i + 1 (1..64). SIGKILL/SIGSTOP entries are recorded but never set. */
  sigactions: SigactionImage[];
  mm: MmImage;
  personality: number;
  cwd: string;
  umask: number;
  /** Index = RLIMIT_* number (RLIMIT_NAMES). */
  rlimits: RlimitImage[];
  creds: Credentials;
  comm: string;
  noNewPrivs: boolean;
  thpDisabled: boolean;
  /** prctl(PR_GET_DUMPABLE): credentials changes reset it, so it is restored after them. */
  dumpable: number;
  files: FdState[];
  /** The file behind each file-backed mapping, as it was at the freeze: a restore maps the same
   *  file again and refuses one that changed (unless told otherwise). */
  mappedFiles: MappedFile[];
  /** The kernel's own mappings ([vvar], [vvar_vclock], [vdso]): not memory the image holds, but
   *  where the program expects them (glibc keeps pointers into the vDSO). */
  specials: SpecialMapping[];
}

export interface SpecialMapping {
  name: string;
  start: number;
  end: number;
}

export interface MappedFile {
  /** The mapping, as in /proc/PID/maps (shared file mappings are in no page layout: their pages
   *  live in the file). */
  start: number;
  end: number;
  perms: string;
  offset: number;
  path: string;
  dev: bigint;
  inode: bigint;
  size: bigint;
  mtimeNs: bigint;
}

// ---------------------------------------------------------------- encode

export function encodeProcessState(s: ProcessState): Buffer {
  // Validate our own output too: a bad state should fail at the source, not at the restore.
  checkState(s as unknown, 'state');
  return Buffer.from(JSON.stringify(toPlain(s)), 'utf8');
}

/** bigint -> decimal string, Buffer -> base64 (Buffer.toJSON would give a byte array, 3x bigger). */
function toPlain(v: unknown): unknown {
  if (typeof v === 'bigint') return v.toString(10);
  if (Buffer.isBuffer(v)) return v.toString('base64');
  if (Array.isArray(v)) return v.map(toPlain);
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = toPlain(x);
    return out;
  }
  return v;
}

// ---------------------------------------------------------------- decode

export class ProcessStateError extends Error {
  constructor(message: string) {
    super(`process state: ${message}`);
    this.name = 'ProcessStateError';
  }
}

export function decodeProcessState(buf: Buffer): ProcessState {
  if (!Buffer.isBuffer(buf)) throw new ProcessStateError('input is not a Buffer');
  if (buf.length > LIMITS.documentBytes) throw new ProcessStateError(`document of ${buf.length} bytes exceeds ${LIMITS.documentBytes}`);
  let raw: unknown;
  try {
    raw = JSON.parse(buf.toString('utf8'));
  } catch (e) {
    throw new ProcessStateError(`not JSON: ${(e as Error).message}`);
  }
  return decodeProcessStateValue(raw);
}

/** decodeProcessState of a document already parsed from JSON (the manifest holds it so). */
export function decodeProcessStateValue(raw: unknown): ProcessState {
  const o = obj(raw, 'state');
  const version = int(o.version, 'version', 0, 1 << 30);
  if (version !== PROCESS_STATE_VERSION) throw new ProcessStateError(`version ${version} is not supported (this build reads version ${PROCESS_STATE_VERSION})`);
  const s: ProcessState = {
    version,
    pid: int(o.pid, 'pid', 1, 4194304),
    kernelRelease: str(o.kernelRelease, 'kernelRelease', 256),
    threads: arr(o.threads, 'threads', 1, LIMITS.threads).map((t, i) => decodeThread(t, `threads[${i}]`)),
    sigactions: arr(o.sigactions, 'sigactions', 64, 64).map((a, i) => decodeSigaction(a, `sigactions[${i}]`)),
    mm: decodeMm(o.mm, 'mm'),
    personality: int(o.personality, 'personality', 0, 0xffffffff),
    cwd: path(o.cwd, 'cwd'),
    umask: int(o.umask, 'umask', 0, 0o777),
    rlimits: arr(o.rlimits, 'rlimits', RLIMIT_NAMES.length, RLIMIT_NAMES.length).map((r, i) => {
      const ro = obj(r, `rlimits[${i}]`);
      return { cur: u64(ro.cur, `rlimits[${i}].cur`), max: u64(ro.max, `rlimits[${i}].max`) };
    }),
    creds: decodeCreds(o.creds, 'creds'),
    comm: str(o.comm, 'comm', 15),
    noNewPrivs: bool(o.noNewPrivs, 'noNewPrivs'),
    thpDisabled: bool(o.thpDisabled, 'thpDisabled'),
    dumpable: int(o.dumpable, 'dumpable', 0, 2),
    files: checkFdStates(o.files, (m) => {
      throw new ProcessStateError(m);
    }),
    mappedFiles: arr(o.mappedFiles, 'mappedFiles', 0, LIMITS.mappings).map((x, i) => {
      const w = `mappedFiles[${i}]`;
      const m = obj(x, w);
      return {
        start: int(m.start, `${w}.start`, 0, 2 ** 47),
        end: int(m.end, `${w}.end`, 1, 2 ** 47),
        perms: perms(m.perms, `${w}.perms`),
        offset: int(m.offset, `${w}.offset`, 0, Number.MAX_SAFE_INTEGER),
        path: path(m.path, `${w}.path`),
        dev: u64(m.dev, `${w}.dev`),
        inode: u64(m.inode, `${w}.inode`),
        size: u64(m.size, `${w}.size`),
        mtimeNs: u64(m.mtimeNs, `${w}.mtimeNs`),
      };
    }),
    specials: arr(o.specials, 'specials', 0, 8).map((x, i) => {
      const w = `specials[${i}]`;
      const m = obj(x, w);
      return {
        name: oneOf(m.name, `${w}.name`, ['[vvar]', '[vvar_vclock]', '[vdso]'] as const),
        start: int(m.start, `${w}.start`, 0, 2 ** 47),
        end: int(m.end, `${w}.end`, 1, 2 ** 47),
      };
    }),
  };
  checkState(s, 'state');
  return s;
}

/** Cross-field rules (both directions). */
function checkState(x: unknown, where: string): void {
  const s = x as ProcessState;
  if (!s || typeof s !== 'object' || !Array.isArray(s.threads)) throw new ProcessStateError(`${where} is not a process state`);
  if (s.threads.length === 0 || s.threads[0].tid !== s.pid) throw new ProcessStateError(`threads[0] must be the group leader (tid ${s.pid})`);
  const seen = new Set<number>();
  for (const t of s.threads) {
    if (seen.has(t.tid)) throw new ProcessStateError(`thread id ${t.tid} appears twice`);
    seen.add(t.tid);
    if (!Buffer.isBuffer(t.regs) || t.regs.length !== USER_REGS_BYTES) throw new ProcessStateError(`thread ${t.tid}: regs must be ${USER_REGS_BYTES} bytes`);
  }
  const xs = s.threads[0].xstate.length;
  if (s.threads.some((t) => t.xstate.length !== xs)) throw new ProcessStateError('threads have xstate areas of different sizes');
  if (s.rlimits.some((r) => r.cur > r.max)) throw new ProcessStateError('an rlimit has cur > max');
}

function decodeThread(x: unknown, w: string): ThreadImage {
  const o = obj(x, w);
  const sr = obj(o.syscallRestart, `${w}.syscallRestart`);
  const decision = oneOf(sr.decision, `${w}.syscallRestart.decision`, ['none', 'restart', 'reissue-restart-block'] as const);
  const as = obj(o.altStack, `${w}.altStack`);
  const rl = obj(o.robustList, `${w}.robustList`);
  let rseq: ThreadImage['rseq'] = null;
  if (o.rseq !== null) {
    const r = obj(o.rseq, `${w}.rseq`);
    rseq = {
      addr: u64(r.addr, `${w}.rseq.addr`),
      len: int(r.len, `${w}.rseq.len`, 0, 1 << 16),
      sig: int(r.sig, `${w}.rseq.sig`, 0, 0xffffffff),
      flags: int(r.flags, `${w}.rseq.flags`, 0, 0xffffffff),
    };
  }
  const xstate = blob(o.xstate, `${w}.xstate`, LIMITS.xstateBytes);
  if (xstate.length < 576 || xstate.length % 64 !== 0)
    throw new ProcessStateError(`${w}.xstate: ${xstate.length} bytes is not an XSAVE area (>= 576, a multiple of 64)`);
  return {
    tid: int(o.tid, `${w}.tid`, 1, 4194304),
    regs: blob(o.regs, `${w}.regs`, USER_REGS_BYTES, USER_REGS_BYTES),
    syscallRestart: { decision, syscall: int(sr.syscall, `${w}.syscallRestart.syscall`, -1, 4096), rax: u64(sr.rax, `${w}.syscallRestart.rax`) },
    xstate,
    sigmask: u64(o.sigmask, `${w}.sigmask`),
    altStack: { sp: u64(as.sp, `${w}.altStack.sp`), flags: int(as.flags, `${w}.altStack.flags`, 0, 0xffffffff), size: u64(as.size, `${w}.altStack.size`) },
    rseq,
    robustList: { head: u64(rl.head, `${w}.robustList.head`), len: u64(rl.len, `${w}.robustList.len`) },
    clearChildTid: u64(o.clearChildTid, `${w}.clearChildTid`),
    comm: str(o.comm, `${w}.comm`, 15),
  };
}

function decodeSigaction(x: unknown, w: string): SigactionImage {
  const o = obj(x, w);
  return {
    handler: u64(o.handler, `${w}.handler`),
    flags: u64(o.flags, `${w}.flags`),
    restorer: u64(o.restorer, `${w}.restorer`),
    mask: u64(o.mask, `${w}.mask`),
  };
}

const MM_FIELDS = ['startCode', 'endCode', 'startData', 'endData', 'startBrk', 'brk', 'startStack', 'argStart', 'argEnd', 'envStart', 'envEnd'] as const;

function decodeMm(x: unknown, w: string): MmImage {
  const o = obj(x, w);
  const mm = {} as MmImage;
  for (const k of MM_FIELDS) {
    const v = u64(o[k], `${w}.${k}`);
    if (v >= 1n << 47n) throw new ProcessStateError(`${w}.${k} 0x${v.toString(16)} is not a user-space address`);
    mm[k] = v;
  }
  mm.auxv = blob(o.auxv, `${w}.auxv`, LIMITS.auxvBytes);
  if (mm.auxv.length % 16 !== 0) throw new ProcessStateError(`${w}.auxv: ${mm.auxv.length} bytes is not a list of u64 pairs`);
  mm.exePath = path(o.exePath, `${w}.exePath`);
  return mm;
}

function decodeCreds(x: unknown, w: string): Credentials {
  const o = obj(x, w);
  const ids = (v: unknown, n: string): [number, number, number, number] => {
    const a = arr(v, `${w}.${n}`, 4, 4).map((e, i) => int(e, `${w}.${n}[${i}]`, 0, 0xfffffffe));
    return [a[0], a[1], a[2], a[3]];
  };
  return {
    uid: ids(o.uid, 'uid'),
    gid: ids(o.gid, 'gid'),
    groups: arr(o.groups, `${w}.groups`, 0, LIMITS.groups).map((g, i) => int(g, `${w}.groups[${i}]`, 0, 0xfffffffe)),
    capEff: u64(o.capEff, `${w}.capEff`),
    capPrm: u64(o.capPrm, `${w}.capPrm`),
    capInh: u64(o.capInh, `${w}.capInh`),
    capBnd: u64(o.capBnd, `${w}.capBnd`),
    capAmb: u64(o.capAmb, `${w}.capAmb`),
    securebits: int(o.securebits, `${w}.securebits`, 0, 0xff),
  };
}

// ---------------------------------------------------------------- field checks

function perms(x: unknown, w: string): string {
  if (typeof x !== 'string' || !/^[r-][w-][x-][ps]$/.test(x)) throw new ProcessStateError(`${w} must be maps permissions like "r-xp"`);
  return x;
}

function obj(x: unknown, w: string): Record<string, unknown> {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) throw new ProcessStateError(`${w} must be an object`);
  return x as Record<string, unknown>;
}

function arr(x: unknown, w: string, min: number, max: number): unknown[] {
  if (!Array.isArray(x)) throw new ProcessStateError(`${w} must be an array`);
  if (x.length < min || x.length > max) throw new ProcessStateError(`${w} has ${x.length} entries, expected ${min === max ? min : `${min}..${max}`}`);
  return x;
}

function int(x: unknown, w: string, min: number, max: number): number {
  if (typeof x !== 'number' || !Number.isInteger(x) || x < min || x > max)
    throw new ProcessStateError(`${w} must be an integer in ${min}..${max}, got ${short(x)}`);
  return x;
}

function bool(x: unknown, w: string): boolean {
  if (typeof x !== 'boolean') throw new ProcessStateError(`${w} must be true or false, got ${short(x)}`);
  return x;
}

function u64(x: unknown, w: string): bigint {
  if (typeof x !== 'string' || !/^(0|[1-9][0-9]{0,19})$/.test(x)) throw new ProcessStateError(`${w} must be a decimal u64 string, got ${short(x)}`);
  const v = BigInt(x);
  if (v > U64_MAX) throw new ProcessStateError(`${w} ${x} does not fit in 64 bits`);
  return v;
}

function str(x: unknown, w: string, maxBytes: number): string {
  if (typeof x !== 'string') throw new ProcessStateError(`${w} must be a string, got ${short(x)}`);
  if (Buffer.byteLength(x) > maxBytes) throw new ProcessStateError(`${w} is longer than ${maxBytes} bytes`);
  if (x.includes('\0')) throw new ProcessStateError(`${w} contains a NUL byte`);
  return x;
}

function path(x: unknown, w: string): string {
  const p = str(x, w, LIMITS.pathBytes);
  if (!p.startsWith('/')) throw new ProcessStateError(`${w} must be an absolute path, got ${short(p)}`);
  return p;
}

function blob(x: unknown, w: string, maxBytes: number, minBytes = 0): Buffer {
  if (typeof x !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(x) || x.length % 4 !== 0) throw new ProcessStateError(`${w} must be a base64 string`);
  if ((x.length / 4) * 3 > maxBytes + 2) throw new ProcessStateError(`${w} is larger than ${maxBytes} bytes`);
  const b = Buffer.from(x, 'base64');
  if (b.length > maxBytes || b.length < minBytes)
    throw new ProcessStateError(`${w} has ${b.length} bytes, expected ${minBytes === maxBytes ? maxBytes : `${minBytes}..${maxBytes}`}`);
  return b;
}

function oneOf<T extends string>(x: unknown, w: string, values: readonly T[]): T {
  if (typeof x !== 'string' || !(values as readonly string[]).includes(x))
    throw new ProcessStateError(`${w} must be one of ${values.join(', ')}, got ${short(x)}`);
  return x as T;
}

function short(x: unknown): string {
  const s = typeof x === 'string' ? JSON.stringify(x) : typeof x === 'bigint' ? `${x}n` : String(JSON.stringify(x));
  return s === undefined ? String(x) : s.length > 40 ? `${s.slice(0, 40)}...` : s;
}
