// (Over 400 lines on purpose: the restore's steps in the order they must run, each a short
// function below; the address space (process-builder.ts), the injected-call helpers and the fd
// table live in their own files.)
// Restore a committed image into a running process: same pid and tids, every thread resuming at
// the instruction where it was frozen with all of its registers (XSAVE included), its signal
// state and the credentials of the source. x86_64, same kernel release as the source.
//
// The process is grown from outside: a tiny stub (native RestoreStub) is started with clone3
// set_tid = the image's pid and held with ptrace; every change is a system call injected into it
// (it never runs code of its own again), then each thread gets its registers and all are let go.
// The facts this relies on were checked on this kernel: /work/shared/restore-notes.md.
//
// Any failure kills the stub (it is also seized with PTRACE_O_EXITKILL, so it dies with us) and
// throws one RestoreError whose message is a single line.

import * as fs from 'node:fs';
import * as os from 'node:os';
import { NativeError } from '../../native';
import type { MemorySource, VmaImage } from '../../image/memory-source';
import { type Credentials, type ProcessState, RLIMIT_NAMES, type ThreadImage } from '../../image/process-state';
import { errnoName, hex, Remote, RestoreError, SCRATCH_SIZE, u64s } from './remote';
import { type Fail, type FileStat, ProcessBuilder, SPECIALS } from './process-builder';
import { restoreFds } from './restore-fds';
import { faultVariable, restoreFailStep } from '../../common/fault-injection';
import * as K from './x86-64';

export { RestoreError };

export interface RestoreOptions {
  /** Take the ids the kernel gives when the image's pid or thread ids are taken here. */
  anyPid?: boolean;
  /** Map file-backed VMAs and reopen files even when they differ from the image's. */
  allowChangedFiles?: boolean;
  /** What fds 0-2 become (default /dev/null): the source's terminal is not here. */
  stdio?: string;
  /** Told the name of each step as it starts (logs, timings). */
  onStep?: (step: string) => void;
}

export interface RestoredProcess {
  pid: number;
  tids: number[];
  /** Milliseconds per step, in order. */
  steps: Array<{ step: string; ms: number }>;
  /** Things restored only in part (e.g. /proc/PID/exe left pointing at the stub). */
  warnings: string[];
}

/** Step timing, the test-only injected failure, and the one-line error of a restore. */
class Steps {
  readonly list: RestoredProcess['steps'] = [];
  current = 'checks';
  private t0 = performance.now();
  private readonly failAt = restoreFailStep();
  constructor(
    public pid: number,
    private readonly opts: RestoreOptions,
  ) {}

  readonly fail = (msg: string): never => {
    throw new RestoreError(`cannot restore process ${this.pid}: ${msg}`);
  };

  start(name: string): void {
    // Test-only: fail as a step starts, after everything before it was done.
    if (name === this.failAt) this.fail(`${name}: injected failure (${faultVariable('RESTORE_FAIL_AT')})`);
    const now = performance.now();
    this.list.push({ step: this.current, ms: now - this.t0 });
    this.current = name;
    this.t0 = now;
    this.opts.onStep?.(name);
  }

  /** Any failure as one RestoreError naming the step it happened in. */
  rethrow(e: unknown): never {
    if (e instanceof RestoreError) throw e;
    if (e instanceof NativeError) this.fail(`${this.current}: ${e.message}`);
    throw e;
  }
}

/** Restore a committed image into a new process. */
export async function restoreProcess(state: ProcessState, memory: MemorySource, opts: RestoreOptions = {}): Promise<RestoredProcess> {
  const steps = new Steps(state.pid, opts);
  const { vmas, files } = checkImage(state, memory, opts, steps.fail);
  let b: ProcessBuilder | undefined;
  try {
    // 1. The stub, with the image's pid.
    steps.start('spawn stub');
    b = ProcessBuilder.spawn(opts.anyPid ? 0 : state.pid, steps.fail);
    steps.pid = b.pid;
    // 2. The kernel's [vvar], [vvar_vclock], [vdso] to the image's addresses, together.
    steps.start('move vdso');
    b.placeSpecials(vmas.filter((v) => v.kind === 'special'));
    // 3. Everything else of the stub goes (its program, its stack); then our scratch page.
    steps.start('unmap stub');
    b.clearStub(vmas);
    // 4. Every VMA at its address: anonymous, shared anonymous, or from its file.
    steps.start('map');
    b.applyLayout(vmas, { files, everyWritable: false });
    // 5. Page contents.
    steps.start('fill');
    await b.fill(memory);
    return await completeProcess(b, state, vmas, opts, steps);
  } catch (e) {
    b?.kill();
    return steps.rethrow(e);
  }
}

