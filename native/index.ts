// (Over 400 lines on purpose: one typed function per native call, with its argument checks.)
// Typed wrapper over the precopy native addon (build/Release/precopy.node).
//
// The C++ side is thin: one file per kernel feature (see the list in binding.gyp) throwing plain
// C++ errors with errno (sys_error.h), and binding.cc doing all Node-API conversion. This file checks arguments, gives every call a TypeScript type, and turns
// native failures into NativeError (errno, code, syscall), like Node's own system errors.
//
// Threading rule: every ptrace operation (freeze, thaw) runs synchronously on the JS main thread,
// because ptrace ties a tracee to the *thread* that attached it. Arming does its ptrace work in a
// short-lived helper process (build/Release/precopy-arm-helper, signals blocked) so that killing
// the sender can never leave a target thread running on borrowed registers; arm() waits for it.
// PAGEMAP_SCAN, process_vm_readv and hashing need no tracer relationship and may run off the
// main thread. A restorable freeze (freezeForRestore) is held by another helper process
// (precopy-capture-helper) for the same reason. A restore (startRestoreStub) traces the stub it
// starts from the JS main thread, with PTRACE_O_EXITKILL: if we die, the half-made process dies.
//
// Memory rule: JS allocates buffers, native fills them.

import * as path from 'node:path';
import { faultVariable, missingFeatures } from '../common/fault-injection';

/** One error class for every native failure. */
export class NativeError extends Error {
  readonly errno: number;
  readonly code: string;
  readonly syscall: string;
  constructor(message: string, errno: number, code: string, syscall: string) {
    super(message);
    this.name = 'NativeError';
    this.errno = errno;
    this.code = code;
    this.syscall = syscall;
  }
}

// ---- page-region categories (include/uapi/linux/fs.h) ----
export const PAGE_IS_WPALLOWED = 1 << 0;
export const PAGE_IS_WRITTEN = 1 << 1;
export const PAGE_IS_FILE = 1 << 2;
export const PAGE_IS_PRESENT = 1 << 3;
export const PAGE_IS_SWAPPED = 1 << 4;
export const PAGE_IS_PFNZERO = 1 << 5;
export const PAGE_IS_HUGE = 1 << 6;
export const PAGE_IS_SOFT_DIRTY = 1 << 7;
export const PAGE_IS_GUARD = 1 << 8;
export const PM_SCAN_WP_MATCHING = 1 << 0;
export const PM_SCAN_CHECK_WPASYNC = 1 << 1;

export interface KernelFeatures {
  kernelRelease: string;
  pageSize: number;
  /** PAGEMAP_SCAN ioctl exists on /proc/PID/pagemap. */
  pagemapScan: boolean;
  /** userfaultfd syscall usable by this process (root / CAP_SYS_PTRACE). */
  userfaultfd: boolean;
  uffdWpAsync: boolean;
  uffdWpUnpopulated: boolean;
  /** Category bits PAGEMAP_SCAN accepts (bits 0.. found by probing). */
  acceptedCategories: number;
  /** Human-readable list of what is missing; empty when precopy can run. */
  missing: string[];
}

/**
 * Features that PRECOPY_FAULT_MISSING_FEATURES (a comma-separated list of these names) can force to read as
 * absent, so that tests exercise the refusal path on a kernel that has everything.
 */
export const FAKEABLE_FEATURES = ['pagemap_scan', 'userfaultfd', 'wp_async', 'wp_unpopulated'] as const;
type FakeableFeature = (typeof FAKEABLE_FEATURES)[number];

let probed: KernelFeatures | undefined;

/**
 * Probe the running kernel. Cheap (a few syscalls on this process; the kernel part is probed once
 * per process). PRECOPY_FAULT_MISSING_FEATURES is applied on every call.
 */
export function probeKernel(): KernelFeatures {
  probed ??= addon().probeKernel() as KernelFeatures;
  const f: KernelFeatures = { ...probed, missing: [...probed.missing] };
  for (const name of fakeMissing()) {
    const why = `${FAKE_TEXT[name]} (forced missing by PRECOPY_FAULT_MISSING_FEATURES)`;
    if (name === 'pagemap_scan') f.pagemapScan = false;
    if (name === 'userfaultfd') f.userfaultfd = false;
    if (name === 'wp_async') f.uffdWpAsync = false;
    if (name === 'wp_unpopulated') f.uffdWpUnpopulated = false;
    f.missing.push(why);
  }
  return f;
}

