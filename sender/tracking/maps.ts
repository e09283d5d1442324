// /proc/PID/maps: parsing, and what of it is memory to copy.
//
// Every round starts by re-reading the maps (a VMA the tracker has not registered is silently
// skipped by PM_SCAN_WP_MATCHING, so the sender must see every new VMA before it scans). This file
// turns the text into Vma records and classifies each one:
//
//   anon          private anonymous: [heap], [stack], "", [anon:NAME]          -> copied
//   shared-anon   shmem with no file to rebuild it from: MAP_SHARED|MAP_ANONYMOUS ("/dev/zero
//                 (deleted)", [anon_shmem:NAME]), SYSV shm, memfd or deleted file mapped shared -> copied
//   file-private  MAP_PRIVATE of a file that exists: pages the process never wrote are page cache
//                 (PAGEMAP_SCAN says PAGE_IS_FILE) and stay in the file (the layout names path and
//                 offset, file_backed = true); the copies it wrote (RELRO, .data, ...) are copied
//   orphan-private MAP_PRIVATE of a file the receiver cannot open (deleted, memfd): every page is
//                 copied, untouched ones included (they read as the vanished file's content)
//   shared-file   MAP_SHARED of a file that exists: the data lives in the file (the kernel writes
//                 it back), not in the process -> not copied, not in the layout
//   special       [vvar] [vvar_vclock] [vdso] [vsyscall] [uprobes], VM_IO/VM_PFNMAP device memory,
//                 anon_inode:/socket: driver rings -> not memory a process image can hold
//
// PROT_NONE ("---p") VMAs are memory to copy: an area written and then mprotect()ed to PROT_NONE
// still holds data the process gets back with the next mprotect. They cannot be written while
// PROT_NONE, so tracking only scans them when first seen (see tracking/tracked-process.ts).

import * as fs from 'node:fs';
import { UserError } from '../../common/errors';
import type { Vma } from '../../common/vma';

export type { Vma } from '../../common/vma';

export type VmaKind = 'anon' | 'shared-anon' | 'file-private' | 'orphan-private' | 'shared-file' | 'special';

/** A maps line, plus the VMA flags from smaps when they were needed (device mappings). */
export interface MapsEntry extends Vma {
  /** smaps "VmFlags" mnemonics ("rd", "wr", "io", "pf", "uw", ...), read only for device files. */
  vmFlags?: string[];
}

const SPECIAL_NAMES = new Set(['[vvar]', '[vvar_vclock]', '[vdso]', '[vsyscall]', '[uprobes]']);

// start-end perms offset dev inode [path]; the kernel pads the inode column with spaces before
// the path, and the path runs to the end of the line (it may hold spaces; newlines are escaped
// as \012 by the kernel).
const LINE = /^([0-9a-f]+)-([0-9a-f]+) ([-r][-w][-x][ps]) ([0-9a-f]+) ([0-9a-f]+:[0-9a-f]+) (\d+) *(.*)$/;

/** Paths of shmem objects that look like files but have no file the receiver could open. */
function isAnonymousShmemPath(path: string): boolean {
  return path.startsWith('/dev/zero') || path.startsWith('/SYSV') || path.startsWith('/memfd:');
}

export function isDeletedPath(path: string): boolean {
  return path.endsWith(' (deleted)');
}

/** Parse the text of /proc/PID/maps (every line; nothing is filtered out here). */
export function parseMaps(text: string): MapsEntry[] {
  const out: MapsEntry[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const m = LINE.exec(line);
    if (!m) throw new Error(`unparsable /proc/PID/maps line: ${JSON.stringify(line)}`);
    const path = m[7];
    const inode = Number(m[6]);
    out.push({
      start: parseInt(m[1], 16),
      end: parseInt(m[2], 16),
      perms: m[3],
      offset: parseInt(m[4], 16),
      dev: m[5],
      inode,
      path,
      fileBacked: path.startsWith('/') && inode !== 0 && !isDeletedPath(path) && !isAnonymousShmemPath(path),
    });
  }
  return out;
}

/** Device files other than the shmem ones may be VM_IO/VM_PFNMAP: only smaps tells. */
function needsVmFlags(v: Vma): boolean {
  return v.path.startsWith('/dev/') && !v.path.startsWith('/dev/zero') && !v.path.startsWith('/dev/shm/');
}

/**
 * Read and parse /proc/PID/maps. When a device file is mapped, /proc/PID/smaps is read as well for
 * its VmFlags (smaps walks every page table, so it is read only then).
 */
export function readMaps(pid: number): MapsEntry[] {
  const entries = parseMaps(readProc(pid, 'maps'));
  if (entries.some(needsVmFlags)) {
    const flags = parseSmapsVmFlags(readProc(pid, 'smaps'));
    for (const e of entries) if (needsVmFlags(e)) e.vmFlags = flags.get(e.start);
  }
  return entries;
}

/** VmFlags of every VMA in smaps text, keyed by start address. */
export function parseSmapsVmFlags(text: string): Map<number, string[]> {
  const out = new Map<number, string[]>();
  let start = -1;
  for (const line of text.split('\n')) {
    const head = /^([0-9a-f]+)-[0-9a-f]+ /.exec(line);
    if (head) start = parseInt(head[1], 16);
    else if (line.startsWith('VmFlags:') && start >= 0) out.set(start, line.slice(8).trim().split(/\s+/));
  }
  return out;
}

function readProc(pid: number, file: string): string {
  try {
    return fs.readFileSync(`/proc/${pid}/${file}`, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ESRCH') throw new UserError(`no such process ${pid}`);
    if (code === 'EACCES' || code === 'EPERM') {
      throw new UserError(`permission denied reading /proc/${pid}/${file}: need root or CAP_SYS_PTRACE`);
    }
    throw err;
  }
}

export function classifyVma(v: MapsEntry): VmaKind {
  if (SPECIAL_NAMES.has(v.path)) return 'special';
  if (v.vmFlags && (v.vmFlags.includes('io') || v.vmFlags.includes('pf'))) return 'special';
  // anon_inode:[perf_event], anon_inode:i915.gem, socket:[...]: driver-owned rings and buffers.
  if (v.path !== '' && !v.path.startsWith('/') && !v.path.startsWith('[')) return 'special';
  const shared = v.perms[3] === 's';
  if (v.path.startsWith('[anon_shmem:')) return 'shared-anon';
  if (!v.path.startsWith('/')) return shared ? 'shared-anon' : 'anon'; // "", [heap], [stack], [anon:x]
  if (shared) return v.fileBacked ? 'shared-file' : 'shared-anon';
  return v.fileBacked ? 'file-private' : 'orphan-private';
}

/** Whether the VMA's pages belong in the process image (see the table at the top). */
export function isMemoryToCopy(v: MapsEntry): boolean {
  const kind = classifyVma(v);
  return kind !== 'special' && kind !== 'shared-file';
}

/** PROT_NONE: no access at all (cannot be written until an mprotect, which changes the maps). */
export function isProtNone(v: Vma): boolean {
  return v.perms.startsWith('---');
}

/** The plain wire record (drops vmFlags). */
export function toVma(e: MapsEntry): Vma {
  return { start: e.start, end: e.end, perms: e.perms, offset: e.offset, path: e.path, fileBacked: e.fileBacked, inode: e.inode, dev: e.dev };
}