/**
 * Finish a process a handover built during pre-copy (process-builder.ts): the committed layout
 * applied over what is there, the vDSO to the image's place, the pages it may lack written from
 * the image, then the rest as a restore does. The builder is killed on failure.
 */
export async function finishBuiltProcess(b: ProcessBuilder, state: ProcessState, memory: MemorySource, opts: RestoreOptions = {}): Promise<RestoredProcess> {
  const steps = new Steps(b.pid, opts);
  try {
    const { vmas, files } = checkImage(state, memory, opts, steps.fail);
    if (b.pid !== state.pid && !opts.anyPid) steps.fail(`the process built during pre-copy has pid ${b.pid}, the image says ${state.pid}`);
    steps.start('map');
    b.applyLayout(vmas, { files, everyWritable: true });
    steps.start('move vdso');
    b.placeSpecials(vmas.filter((v) => v.kind === 'special'));
    steps.start('fill');
    await b.fill(memory, b.staleRanges);
    return await completeProcess(b, state, vmas, opts, steps);
  } catch (e) {
    b.kill();
    return steps.rethrow(e);
  }
}

/** 0. Checks that need no process: same kernel, a sound layout, every mapped file as recorded. */
function checkImage(state: ProcessState, memory: MemorySource, opts: RestoreOptions, fail: Fail): { vmas: VmaImage[]; files: Map<string, FileStat> } {
  const here = os.release();
  if (state.kernelRelease !== here) fail(`the image was taken on kernel ${state.kernelRelease}, this host runs ${here}`);
  const vmas = checkLayout(memory.vmas, fail);
  return { vmas, files: checkFiles(vmas, opts.allowChangedFiles ?? false, fail) };
}

/** Steps 6-13, once every page is in: protections, mm, files, signals, threads, credentials, registers. */
async function completeProcess(b: ProcessBuilder, state: ProcessState, vmas: VmaImage[], opts: RestoreOptions, steps: Steps): Promise<RestoredProcess> {
  const pid = b.pid;
  const r = b.r;
  const stub = b.stub;
  const fail = steps.fail;
  const warnings: string[] = [];
  // With anyPid the ids are the kernel's: from here on the state speaks of the new ones.
  const live: ProcessState = { ...state, pid, threads: state.threads.map((t, i) => ({ ...t, tid: i === 0 ? pid : t.tid })) };

  // 6. Final protections.
  steps.start('mprotect');
  b.protect(vmas);

  // 7. mm fields (brk, stack, arg/env, auxv) and /proc/PID/exe.
  steps.start('mm');
  setMm(r, live, warnings);

  // 7b. The file descriptor table (restore-fds.ts).
  steps.start('files');
  restoreFds(r, live.files, { stdio: opts.stdio ?? '/dev/null', allowChangedFiles: opts.allowChangedFiles ?? false }, fail);

  // 8. Signal dispositions (shared by all threads, set once).
  steps.start('sigactions');
  for (let sig = 1; sig <= 64; sig++) {
    if (sig === K.SIGKILL || sig === K.SIGSTOP) continue;
    const a = live.sigactions[sig - 1];
    const at = r.scratch(u64s([a.handler, a.flags, a.restorer, a.mask]));
    r.call(pid, `rt_sigaction(${sig})`, K.SYS.rt_sigaction, sig, at, 0, 8);
  }

  // 9. The other threads, with their ids (the main thread is the stub's own).
  steps.start('threads');
  for (const t of live.threads.slice(1)) t.tid = stub.createThread(opts.anyPid ? 0 : t.tid, r.scratch(Buffer.alloc(256)));

  // 10. Per-thread kernel state that lives outside the registers.
  steps.start('thread state');
  for (const t of live.threads) threadKernelState(r, t);

  // 11. Per-process attributes.
  steps.start('process attributes');
  processAttributes(r, live, fail);

  // 12. Credentials, last: they take away the rights the steps above needed. In every thread
  // (the kernel keeps them per thread; raw syscalls do not broadcast like glibc's setuid).
  steps.start('credentials');
  for (const t of [...live.threads.slice(1), live.threads[0]]) credentials(r, t.tid, live.creds, fail);
  // A change of credentials resets dumpable to fs.suid_dumpable: put the image's back.
  if (live.dumpable === 0 || live.dumpable === 1) r.call(pid, 'prctl(PR_SET_DUMPABLE)', K.SYS.prctl, K.PR_SET_DUMPABLE, live.dumpable);
  else warnings.push(`dumpable ${live.dumpable} cannot be set with prctl; left at the kernel's value`);

  // 13. Our scratch page goes; the registers of every thread; let them all run.
  steps.start('detach');
  r.call(pid, 'munmap of the scratch area', K.SYS.munmap, r.scratchAddr, SCRATCH_SIZE);
  for (const t of live.threads) stub.setThreadState(t.tid, t.regs, t.xstate, t.sigmask);
  stub.detachAll();
  steps.start('done');
  return { pid, tids: stub.tids(), steps: steps.list, warnings };
}