const FAKE_TEXT: Record<FakeableFeature, string> = {
  pagemap_scan: 'PAGEMAP_SCAN ioctl on /proc/PID/pagemap (Linux >= 6.7)',
  userfaultfd: 'userfaultfd',
  wp_async: 'UFFD_FEATURE_WP_ASYNC (Linux >= 6.7)',
  wp_unpopulated: 'UFFD_FEATURE_WP_UNPOPULATED (Linux >= 6.4)',
};

function fakeMissing(): FakeableFeature[] {
  const names = missingFeatures();
  for (const n of names) {
    if (!(FAKEABLE_FEATURES as readonly string[]).includes(n))
      throw new TypeError(`${faultVariable('MISSING_FEATURES')}: unknown feature ${JSON.stringify(n)} (one of ${FAKEABLE_FEATURES.join(', ')})`);
  }
  return names as FakeableFeature[];
}

/**
 * The probe result if precopy can track writes on this kernel; otherwise throws NativeError
 * (code ENOTSUP) naming what is missing.
 */
export function requireKernelFeatures(): KernelFeatures {
  const f = probeKernel();
  if (f.missing.length > 0) {
    throw new NativeError(`this kernel (${f.kernelRelease}) cannot track a process's writes: missing ${f.missing.join(', ')}`, 95, 'ENOTSUP', 'probe');
  }
  return f;
}

/** Arguments of one PAGEMAP_SCAN call. Addresses are plain numbers (user space < 2^53). */
export interface ScanArgs {
  start: number;
  end: number;
  flags?: number;
  categoryInverted?: number;
  categoryMask?: number;
  categoryAnyofMask?: number;
  returnMask?: number;
  /** 0 = no limit. */
  maxPages?: number;
}

/** Result of one PAGEMAP_SCAN call; regions are in `vec` as (start, end, categories) triples. */
export interface ScanResult {
  /** Number of regions written to vec (vec[3*i], vec[3*i+1], vec[3*i+2]). */
  count: number;
  /** Where the walk stopped; equals args.end when the whole range was walked. */
  walkEnd: number;
}

// The Float64Arrays of Tracker.walk, by position. native/pagemap_walk.h spells the same positions
// (WalkRangeField, WalkCursorField, WalkMetaField) for binding.cc and pagemap_walk.cc: a change
// here must be made there too (and the other way round). const enums: inlined, no lookup a region.

/** The numbers of one range of a walk plan (`ranges` holds Length of them per range). End is
 *  exclusive (End === Start: nothing to walk, a plan keeps a place for a range it does not scan);
 *  Flags..ReturnMask are the ScanArgs masks; Limited: 1 when max_pages counts against the budget. */
export const enum WalkRangeField {
  Start = 0,
  End = 1,
  Flags = 2,
  CategoryInverted = 3,
  CategoryMask = 4,
  CategoryAnyofMask = 5,
  ReturnMask = 6,
  Limited = 7,
  Length = 8,
}

/** The numbers of the `cursor` of Tracker.walk. The caller sets Range, Position (and Ioctls, which
 *  accumulates); a call writes them all back, also when it throws. */
export const enum WalkCursorField {
  /** Index of the range being walked; the range count when the plan is done. */
  Range = 0,
  /** Next address in that range (0, or below its start: from its start). */
  Position = 1,
  /** Regions written by the last call (when it threw: those before the failure). */
  Regions = 2,
  /** PAGEMAP_SCAN ioctls issued (accumulates across calls). */
  Ioctls = 3,
  /** Pages of the last call's regions from limited ranges (at most its budget). */
  LimitedPages = 4,
  /** The last call's regions from unlimited ranges. */
  UnlimitedRegions = 5,
  Length = 6,
}

/** Region i in the `meta` of Tracker.walk: meta[WalkMetaField.Length * i + field], its PAGE_IS_*
 *  categories and the index of the range that reported it (its run: runs[2i] start, runs[2i+1] pages). */
export const enum WalkMetaField {
  Categories = 0,
  Range = 1,
  Length = 2,
}

/** Numbers per range in the `ranges` of Tracker.walk (WalkRangeField.Length, as a value). */
export const WALK_RANGE_FIELDS = WalkRangeField.Length;
/** Length of the `cursor` of Tracker.walk (WalkCursorField.Length, as a value). */
export const WALK_CURSOR_FIELDS = WalkCursorField.Length;

