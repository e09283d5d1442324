// (Over 400 lines on purpose: the restore's steps in the order they must run, each a short
// function below; the injected-call helpers and the fd table live in their own files.)
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
import { NativeError, type RestoreStub, startRestoreStub } from '../../native';
import type { MemorySource, VmaImage } from '../../image/memory-source';
import { type Credentials, type ProcessState, RLIMIT_NAMES, type ThreadImage } from '../../image/process-state';
import { errnoName, hex, Remote, RestoreError, SCRATCH_SIZE, u64s } from './remote';
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

/** Bytes the fill step reads from the image and writes into the process at a time (bench/sections/restore.ts reads so too). */
export const FILL_CHUNK = 8 << 20;
const SPECIALS = ['[vvar]', '[vvar_vclock]', '[vdso]'];

export async function restoreProcess(state: ProcessState, memory: MemorySource, opts: RestoreOptions = {}): Promise<RestoredProcess> {
  let pid = state.pid;
  const fail = (msg: string): never => {
    throw new RestoreError(`cannot restore process ${pid}: ${msg}`);
  };
  const steps: RestoredProcess['steps'] = [];
  const warnings: string[] = [];
  let t0 = performance.now();
  let current = 'checks';
  const failAt = restoreFailStep();
  const step = (name: string): void => {
    // Test-only: fail as a step starts, after everything before it was done.
    if (name === failAt) fail(`${name}: injected failure (${faultVariable('RESTORE_FAIL_AT')})`);
    const now = performance.now();
    steps.push({ step: current, ms: now - t0 });
    current = name;
    t0 = now;
    opts.onStep?.(name);
  };

  // 0. Checks that need no process: same kernel, a sound layout, every mapped file as recorded.
  const here = os.release();
  if (state.kernelRelease !== here) fail(`the image was taken on kernel ${state.kernelRelease}, this host runs ${here}`);
  const vmas = checkLayout(memory.vmas, fail);
  const files = checkFiles(vmas, opts.allowChangedFiles ?? false, fail);

  let stub: RestoreStub | undefined;
  try {
    // 1. The stub, with the image's pid.
    step('spawn stub');
    stub = startRestoreStub(opts.anyPid ? 0 : pid);
    // With anyPid the ids are the kernel's: from here on the state speaks of the new ones.
    pid = stub.pid;
    const live: ProcessState = { ...state, pid, threads: state.threads.map((t, i) => ({ ...t, tid: i === 0 ? pid : t.tid })) };
    const r = new Remote(stub);

    // 2. The kernel's [vvar], [vvar_vclock], [vdso] to the image's addresses, together.
    step('move vdso');
    const stubMaps = readMaps(stub.pid);
    moveSpecials(r, vmas, stubMaps, fail);

    // 3. Everything else of the stub goes (its program, its stack); then our scratch page.
    step('unmap stub');
    const specials = vmas.filter((v) => v.kind === 'special');
    const lo = Math.min(...specials.map((v) => v.start));
    const hi = Math.max(...specials.map((v) => v.end));
    r.call(pid, 'munmap', K.SYS.munmap, 0, lo);
    r.call(pid, 'munmap', K.SYS.munmap, hi, K.TASK_SIZE - hi);
    r.mapScratch(findHole(vmas, SCRATCH_SIZE, fail));

    // 4. Every VMA at its address: anonymous, shared anonymous, or from its file.
    step('map');
    const fillProt = new Map<VmaImage, number>();
    const fds = new Map<string, number>();
    for (const v of vmas) {
      if (v.kind === 'special') continue;
      const prot = v.data.length > 0 ? v.prot | K.PROT_READ | K.PROT_WRITE : v.prot;
      fillProt.set(v, prot);
      const len = v.end - v.start;
      if (v.kind === 'file') {
        const f = v.file!;
        const writable = v.shared && (v.prot & K.PROT_WRITE) !== 0;
        const key = `${writable ? 'w' : 'r'}:${f.path}`;
        let fd = fds.get(key);
        if (fd === undefined) {
          fd = r.open(f.path, writable ? K.O_RDWR : K.O_RDONLY);
          fds.set(key, fd);
          // The file the stub opened must be the one checked above (no swap in between).
          const st = fs.statSync(`/proc/${pid}/fd/${fd}`, { bigint: true });
          const want = files.get(f.path)!;
          if (st.ino !== want.ino || st.dev !== want.dev) fail(`mapped file ${f.path} was replaced during the restore`);
        }
        r.call(
          pid,
          `mmap of ${f.path} at ${hex(v.start)}`,
          K.SYS.mmap,
          v.start,
          len,
          prot,
          (v.shared ? K.MAP_SHARED : K.MAP_PRIVATE) | K.MAP_FIXED,
          fd,
          f.offset,
        );
      } else {
        const flags = (v.kind === 'shared-anon' ? K.MAP_SHARED : K.MAP_PRIVATE) | K.MAP_ANONYMOUS | K.MAP_FIXED | (v.growsDown ? K.MAP_GROWSDOWN : 0);
        r.call(pid, `mmap at ${hex(v.start)}`, K.SYS.mmap, v.start, len, prot, flags, -1, 0);
      }
    }
    for (const fd of fds.values()) r.call(pid, 'close', K.SYS.close, fd);

    // 5. Page contents.
    step('fill');
    await fill(stub, memory, vmas);

    // 6. Final protections.
    step('mprotect');
    for (const [v, prot] of fillProt) if (prot !== v.prot) r.call(pid, `mprotect at ${hex(v.start)}`, K.SYS.mprotect, v.start, v.end - v.start, v.prot);

    // 7. mm fields (brk, stack, arg/env, auxv) and /proc/PID/exe.
    step('mm');
    setMm(r, live, warnings);

    // 7b. The file descriptor table (restore-fds.ts).
    step('files');
    restoreFds(r, live.files, { stdio: opts.stdio ?? '/dev/null', allowChangedFiles: opts.allowChangedFiles ?? false }, fail);

    // 8. Signal dispositions (shared by all threads, set once).
    step('sigactions');
    for (let sig = 1; sig <= 64; sig++) {
      if (sig === K.SIGKILL || sig === K.SIGSTOP) continue;
      const a = live.sigactions[sig - 1];
      const at = r.scratch(u64s([a.handler, a.flags, a.restorer, a.mask]));
      r.call(pid, `rt_sigaction(${sig})`, K.SYS.rt_sigaction, sig, at, 0, 8);
    }

    // 9. The other threads, with their ids (the main thread is the stub's own).
    step('threads');
    for (const t of live.threads.slice(1)) t.tid = stub.createThread(opts.anyPid ? 0 : t.tid, r.scratch(Buffer.alloc(256)));

    // 10. Per-thread kernel state that lives outside the registers.
    step('thread state');
    for (const t of live.threads) threadKernelState(r, t);

    // 11. Per-process attributes.
    step('process attributes');
    processAttributes(r, live, fail);

    // 12. Credentials, last: they take away the rights the steps above needed. In every thread
    // (the kernel keeps them per thread; raw syscalls do not broadcast like glibc's setuid).
    step('credentials');
    for (const t of [...live.threads.slice(1), live.threads[0]]) credentials(r, t.tid, live.creds, fail);
    // A change of credentials resets dumpable to fs.suid_dumpable: put the image's back.
    if (live.dumpable === 0 || live.dumpable === 1) r.call(pid, 'prctl(PR_SET_DUMPABLE)', K.SYS.prctl, K.PR_SET_DUMPABLE, live.dumpable);
    else warnings.push(`dumpable ${live.dumpable} cannot be set with prctl; left at the kernel's value`);

    // 13. Our scratch page goes; the registers of every thread; let them all run.
    step('detach');
    r.call(pid, 'munmap of the scratch area', K.SYS.munmap, r.scratchAddr, SCRATCH_SIZE);
    for (const t of live.threads) stub.setThreadState(t.tid, t.regs, t.xstate, t.sigmask);
    stub.detachAll();
    step('done');
    return { pid, tids: stub.tids(), steps, warnings };
  } catch (e) {
    stub?.kill();
    if (e instanceof RestoreError) throw e;
    if (e instanceof NativeError) fail(`${current}: ${e.message}`);
    throw e;
  }
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

interface FileStat {
  dev: bigint;
  ino: bigint;
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

interface MapsLine {
  start: number;
  end: number;
  name: string;
}

function readMaps(pid: number): MapsLine[] {
  return fs
    .readFileSync(`/proc/${pid}/maps`, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const m = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$/.exec(l);
      if (!m) throw new RestoreError(`cannot parse /proc/${pid}/maps line ${JSON.stringify(l)}`);
      return { start: parseInt(m[1], 16), end: parseInt(m[2], 16), name: m[3] };
    });
}

/**
 * glibc keeps pointers into the vDSO it found at startup, so the kernel's [vdso] must be where the
 * image's was, and [vvar]/[vvar_vclock] at the same distances from it (the vDSO code reaches its
 * data by fixed offsets). Moved with mremap, one mapping at a time; when a destination overlaps
 * where one of them is now, all go to a free area first.
 */
function moveSpecials(r: Remote, vmas: VmaImage[], stubMaps: MapsLine[], fail: (m: string) => never): void {
  const pid = r.stub.pid;
  const want = vmas.filter((v) => v.kind === 'special');
  const have = stubMaps.filter((m) => SPECIALS.includes(m.name));
  const sig = (l: Array<{ name: string; start: number; end: number }>): string =>
    l
      .map((x) => `${x.name}:${x.end - x.start}`)
      .sort()
      .join(' ');
  if (sig(want) !== sig(have)) fail(`the image's vDSO mappings (${sig(want)}) differ from this kernel's (${sig(have)})`);
  const cur = new Map(have.map((m) => [m.name, { start: m.start, end: m.end }]));
  const move = (name: string, to: number): void => {
    const c = cur.get(name)!;
    if (c.start === to) return;
    const len = c.end - c.start;
    r.call(pid, `mremap of ${name}`, K.SYS.mremap, c.start, len, len, K.MREMAP_MAYMOVE | K.MREMAP_FIXED, to);
    if (name === '[vdso]') r.stub.setGadget(r.stub.gadget() - c.start + to);
    cur.set(name, { start: to, end: to + len });
  };
  const overlaps = want.some((w) => have.some((h) => w.start < h.end && h.start < w.end && !(w.start === h.start && w.name === h.name)));
  if (overlaps) {
    const lo = Math.min(...have.map((h) => h.start));
    const span = Math.max(...have.map((h) => h.end)) - lo;
    const tmp = findHole([...vmas, ...stubMaps.map((m) => ({ start: m.start, end: m.end }))], span, fail);
    for (const h of have) move(h.name, tmp + h.start - lo);
  }
  for (const w of want) move(w.name, w.start);
}

/** A free, page-aligned range of `size` bytes at least 16 MiB away from every given range. */
function findHole(ranges: Array<{ start: number; end: number }>, size: number, fail: (m: string) => never): number {
  const gap = 16 << 20;
  const sorted = [...ranges].sort((a, b) => a.start - b.start);
  for (let at = 0x100000000; at + size < K.TASK_SIZE; at += 0x40000000) {
    if (sorted.every((x) => at + size + gap <= x.start || x.end + gap <= at)) return at;
  }
  return fail('no free address range for the restore scratch area');
}

/**
 * Page contents, FILL_CHUNK at a time, double-buffered: the next piece is read from the image (in
 * the thread pool) while this one is written into the process (process_vm_writev, here), since
 * reading and writing each take about half of a restore's time.
 */
async function fill(stub: RestoreStub, memory: MemorySource, vmas: VmaImage[]): Promise<void> {
  const pieces: Array<[number, number]> = [];
  for (const v of vmas) {
    if (v.kind === 'special') continue;
    for (const [s, e] of v.data) for (let at = s; at < e; at += FILL_CHUNK) pieces.push([at, Math.min(FILL_CHUNK, e - at)]);
  }
  const bufs = [Buffer.allocUnsafe(FILL_CHUNK), Buffer.allocUnsafe(FILL_CHUNK)];
  const readPiece = (i: number): Promise<void> => Promise.resolve(memory.read(pieces[i][0], pieces[i][1], bufs[i % 2].subarray(0, pieces[i][1])));
  let reading = pieces.length > 0 ? readPiece(0) : null;
  for (let i = 0; i < pieces.length; i++) {
    await reading;
    reading = i + 1 < pieces.length ? readPiece(i + 1) : null;
    // If the write fails, the read in flight must still settle before its buffer goes.
    try {
      stub.writeMemory(pieces[i][0], bufs[i % 2].subarray(0, pieces[i][1]));
    } catch (e) {
      await reading?.catch(() => undefined);
      throw e;
    }
  }
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