// ---------------------------------------------------------------- steps

function checkLayout(list: readonly VmaImage[], fail: (m: string) => never): VmaImage[] {
  const vmas = [...list].sort((a, b) => a.start - b.start);
  let prevEnd = 0;
  for (const v of vmas) {
    const name = `VMA ${hex(v.start)}-${hex(v.end)}`;
    if (!Number.isSafeInteger(v.start) || !Number.isSafeInteger(v.end) || v.start % K.PAGE || v.end % K.PAGE || v.end <= v.start || v.end > K.TASK_SIZE)
      fail(`${name} is not a page-aligned user-space range`);
    if (v.start < prevEnd) fail(`${name} overlaps the VMA before it`);
    prevEnd = v.end;
    if (v.kind === 'file' && !v.file) fail(`${name} is file-backed but names no file`);
    if (v.kind === 'special' && !SPECIALS.includes(v.name)) fail(`${name}: unknown special mapping ${v.name}`);
    for (const [s, e] of v.data)
      if (s % K.PAGE || e % K.PAGE || s < v.start || e > v.end || e <= s) fail(`${name}: data run ${hex(s)}-${hex(e)} is outside it or not page-aligned`);
  }
  if (!vmas.some((v) => v.name === '[vdso]')) fail('the image has no [vdso] mapping');
  return vmas;
}

/** Every file-backed VMA's file exists and is the one recorded (unless changes are allowed). */
function checkFiles(vmas: VmaImage[], allowChanged: boolean, fail: (m: string) => never): Map<string, FileStat> {
  const out = new Map<string, FileStat>();
  for (const v of vmas) {
    if (v.kind !== 'file') continue;
    const f = v.file!;
    if (out.has(f.path)) continue;
    let st: fs.BigIntStats;
    try {
      st = fs.statSync(f.path, { bigint: true });
    } catch {
      return fail(`mapped file ${f.path} is missing (it backs ${hex(v.start)}-${hex(v.end)})`);
    }
    const diffs: string[] = [];
    if (st.dev !== f.dev || st.ino !== f.inode) diffs.push(`device/inode ${f.dev}/${f.inode} -> ${st.dev}/${st.ino}`);
    if (st.size !== f.size) diffs.push(`size ${f.size} -> ${st.size}`);
    if (st.mtimeNs !== f.mtimeNs) diffs.push(`mtime ${f.mtimeNs} -> ${st.mtimeNs} ns`);
    if (diffs.length > 0 && !allowChanged) fail(`mapped file ${f.path} changed since the capture (${diffs.join(', ')}); allowChangedFiles maps it anyway`);
    out.set(f.path, { dev: st.dev, ino: st.ino });
  }
  return out;
}