/** Write range i of a walk plan (ranges: Float64Array of WalkRangeField.Length numbers per range). */
export function setWalkRange(ranges: Float64Array, i: number, args: ScanArgs, limited: boolean): void {
  const o = i * WalkRangeField.Length;
  ranges[o + WalkRangeField.Start] = args.start;
  ranges[o + WalkRangeField.End] = args.end;
  ranges[o + WalkRangeField.Flags] = args.flags ?? 0;
  ranges[o + WalkRangeField.CategoryInverted] = args.categoryInverted ?? 0;
  ranges[o + WalkRangeField.CategoryMask] = args.categoryMask ?? 0;
  ranges[o + WalkRangeField.CategoryAnyofMask] = args.categoryAnyofMask ?? 0;
  ranges[o + WalkRangeField.ReturnMask] = args.returnMask ?? 0;
  ranges[o + WalkRangeField.Limited] = limited ? 1 : 0;
}

/**
 * An armed tracking session on one target process: a userfaultfd created inside the target
 * (by ptrace syscall injection), pulled into this process with pidfd_getfd, the target's copy
 * closed, UFFDIO_API done with WP_ASYNC|WP_UNPOPULATED; plus an open /proc/PID/pagemap.
 * Closing it (or this process dying) drops every registration: the target runs on untracked.
 */
export interface Tracker {
  readonly pid: number;
  /** UFFDIO_REGISTER (MODE_WP) of [start, end). Throws NativeError (e.g. EINVAL if unmapped). */
  register(start: number, end: number): void;
  /** UFFDIO_UNREGISTER of [start, end); ignores ranges no longer mapped. */
  unregister(start: number, end: number): void;
  /** Synchronous PAGEMAP_SCAN into vec (BigUint64Array, length a multiple of 3). At most 512
   *  regions come back per call whatever vec holds (see native/pagemap_scan.cc: walk_end). */
  scan(args: ScanArgs, vec: BigUint64Array): ScanResult;
  /** Same, on a dedicated native thread (for big walks). */
  scanAsync(args: ScanArgs, vec: BigUint64Array): Promise<ScanResult>;
  /**
   * A round of scans in one call: the ranges (WalkRangeField.Length numbers each, setWalkRange)
   * from the cursor on, each resumed from walk_end. Region i goes to runs[2i] (start), runs[2i+1]
   * (pages), the layout of a RunBatch's runs, and meta (WalkMetaField: categories, range index); a
   * region continuing the previous one of the same range and categories extends it. Stops when
   * every range is done (cursor[WalkCursorField.Range] === ranges count), runs or meta is full, or
   * the limited ranges reported `budget` pages (each of their calls gets max_pages = what is left).
   * Returns the regions written; the cursor says where to resume. On a failure (NativeError) the
   * cursor points at the failing range and cursor[WalkCursorField.Regions] counts the regions
   * written before it: they were reported (and, with WP matching, protected again), so read them
   * before handling the error.
   */
  walk(ranges: Float64Array, cursor: Float64Array, runs: Float64Array, meta: Float64Array, budget: number): number;
  /** Same, on a dedicated native thread (walks of big sparse mappings take tens of ms). */
  walkAsync(ranges: Float64Array, cursor: Float64Array, runs: Float64Array, meta: Float64Array, budget: number): Promise<number>;
  close(): void;
}

/**
 * Stop every thread of pid, create a userfaultfd inside it, take it, close the target's copy,
 * restore every thread exactly (syscalls it was blocked in restart as they would have), resume it.
 * Refuses (NativeError ENOTSUP) when probeKernel() reports anything missing. A target without
 * CAP_SYS_PTRACE of its own gets a UFFD_USER_MODE_ONLY uffd (WP-async tracking is the same).
 * Takes a few milliseconds (a helper process is started; see the threading rule above).
 */
export function arm(pid: number): Tracker {
  checkPid(pid);
  requireKernelFeatures();
  return new ArmedTracker(addon().arm(pid) as NativeTracker);
}

/** The addon's Tracker object: same methods, no argument checks. */
type NativeTracker = Tracker;

