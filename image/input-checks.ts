// Validation of everything the store is given before it writes anything: session ids, session
// metadata, VMA layouts and page runs. Every check fails with StoreError INVALID (or BAD_ID) and a
// message that names the offending value, so that a hostile or buggy sender gets a precise answer.

import type { Vma } from '../common/vma';
import type { RoundEnd, ThreadState } from './store-types';
import { StoreError, invalid } from './store-error';

const SESSION_ID = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$/;
const PERMS = /^[r-][w-][x-][ps]$/;
/** VMAs in one layout: 4x the kernel's default vm.max_map_count (65530), the value commonly
 *  configured for the most mapping-hungry servers (262144). It also bounds what decoding one
 *  layout message costs: ~180 bytes of heap per (even empty) VMA, so ~48 MiB at most. */
export const MAX_VMAS = 1 << 18;
const MAX_TEXT = 4096;

export function validSessionId(id: unknown): id is string {
  return typeof id === 'string' && SESSION_ID.test(id);
}

export function checkSessionId(id: unknown): string {
  if (!validSessionId(id)) {
    const shown = typeof id === 'string' ? `'${id.length > 80 ? `${id.slice(0, 80)}...` : id}'` : String(id);
    throw new StoreError('BAD_ID', `bad session id ${shown}: use 1-64 of A-Z a-z 0-9 . _ -, not starting with '.'`);
  }
  return id;
}

export function checkPageSize(pageSize: unknown): number {
  if (typeof pageSize !== 'number' || !Number.isInteger(pageSize) || pageSize < 4096 || pageSize > 65536 || (pageSize & (pageSize - 1)) !== 0) {
    throw invalid(`page size must be a power of two from 4096 to 65536, got ${String(pageSize)}`);
  }
  return pageSize;
}

export function checkText(v: unknown, what: string, max = MAX_TEXT): string {
  if (typeof v !== 'string') throw invalid(`${what} must be a string`);
  if (v.length > max) throw invalid(`${what} is longer than ${max} characters`);
  if (v.includes('\0')) throw invalid(`${what} contains a NUL character`);
  return v;
}

export function checkCount(v: unknown, what: string, min = 0): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
    throw invalid(`${what} must be a whole number >= ${min}, got ${String(v)}`);
  }
  return v;
}

const hex = (n: number) => `0x${n.toString(16)}`;

/** A page-aligned address inside the user address space range JS numbers hold exactly. */
function checkAddr(v: unknown, pageSize: number, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw invalid(`${what} is not a valid address: ${String(v)}`);
  if (v % pageSize !== 0) throw invalid(`${what} ${hex(v)} is not aligned to the page size ${pageSize}`);
  return v;
}

/** Sorted, non-overlapping, page-aligned, well-formed VMAs. Returns a plain copy. */
export function checkLayout(layout: unknown, pageSize: number): Vma[] {
  if (!Array.isArray(layout)) throw invalid('layout must be a list of VMAs');
  if (layout.length > MAX_VMAS) throw invalid(`layout has ${layout.length} VMAs, more than ${MAX_VMAS}`);
  const out: Vma[] = [];
  let prevEnd = 0;
  for (let i = 0; i < layout.length; i++) {
    const v = layout[i] as Partial<Vma>;
    if (typeof v !== 'object' || v === null) throw invalid(`layout[${i}] is not a VMA`);
    const start = checkAddr(v.start, pageSize, `layout[${i}].start`);
    const end = checkAddr(v.end, pageSize, `layout[${i}].end`);
    if (end <= start) throw invalid(`layout[${i}] ${hex(start)}-${hex(end)} is empty or reversed`);
    if (start < prevEnd) throw invalid(`layout[${i}] ${hex(start)}-${hex(end)} overlaps or is out of order (previous ends at ${hex(prevEnd)})`);
    const perms = checkText(v.perms, `layout[${i}].perms`);
    if (!PERMS.test(perms)) throw invalid(`layout[${i}].perms '${perms}' is not like 'rw-p'`);
    const offset = checkCount(v.offset ?? 0, `layout[${i}].offset`);
    const path = checkText(v.path ?? '', `layout[${i}].path`);
    const fileBacked = v.fileBacked === true;
    if (fileBacked && path === '') throw invalid(`layout[${i}] is file-backed but has no path`);
    const inode = typeof v.inode === 'number' && Number.isFinite(v.inode) && v.inode >= 0 ? v.inode : 0;
    const dev = checkText(v.dev ?? '', `layout[${i}].dev`, 64);
    out.push({ start, end, perms, offset, path, fileBacked, inode, dev });
    prevEnd = end;
  }
  return out;
}