/** PR_SET_MM_MAP, with exe_fd so that /proc/PID/exe names the program again when allowed. */
function setMm(r: Remote, state: ProcessState, warnings: string[]): void {
  const pid = state.pid;
  const mm = state.mm;
  const auxvAt = r.scratch(mm.auxv);
  let exeFd = -1;
  try {
    exeFd = r.open(mm.exePath, K.O_RDONLY);
  } catch (e) {
    warnings.push(`executable ${mm.exePath} cannot be opened (${(e as Error).message}); /proc/${pid}/exe keeps naming the stub`);
  }
  const map = (fd: number): Buffer => {
    const b = Buffer.alloc(K.PRCTL_MM_MAP_SIZE);
    [
      mm.startCode,
      mm.endCode,
      mm.startData,
      mm.endData,
      mm.startBrk,
      mm.brk,
      mm.startStack,
      mm.argStart,
      mm.argEnd,
      mm.envStart,
      mm.envEnd,
      BigInt(auxvAt),
    ].forEach((v, i) => b.writeBigUInt64LE(v, i * 8));
    b.writeUInt32LE(mm.auxv.length, 96);
    b.writeUInt32LE(fd >>> 0, 100); // (u32)-1: leave the exe link alone
    return b;
  };
  const res = exeFd >= 0 ? r.raw(pid, K.SYS.prctl, K.PR_SET_MM, K.PR_SET_MM_MAP, r.scratch(map(exeFd)), K.PRCTL_MM_MAP_SIZE, 0) : -1n;
  if (res < 0n) {
    if (exeFd >= 0) warnings.push(`PR_SET_MM_MAP with exe_fd failed (${errnoName(Number(-res))}); /proc/${pid}/exe keeps naming the stub`);
    r.call(pid, 'prctl(PR_SET_MM_MAP)', K.SYS.prctl, K.PR_SET_MM, K.PR_SET_MM_MAP, r.scratch(map(-1)), K.PRCTL_MM_MAP_SIZE, 0);
  }
  if (exeFd >= 0) r.call(pid, 'close', K.SYS.close, exeFd);
}

/** rseq, robust list, clear_child_tid, sigaltstack, name, personality, no_new_privs of one thread. */
function threadKernelState(r: Remote, t: ThreadImage): void {
  const tid = t.tid;
  const what = (s: string): string => `${s} in thread ${tid}`;
  if (t.rseq) r.call(tid, what('rseq registration'), K.SYS.rseq, t.rseq.addr, t.rseq.len, 0, t.rseq.sig);
  if (t.robustList.head !== 0n) r.call(tid, what('set_robust_list'), K.SYS.set_robust_list, t.robustList.head, t.robustList.len);
  r.call(tid, what('set_tid_address'), K.SYS.set_tid_address, t.clearChildTid);
  if ((t.altStack.flags & K.SS_DISABLE) === 0) {
    const ss = Buffer.alloc(24);
    ss.writeBigUInt64LE(t.altStack.sp, 0);
    // SS_ONSTACK is a report (the thread was running on it), not a flag to set.
    ss.writeInt32LE((t.altStack.flags & K.SS_AUTODISARM) | 0, 8);
    ss.writeBigUInt64LE(t.altStack.size, 16);
    r.call(tid, what('sigaltstack'), K.SYS.sigaltstack, r.scratch(ss), 0);
  }
  r.call(tid, what('prctl(PR_SET_NAME)'), K.SYS.prctl, K.PR_SET_NAME, r.cstring(t.comm));
}