class ArmedTracker implements Tracker {
  constructor(private readonly native: NativeTracker) {}
  get pid(): number {
    return this.native.pid;
  }
  register(start: number, end: number): void {
    checkRange('register', start, end);
    this.native.register(start, end);
  }
  unregister(start: number, end: number): void {
    checkRange('unregister', start, end);
    this.native.unregister(start, end);
  }
  scan(args: ScanArgs, vec: BigUint64Array): ScanResult {
    checkScan(args, vec);
    return this.native.scan(args, vec);
  }
  scanAsync(args: ScanArgs, vec: BigUint64Array): Promise<ScanResult> {
    try {
      checkScan(args, vec);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.native.scanAsync(args, vec);
  }
  walk(ranges: Float64Array, cursor: Float64Array, runs: Float64Array, meta: Float64Array, budget: number): number {
    checkWalk(ranges, cursor, runs, meta, budget);
    return this.native.walk(ranges, cursor, runs, meta, budget);
  }
  walkAsync(ranges: Float64Array, cursor: Float64Array, runs: Float64Array, meta: Float64Array, budget: number): Promise<number> {
    try {
      checkWalk(ranges, cursor, runs, meta, budget);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.native.walkAsync(ranges, cursor, runs, meta, budget);
  }
  close(): void {
    this.native.close();
  }
}

/** Outcome of readPages: which ranges failed (unmapped meanwhile) and bytes read. */
export interface ReadResult {
  bytesRead: number;
  /** Indexes (into the ranges list) of ranges that could not be read in full. */
  failed: number[];
}

/**
 * Batched process_vm_readv: ranges is a Float64Array or number[] of (address, length) pairs;
 * the bytes land back to back in `into` (its length must cover the sum of lengths). Up to IOV_MAX
 * iovecs a call, looping as needed. A range that cannot be read (EFAULT, unmapped) is reported
 * in `failed` and its part of `into` is zero-filled; the batch goes on.
 */
export function readPages(pid: number, ranges: Float64Array, into: Buffer): ReadResult {
  checkRead(pid, ranges, into);
  return addon().readPages(pid, ranges, into) as ReadResult;
}

/** Same, on a libuv pool thread (short, bounded work). */
export function readPagesAsync(pid: number, ranges: Float64Array, into: Buffer): Promise<ReadResult> {
  try {
    checkRead(pid, ranges, into);
  } catch (e) {
    return Promise.reject(e);
  }
  return addon().readPagesAsync(pid, ranges, into) as Promise<ReadResult>;
}

/** What stagePages found, page by page in `flags` (one per page read). */
export const enum StageFlag {
  Data = 0,
  Zero = 1,
  /** Unmapped meanwhile: neither process_vm_readv nor /proc/PID/mem could read it. */
  Unreadable = 2,
}

export interface StageOutcome {
  /** Pages in the ranges. */
  pages: number;
  /** Bytes of the data (non-zero, readable) pages, gathered at the front of buf in order. */
  dataBytes: number;
  /** > 0: the data pages were compressed into lz4Out[0, lz4Bytes) as one lz4 block. */
  lz4Bytes: number;
  zeroPages: number;
  unreadablePages: number;
  /** Pages read through /proc/PID/mem (process_vm_readv refused their range: PROT_NONE data). */
  procMemPages: number;
  /** lz4 was not tried: a sample of the batch did not compress. */
  lz4Skipped: boolean;
}

export interface StageArgs {
  pid: number;
  /** /proc/PID/mem opened read-only, for ranges process_vm_readv refuses (-1: none). */
  memFd: number;
  /** (address, length) pairs, page aligned. */
  ranges: Float64Array;
  buf: Buffer;
  /** Where the lz4 block goes; null: no compression. */
  lz4Out: Buffer | null;
  pageSize: number;
  /** Out: each page's hash (a zero page has the zero page's). */
  hashes: BigUint64Array;
  /** Out: each page's StageFlag. */
  flags: Uint8Array;
  /** lz4 is tried only when a sample of the batch compresses below this ratio (0.9 when not given). */
  lz4SampleRatio?: number;
}

/**
 * One page batch staged on a libuv pool thread: read the ranges into buf (process_vm_readv, with
 * /proc/PID/mem for refused ranges), hash every page, flag zero and unreadable pages, move the
 * data pages together at the front of buf, and compress them into lz4Out when a sample of them
 * shrinks. None of the buffers may be touched until the promise settles.
 */
export function stagePages(a: StageArgs): Promise<StageOutcome> {
  try {
    checkRead(a.pid, a.ranges, a.buf);
    const pages = a.buf.length / a.pageSize;
    if (!Number.isInteger(pages) || a.hashes.length < pages || a.flags.length < pages) {
      throw new RangeError('stagePages: buf must be whole pages, with one hash and one flag per page');
    }
  } catch (e) {
    return Promise.reject(e);
  }
  return addon().stagePages(a.pid, a.memFd, a.ranges, a.buf, a.lz4Out, a.pageSize, a.hashes, a.flags, a.lz4SampleRatio ?? 0.9) as Promise<StageOutcome>;
}

/**
 * On a libuv pool thread: write src[srcOffset, +length) at `position` of fd (opened O_DIRECT),
 * copying it through `staging` (page-aligned, staging.length bytes at a time). Rejects with a
 * NativeError (EINVAL: O_DIRECT or the alignment refused; ENOSPC...). src and staging must not be
 * touched until it settles.
 */
export function writeStaged(fd: number, src: Buffer, srcOffset: number, length: number, position: number, staging: Buffer): Promise<number> {
  return addon().writeStaged(fd, src, srcOffset, length, position, staging) as Promise<number>;
}

/**
 * On a libuv pool thread: buffered pwrite of src[off, off+len) at each position, for every
 * (srcOffset, length, position) triple of `runs` (one job for a batch's short runs). Rejects with
 * a NativeError (ENOSPC...). src and runs must not be touched until it settles.
 */
export function writeRuns(fd: number, src: Buffer, runs: Float64Array): Promise<number> {
  return addon().writeRuns(fd, src, runs) as Promise<number>;
}

/** glibc malloc keeps freed large buffers for reuse instead of giving them back to the kernel
 *  (native/malloc_tuning.cc says why). False if glibc refused. */
export function keepFreedMemory(): boolean {
  return addon().keepFreedMemory() as boolean;
}

/**
 * 64-bit content hash of each page in buf (pageSize bytes each, buf.length / pageSize pages) into
 * out[i]. Fast (several GB/s), not cryptographic, independent of the page's address, stable across
 * machines and runs. Used for the sender's table of what it sent, the verify pass and the digest.
 */
export function hashPages(buf: Buffer, pageSize: number, out: BigUint64Array): void {
  if (!Buffer.isBuffer(buf)) throw new TypeError('hashPages: buf must be a Buffer');
  if (!Number.isInteger(pageSize) || pageSize <= 0 || pageSize % 32 !== 0)
    throw new TypeError(`hashPages: pageSize must be a positive multiple of 32, got ${pageSize}`);
  if (buf.length % pageSize !== 0) throw new RangeError(`hashPages: buffer length ${buf.length} is not a multiple of ${pageSize}`);
  if (!(out instanceof BigUint64Array) || out.length < buf.length / pageSize)
    throw new RangeError(`hashPages: out must be a BigUint64Array of at least ${buf.length / pageSize} entries`);
  addon().hashPages(buf, pageSize, out);
}

/**
 * Image digest contribution of `count` pages: sum over i of mix64(addrs[i], hashes[i]) mod 2^64.
 * The image digest is the sum (mod 2^64) of this over every page an image holds, so it can be
 * computed chunk by chunk in any order (see common/image-digest.ts).
 */
export function digestPages(addrs: Float64Array, hashes: BigUint64Array, count: number): bigint {
  if (!(addrs instanceof Float64Array) || !(hashes instanceof BigUint64Array))
    throw new TypeError('digestPages: addrs must be a Float64Array and hashes a BigUint64Array');
  if (!Number.isInteger(count) || count < 0 || count > addrs.length || count > hashes.length)
    throw new RangeError(`digestPages: count ${count} exceeds the arrays (${addrs.length}, ${hashes.length})`);
  return addon().digestPages(addrs, hashes, count) as bigint;
}

/** A thread's registers as freeze() captures them: also the shape the wire carries and the image
 *  stores (proto/messages.ts exports this type as the wire's ThreadState). */
export interface ThreadState {
  tid: number;
  /** struct user_regs_struct bytes (x86_64: 27 * 8). */
  regs: Buffer;
  /** struct user_fpregs_struct bytes (FXSAVE area, 512). */
  fpregs: Buffer;
  /** The XSAVE area (NT_X86_XSTATE, AVX and later); absent when not captured. */
  xstate?: Buffer;
}

/** A frozen process: every thread ptrace-seized and interrupted (new threads included). */
export interface Frozen {
  readonly pid: number;
  /** Threads and their registers, captured at freeze time. */
  threads(): ThreadState[];
  /** Detach from every thread: they run on. */
  thaw(): void;
  /** Queue SIGSTOP to the process then detach: it stays stopped (for --after stop). */
  thawStopped(): void;
}

/** Freeze every thread of pid. If this process dies, the kernel detaches and the target runs on. */
export function freeze(pid: number, captureRegisters = true): Frozen {
  checkPid(pid);
  return addon().freeze(pid, captureRegisters) as Frozen;
}

// ---- restorable freeze and capture (native/capture_helper.*, native/thread_state.*) ----

/** What the kernel would have done with a syscall interrupted by the freeze (image/process-state.ts). */
export const SYSCALL_RESTART = ['none', 'restart', 'reissue-restart-block'] as const;

export interface CapturedThread {
  tid: number;
  /** user_regs_struct as frozen. */
  regs: Buffer;
  /** Same with the syscall-restart decision applied and orig_rax = -1: what a restore loads. */
  restoreRegs: Buffer;
  fpregs: Buffer;
  /** Index into SYSCALL_RESTART. */
  restart: number;
  /** NT_X86_XSTATE bytes. */
  xstate: Buffer;
  sigmask: bigint;
  /** 0n: no rseq registered. */
  rseqAddr: bigint;
  rseqLen: number;
  rseqSig: number;
  rseqFlags: number;
  robustHead: bigint;
  robustLen: bigint;
  clearChildTid: bigint;
  altSp: bigint;
  altFlags: number;
  altSize: bigint;
}

export interface CapturedSigaction {
  handler: bigint;
  flags: bigint;
  restorer: bigint;
  mask: bigint;
}

export interface CapturedProcess {
  /** Group leader first. */
  threads: CapturedThread[];
  /** Index i: signal i + 1. */
  sigactions: CapturedSigaction[];
  /** brk(0) of the process: /proc has only start_brk. */
  brk: bigint;
  dumpable: number;
  securebits: number;
}

/**
 * A freeze that can also capture what a restore needs. Same shape as Frozen (the sender may use
 * either), plus capture() and kill(). The ptrace work is done by a helper process
 * (build/Release/precopy-capture-helper, every signal blocked) which holds the freeze: if this
 * process dies, the helper sees its socket close, finishes what it is doing and thaws the target,
 * so no target thread can be left on borrowed registers.
 */
export interface RestorableFrozen extends Frozen {
  /** Registers, XSAVE, signal mask, rseq, robust list, clear_child_tid, sigaltstack of every
   *  thread; signal dispositions, brk, dumpable, securebits. The process stays frozen. */
  capture(): CapturedProcess;
  /** SIGKILL the target, then let go of it. */
  kill(): void;
  /** Ask the helper for a copy-on-write snapshot of the frozen memory (native/cow_snapshot.h);
   *  returns at once, the helper takes it while this thread goes on. */
  requestSnapshot(): void;
  /** Wait for the snapshot asked for. Throws NativeError (code ENOTSUP, with the reason) when
   *  this target rules a snapshot out; the target is then as it was, still frozen. */
  awaitSnapshot(): CowSnapshot;
  /** Kill the snapshot (it outlives thaw() until then). Never throws. */
  dropSnapshot(): void;
}

/** A process holding the target's private memory as it was at the freeze; it never runs. */
export interface CowSnapshot {
  pid: number;
  /** [start, end) byte pairs of the target's memory the snapshot does not hold as it was (shared
   *  mappings, MADV_DONTFORK / MADV_WIPEONFORK ones): verify those while frozen. */
  notHeld: Float64Array;
}

/** Freeze every thread of pid through the capture helper (a few ms to start it). */
export function freezeForRestore(pid: number): RestorableFrozen {
  checkPid(pid);
  return addon().freezeForRestore(pid) as RestorableFrozen;
}

/** The capture helper started ahead of a freeze (its start-up and, with a gadget found by
 *  findSyscallGadget(), its search stay out of the frozen time): freeze() freezes, and the
 *  object is then a RestorableFrozen. thaw() before freeze() lets the helper go untouched. */
export interface PreparedFreeze extends RestorableFrozen {
  freeze(): void;
}

export function prepareFreezeForRestore(pid: number, gadgetHint = 0): PreparedFreeze {
  checkPid(pid);
  return addon().prepareFreezeForRestore(pid, gadgetHint) as PreparedFreeze;
}

/** Address of a `syscall` instruction in pid's executable memory ([vdso] first): where injected
 *  syscalls run. Throws NativeError. */
export function findSyscallGadget(pid: number): number {
  checkPid(pid);
  return addon().findSyscallGadget(pid) as number;
}

// ---- restore stub (native/restore_stub.*) ----

/**
 * A process being restored: build/Release/precopy-restore-stub started with clone3 set_tid, held
 * with ptrace (PTRACE_O_EXITKILL: it dies with us, or when dropped, unless detachAll() ran).
 * Every call is synchronous and must come from the JS main thread.
 */
export interface RestoreStub {
  readonly pid: number;
  /** Thread ids so far (the main thread first). */
  tids(): number[];
  /** Address of the `syscall` instruction injections run (inside the stub's [vdso]). */
  gadget(): number;
  setGadget(addr: number): void;
  /** Run one syscall in thread tid; the raw result (negative errno on failure). */
  syscall(tid: number, nr: number, args: BigUint64Array): bigint;
  writeMemory(addr: number, data: Buffer): void;
  /** A page batch (runs, zero bits, non-zero pages back to back, as the wire has them) in few calls. */
  writePages(runs: Float64Array, zeroMap: Buffer | null, data: Buffer, pageSize: number): void;
  readMemory(addr: number, into: Buffer): void;
  /** clone3 with set_tid from the main thread; scratch: 256 writable bytes in the stub. */
  createThread(tid: number, scratch: number): number;
  setThreadState(tid: number, regs: Buffer, xstate: Buffer, sigmask: bigint): void;
  detachAll(): void;
  kill(): void;
}

/** pid > 0: start the stub with exactly that pid (NativeError EEXIST when taken); 0: any pid. */
export function startRestoreStub(pid: number): RestoreStub {
  if (!Number.isInteger(pid) || pid < 0) throw new TypeError(`pid must be a non-negative integer, got ${pid}`);
  return addon().startRestoreStub(pid) as RestoreStub;
}

export interface ChildExit {
  exitCode: number | null;
  signal: number | null;
}

/**
 * waitpid for a child this process started outside child_process (a restored process): null while
 * it runs (block = false). Node never reaps these itself.
 */
export function reapChild(pid: number, block = false): ChildExit | null {
  checkPid(pid);
  return addon().reapChild(pid, block) as ChildExit | null;
}

// ---- internals ----

function checkPid(pid: number): void {
  if (!Number.isInteger(pid) || pid <= 0) throw new TypeError(`pid must be a positive integer, got ${pid}`);
}

/** Page-aligned is left to the kernel (EINVAL); here: plain non-negative integers, in order. */
function checkRange(what: string, start: number, end: number): void {
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end <= start) throw new RangeError(`${what}: bad range [${start}, ${end})`);
}

const SCAN_MASKS = ['flags', 'categoryInverted', 'categoryMask', 'categoryAnyofMask', 'returnMask'] as const;

function checkScan(args: ScanArgs, vec: BigUint64Array): void {
  if (typeof args !== 'object' || args === null) throw new TypeError('scan: args must be an object');
  checkRange('scan', args.start, args.end);
  for (const k of SCAN_MASKS) {
    const v = args[k];
    if (v !== undefined && (!Number.isInteger(v) || v < 0 || v > 0xffffffff)) throw new RangeError(`scan: ${k} must be a 32-bit unsigned integer, got ${v}`);
  }
  if (args.maxPages !== undefined && (!Number.isSafeInteger(args.maxPages) || args.maxPages < 0))
    throw new RangeError(`scan: maxPages must be a non-negative integer, got ${args.maxPages}`);
  // An empty vec would make the kernel walk without reporting (and, with WP matching, protect
  // pages whose report is then lost).
  if (!(vec instanceof BigUint64Array) || vec.length < 3 || vec.length % 3 !== 0)
    throw new RangeError('scan: vec must be a BigUint64Array holding whole (start, end, categories) triples');
}

/** Per call, so O(ranges): a round has tens of VMAs, this costs microseconds. */
function checkWalk(ranges: Float64Array, cursor: Float64Array, runs: Float64Array, meta: Float64Array, budget: number): void {
  if (!(ranges instanceof Float64Array) || ranges.length % WalkRangeField.Length !== 0)
    throw new TypeError(`walk: ranges must be a Float64Array of ${WalkRangeField.Length} numbers per range`);
  if (!(cursor instanceof Float64Array) || cursor.length !== WalkCursorField.Length)
    throw new TypeError(`walk: cursor must be a Float64Array of ${WalkCursorField.Length} numbers`);
  // No room would make the kernel walk without reporting (see checkScan).
  if (!(runs instanceof Float64Array) || !(meta instanceof Float64Array) || runs.length < 2 || runs.length % 2 !== 0 || meta.length !== runs.length)
    throw new RangeError('walk: runs and meta must be Float64Arrays of the same even length, at least 2');
  if (!Number.isSafeInteger(budget) || budget < 1) throw new RangeError(`walk: budget must be a positive integer, got ${budget}`);
  const n = ranges.length / WalkRangeField.Length;
  const at = cursor[WalkCursorField.Range];
  const pos = cursor[WalkCursorField.Position];
  if (!Number.isInteger(at) || at < 0 || at > n || !Number.isSafeInteger(pos) || pos < 0)
    throw new RangeError(`walk: bad cursor (${at}, ${pos}) for ${n} ranges`);
  // Plain comparisons (NaN fails them all): this runs every round, mostly not yet optimized.
  for (let o = 0; o < ranges.length; o += WalkRangeField.Length) {
    const start = ranges[o + WalkRangeField.Start];
    const end = ranges[o + WalkRangeField.End];
    // start === end: nothing to walk (a plan may keep a place for a range it does not scan).
    if (!(start >= 0 && end >= start && end <= Number.MAX_SAFE_INTEGER && start % 1 === 0 && end % 1 === 0))
      throw new RangeError(`walk: bad range ${o / WalkRangeField.Length} [${start}, ${end})`);
    for (let k = WalkRangeField.Flags; k <= WalkRangeField.ReturnMask; k++) {
      const v = ranges[o + k];
      if (!(v >= 0 && v <= 0xffffffff && v % 1 === 0))
        throw new RangeError(`walk: range ${o / WalkRangeField.Length}: mask ${k} must be a 32-bit unsigned integer, got ${v}`);
    }
  }
}

function checkRead(pid: number, ranges: Float64Array, into: Buffer): void {
  checkPid(pid);
  if (!(ranges instanceof Float64Array) || ranges.length % 2 !== 0) throw new TypeError('readPages: ranges must be a Float64Array of (address, length) pairs');
  if (!Buffer.isBuffer(into)) throw new TypeError('readPages: into must be a Buffer');
  let total = 0;
  for (let i = 1; i < ranges.length; i += 2) total += ranges[i];
  if (total > into.length) throw new RangeError(`readPages: ranges hold ${total} bytes, into only ${into.length}`);
}

// The addon's exports are typed where they are wrapped, one function at a time, below.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
let cached: any;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
function addon(): any {
  if (!cached) {
    const file = path.join(__dirname, '..', '..', 'build', 'Release', 'precopy.node');
    cached = require(file);
    cached.setErrorClass?.(NativeError);
  }
  return cached;
}

/** What a socket of another process is, as a restore must recreate it (see fd_inspect.h). */
export interface SocketFacts {
  family: number;
  type: number;
  protocol: number;
  listening: boolean;
  connected: boolean;
  reuseAddr: boolean;
  reusePort: boolean;
  /** Listen backlog; -1 when the kernel does not say. */
  backlog: number;
  /** Raw sockaddr of getsockname. */
  localAddress: Buffer;
}

/** Facts of socket `fd` of `pid`, read from a pidfd_getfd copy (the process is not disturbed). */
export function socketFacts(pid: number, fd: number): SocketFacts {
  checkPid(pid);
  return addon().socketFacts(pid, fd);
}

/** The bytes waiting in the pipe behind fd `fd` of `pid`, copied without consuming them. */
export function peekPipe(pid: number, fd: number): Buffer {
  checkPid(pid);
  let into = Buffer.allocUnsafe(64 * 1024);
  for (;;) {
    const waiting: number = addon().peekPipe(pid, fd, into);
    if (waiting <= into.length) return into.subarray(0, waiting);
    into = Buffer.allocUnsafe(waiting);
  }
}

/** One XSAVE state component of this CPU (CPUID leaf 0xD), standard format. */
export interface XsaveComponent {
  index: number;
  offset: number;
  size: number;
}

/** Where this CPU keeps each user state component (2 = AVX, 5-7 = AVX-512, 9 = PKRU) in an
 *  NT_X86_XSTATE area. */
export function xsaveLayout(): XsaveComponent[] {
  return addon().xsaveLayout();
}