/**
 * Page runs as (start address, page count) pairs: ascending, non-overlapping, page-aligned and
 * each inside one VMA of the layout (when a layout is given). Returns the total page count.
 */
export function checkRuns(runs: ArrayLike<number>, pageSize: number, layout: Vma[] | null): number {
  if (runs.length % 2 !== 0) throw invalid(`runs must be (start, count) pairs, got ${runs.length} numbers`);
  let total = 0;
  let prevEnd = 0;
  let vi = 0;
  for (let i = 0; i < runs.length; i += 2) {
    const start = checkAddr(runs[i], pageSize, `run ${i / 2} start`);
    const count = runs[i + 1];
    if (typeof count !== 'number' || !Number.isSafeInteger(count) || count < 1) {
      throw invalid(`run ${i / 2} at ${hex(start)} has a bad page count ${String(count)}`);
    }
    const end = start + count * pageSize;
    if (!Number.isSafeInteger(end)) throw invalid(`run ${i / 2} at ${hex(start)} of ${count} pages ends beyond the address space`);
    if (start < prevEnd) throw invalid(`run ${i / 2} at ${hex(start)} overlaps or is out of order (previous run ends at ${hex(prevEnd)})`);
    if (layout) {
      // Runs ascend, so the VMA cursor only moves forward.
      while (vi < layout.length && layout[vi].end <= start) vi++;
      const v = layout[vi];
      if (!v || start < v.start || end > v.end) {
        throw invalid(`run ${i / 2} ${hex(start)}-${hex(end)} is not inside one VMA of the round's layout`);
      }
    }
    prevEnd = end;
    total += count;
  }
  return total;
}

const MAX_THREADS = 1 << 16;
const MAX_REGS_BYTES = 1 << 16;

const FIGURE_KEYS: Exclude<keyof RoundEnd, 'laneBatches'>[] = [
  'round',
  'dirtyPages',
  'zeroPages',
  'rawBytes',
  'wireBytes',
  'durationSeconds',
  'dirtyRateBytesPerSecond',
  'transferRateBytesPerSecond',
  'expectedDowntimeSeconds',
  'remainingBytes',
  'throttlePercent',
  'batches',
];

/** Every round figure present and a finite number (they end up in JSON and metrics). */
export function checkFigures(f: RoundEnd): RoundEnd {
  if (typeof f !== 'object' || f === null) throw invalid('round figures missing');
  const out = {} as RoundEnd;
  for (const k of FIGURE_KEYS) {
    const v = f[k];
    if (typeof v !== 'number' || !Number.isFinite(v)) throw invalid(`round figure ${k} must be a finite number, got ${String(v)}`);
    out[k] = v;
  }
  return out;
}

/** Thread ids and register blobs of a commit, bounded; copied so callers may reuse their buffers. */
export function checkThreads(threads: ThreadState[]): ThreadState[] {
  if (!Array.isArray(threads)) throw invalid('threads must be a list');
  if (threads.length > MAX_THREADS) throw invalid(`too many threads (${threads.length})`);
  return threads.map((t, i) => {
    const tid = checkCount(t?.tid, `threads[${i}].tid`, 1);
    for (const k of ['regs', 'fpregs'] as const) {
      if (!Buffer.isBuffer(t[k]) || t[k].length > MAX_REGS_BYTES) throw invalid(`threads[${i}].${k} must be a Buffer of at most ${MAX_REGS_BYTES} bytes`);
    }
    const xs = t.xstate;
    if (xs !== undefined && (!Buffer.isBuffer(xs) || xs.length > MAX_REGS_BYTES))
      throw invalid(`threads[${i}].xstate must be a Buffer of at most ${MAX_REGS_BYTES} bytes`);
    return { tid, regs: Buffer.from(t.regs), fpregs: Buffer.from(t.fpregs), ...(xs && xs.length > 0 ? { xstate: Buffer.from(xs) } : {}) };
  });
}