function processAttributes(r: Remote, state: ProcessState, fail: (m: string) => never): void {
  const pid = state.pid;
  for (const t of state.threads) {
    // Per task, like no_new_privs: every thread.
    r.call(t.tid, `personality in thread ${t.tid}`, K.SYS.personality, state.personality);
    if (state.noNewPrivs) r.call(t.tid, `prctl(PR_SET_NO_NEW_PRIVS) in thread ${t.tid}`, K.SYS.prctl, K.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  }
  // Set in the clone3 child only to cover the moment before the seize.
  r.call(pid, 'prctl(PR_SET_PDEATHSIG)', K.SYS.prctl, K.PR_SET_PDEATHSIG, 0);
  r.call(pid, 'umask', K.SYS.umask, state.umask);
  r.call(pid, `chdir to ${state.cwd}`, K.SYS.chdir, r.cstring(state.cwd));
  state.rlimits.forEach((l, res) => {
    const v = r.raw(pid, K.SYS.prlimit64, 0, res, r.scratch(u64s([l.cur, l.max])), 0);
    if (v < 0n) {
      const hint = Number(-v) === os.constants.errno.EPERM ? ' (raising a hard limit needs CAP_SYS_RESOURCE)' : '';
      fail(`cannot set RLIMIT_${RLIMIT_NAMES[res].toUpperCase()} to ${l.cur}/${l.max}: ${errnoName(Number(-v))}${hint}`);
    }
  });
  if (state.thpDisabled) r.call(pid, 'prctl(PR_SET_THP_DISABLE)', K.SYS.prctl, K.PR_SET_THP_DISABLE, 1, 0, 0, 0);
}

/**
 * One thread's credentials. Order matters: while still root, keep-caps on (so that setresuid to
 * a non-root uid keeps the permitted set), drop what the bounding set lacks (needs
 * CAP_SETPCAP), groups and gids (CAP_SETGID), then uids (CAP_SETUID; clears the effective
 * set), then capset from the kept permitted set, ambient raises (need permitted+inheritable),
 * and keep-caps back as the image had it.
 */
function credentials(r: Remote, tid: number, c: Credentials, fail: (m: string) => never): void {
  const what = (s: string): string => `${s} in thread ${tid}`;
  const lastCap = Number(fs.readFileSync('/proc/sys/kernel/cap_last_cap', 'utf8').trim());
  const early = (c.securebits | K.SECBIT_KEEP_CAPS) & ~(0xc0 | 0x20); // without the ambient block and keep-caps lock
  r.call(tid, what('prctl(PR_SET_SECUREBITS)'), K.SYS.prctl, K.PR_SET_SECUREBITS, early);
  for (let cap = 0; cap <= lastCap; cap++)
    if (((c.capBnd >> BigInt(cap)) & 1n) === 0n) r.call(tid, what(`prctl(PR_CAPBSET_DROP, ${cap})`), K.SYS.prctl, K.PR_CAPBSET_DROP, cap);
  const groups = Buffer.alloc(4 * c.groups.length);
  c.groups.forEach((g, i) => groups.writeUInt32LE(g, 4 * i));
  r.call(tid, what('setgroups'), K.SYS.setgroups, c.groups.length, c.groups.length ? r.scratch(groups) : 0);
  r.call(tid, what('setresgid'), K.SYS.setresgid, c.gid[0], c.gid[1], c.gid[2]);
  r.raw(tid, K.SYS.setfsgid, c.gid[3]); // answers the old fsgid, never an error
  r.call(tid, what('setresuid'), K.SYS.setresuid, c.uid[0], c.uid[1], c.uid[2]);
  r.raw(tid, K.SYS.setfsuid, c.uid[3]);
  const data = Buffer.alloc(8 + 24);
  data.writeUInt32LE(K._LINUX_CAPABILITY_VERSION_3, 0);
  data.writeInt32LE(0, 4);
  const lo = (v: bigint): number => Number(v & 0xffffffffn);
  const hi = (v: bigint): number => Number(v >> 32n);
  [lo(c.capEff), lo(c.capPrm), lo(c.capInh), hi(c.capEff), hi(c.capPrm), hi(c.capInh)].forEach((v, i) => data.writeUInt32LE(v, 8 + 4 * i));
  const at = r.scratch(data);
  r.call(tid, what('capset'), K.SYS.capset, at, at + 8);
  for (let cap = 0; cap <= lastCap; cap++)
    if ((c.capAmb >> BigInt(cap)) & 1n)
      r.call(tid, what(`ambient raise of capability ${cap}`), K.SYS.prctl, K.PR_CAP_AMBIENT, K.PR_CAP_AMBIENT_RAISE, cap, 0, 0);
  if (c.securebits !== early) {
    const v = r.raw(tid, K.SYS.prctl, K.PR_SET_SECUREBITS, c.securebits);
    if (v < 0n) {
      // Without CAP_SETPCAP only keep-caps itself can be changed.
      if (c.securebits === (early & ~K.SECBIT_KEEP_CAPS)) r.call(tid, what('prctl(PR_SET_KEEPCAPS)'), K.SYS.prctl, K.PR_SET_KEEPCAPS, 0);
      else fail(`securebits 0x${c.securebits.toString(16)} cannot be restored in thread ${tid} without CAP_SETPCAP: ${errnoName(Number(-v))}`);
    }
  }
}
