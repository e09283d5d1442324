// A session's memory as a restore consumes it (memory-source.ts): the VMAs of a layout and the
// pages the image holds, read from the store.
//   - imageMemory: a committed, restorable image, plus what no page layout holds but a process
//     needs at the same addresses (the kernel's vDSO mappings and shared file mappings, recorded
//     in the process state);
//   - heldMemory: a session still receiving, as far as it has come (a handover's destination
//     process rebuilt on resume); its files are named by the layout alone.

import type { Vma } from '../common/vma';
import { protFromPerms, type FileIdentity, type MemorySource, type VmaImage } from './memory-source';
import type { ProcessState } from './process-state';
import type { SessionReader } from './session-reader';

/** One layout VMA: from its file when one is given, else anonymous memory (private or shared). */
export function layoutVma(v: Vma, data: Array<[number, number]>, file?: FileIdentity): VmaImage {
  const shared = v.perms[3] === 's';
  const base = { start: v.start, end: v.end, prot: protFromPerms(v.perms), shared, growsDown: v.path === '[stack]', name: v.path, data };
  // A file the image holds every page of (deleted, memfd) is anonymous memory here.
  return file ? { ...base, kind: 'file', file } : { ...base, kind: shared ? 'shared-anon' : 'anon' };
}

export function imageMemory(image: SessionReader, layout: readonly Vma[], state: ProcessState): MemorySource {
  const files = new Map(state.mappedFiles.map((f) => [`${f.start}-${f.end}`, f]));
  const vmas: VmaImage[] = [];
  for (const v of layout) {
    const f = v.fileBacked ? files.get(`${v.start}-${v.end}`) : undefined;
    const file = f && { path: f.path, offset: f.offset, dev: f.dev, inode: f.inode, size: f.size, mtimeNs: f.mtimeNs };
    vmas.push(layoutVma(v, image.populatedRanges(v.start, v.end), file));
  }
  const inLayout = new Set(layout.map((v) => `${v.start}-${v.end}`));
  for (const f of state.mappedFiles) {
    // Shared file mappings: their pages live in the file, so no layout has them.
    if (f.perms[3] !== 's' || inLayout.has(`${f.start}-${f.end}`)) continue;
    const file = { path: f.path, offset: f.offset, dev: f.dev, inode: f.inode, size: f.size, mtimeNs: f.mtimeNs };
    vmas.push({ start: f.start, end: f.end, prot: protFromPerms(f.perms), shared: true, kind: 'file', growsDown: false, name: f.path, file, data: [] });
  }
  for (const s of state.specials) vmas.push({ start: s.start, end: s.end, prot: 0, shared: false, kind: 'special', growsDown: false, name: s.name, data: [] });
  return pagesOf(image, vmas);
}

/** The pages held so far over `layout`; file mappings by the layout's path and offset (their
 *  identity is only known at the commit: the dev/inode fields are the layout's). */
export function heldMemory(image: SessionReader, layout: readonly Vma[]): MemorySource {
  return pagesOf(
    image,
    layout.map((v) => layoutVmaByPath(v, image.populatedRanges(v.start, v.end))),
  );
}

/** A layout VMA whose file (if any) is known by the layout's path and offset alone. */
export function layoutVmaByPath(v: Vma, data: Array<[number, number]>): VmaImage {
  return layoutVma(v, data, v.fileBacked ? { path: v.path, offset: v.offset, dev: 0n, inode: BigInt(v.inode), size: 0n, mtimeNs: 0n } : undefined);
}

function pagesOf(image: SessionReader, vmas: VmaImage[]): MemorySource {
  vmas.sort((a, b) => a.start - b.start);
  const ps = image.pageSize;
  let presence = new Uint8Array(0);
  return {
    vmas,
    read(addr: number, len: number, into: Buffer): Promise<void> {
      const pages = len / ps;
      if (presence.length < pages) presence = new Uint8Array(pages);
      return image.readPages(addr, pages, into, presence);
    },
  };
}
