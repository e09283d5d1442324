// Typed wrapper over the precopy native addon (build/Release/precopy.node).
//
// The C++ side is thin: one file per kernel feature (probe, ptrace_threads, inject, freeze, uffd,
// pagemap_scan, page_reader, page_hash) throwing plain C++ errors with errno, and binding.cc doing
// all Node-API conversion. This file checks arguments, gives every call a TypeScript type, and turns
// native failures into NativeError (errno, code, syscall), like Node's own system errors.
//
// Threading rule: every ptrace operation (arm, freeze, thaw) runs synchronously on the JS main
// thread, because ptrace ties a tracee to the *thread* that attached it. PAGEMAP_SCAN,
// process_vm_readv and hashing need no tracer relationship and may run off the main thread.
//
// Memory rule: JS allocates buffers, native fills them.

/* eslint-disable @typescript-eslint/no-var-requires */
import * as path from 'node:path';

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

/** Probe the running kernel. Cheap (a few syscalls on this process); call once at start-up. */
export function probeKernel(): KernelFeatures {
  return addon().probeKernel() as KernelFeatures;
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
  /** Synchronous PAGEMAP_SCAN into vec (BigUint64Array, length a multiple of 3). */
  scan(args: ScanArgs, vec: BigUint64Array): ScanResult;
  /** Same, on a dedicated native thread (for big walks). */
  scanAsync(args: ScanArgs, vec: BigUint64Array): Promise<ScanResult>;
  close(): void;
}

/**
 * Stop every thread of pid, create a userfaultfd inside it, take it, close the target's copy,
 * restore every thread exactly (syscalls it was blocked in restart as they would have), resume it.
 */
export function arm(pid: number): Tracker {
  checkPid(pid);
  return addon().arm(pid) as Tracker;
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
  checkPid(pid);
  return addon().readPages(pid, ranges, into) as ReadResult;
}

/** Same, on a libuv pool thread (short, bounded work). */
export function readPagesAsync(pid: number, ranges: Float64Array, into: Buffer): Promise<ReadResult> {
  checkPid(pid);
  return addon().readPagesAsync(pid, ranges, into) as Promise<ReadResult>;
}

/**
 * 64-bit content hash of each page in buf (pageSize bytes each, buf.length / pageSize pages) into
 * out[i]. Fast (several GB/s), not cryptographic, independent of the page's address, stable across
 * machines and runs. Used for the sender's table of what it sent, the verify pass and the digest.
 */
export function hashPages(buf: Buffer, pageSize: number, out: BigUint64Array): void {
  addon().hashPages(buf, pageSize, out);
}

/**
 * Image digest contribution of `count` pages: sum over i of mix64(addrs[i], hashes[i]) mod 2^64.
 * The image digest is the sum (mod 2^64) of this over every page an image holds, so it can be
 * computed chunk by chunk in any order (see common/image-digest.ts).
 */
export function digestPages(addrs: Float64Array, hashes: BigUint64Array, count: number): bigint {
  return addon().digestPages(addrs, hashes, count) as bigint;
}

export interface ThreadState {
  tid: number;
  /** struct user_regs_struct bytes (x86_64: 27 * 8). */
  regs: Buffer;
  /** struct user_fpregs_struct bytes (FXSAVE area, 512). */
  fpregs: Buffer;
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

// ---- internals ----

function checkPid(pid: number): void {
  if (!Number.isInteger(pid) || pid <= 0) throw new TypeError(`pid must be a positive integer, got ${pid}`);
}

let cached: any;
function addon(): any {
  if (!cached) {
    const file = path.join(__dirname, '..', '..', 'build', 'Release', 'precopy.node');
    cached = require(file);
    cached.setErrorClass?.(NativeError);
  }
  return cached;
}
