// A committed, restorable image as the restore reads its memory (memory-source.ts): the VMAs of
// the committed layout, plus what no page layout holds but a process needs at the same addresses
// (the kernel's vDSO mappings and shared file mappings, recorded in the process state), and the
// pages the image holds, read from the store.

import type { Vma } from '../common/vma';
import { protFromPerms, type MemorySource, type VmaImage } from './memory-source';
import type { ProcessState } from './process-state';
import type { SessionReader } from './session-reader';

export function imageMemory(image: SessionReader, layout: readonly Vma[], state: ProcessState): MemorySource {
  const files = new Map(state.mappedFiles.map((f) => [`${f.start}-${f.end}`, f]));
  const vmas: VmaImage[] = [];
  for (const v of layout) {
    const shared = v.perms[3] === 's';
    const file = v.fileBacked ? files.get(`${v.start}-${v.end}`) : undefined;
    const base = { start: v.start, end: v.end, prot: protFromPerms(v.perms), shared, growsDown: v.path === '[stack]', name: v.path };
    const data = image.populatedRanges(v.start, v.end);
    if (file) {
      vmas.push({
        ...base,
        kind: 'file',
        data,
        file: { path: file.path, offset: file.offset, dev: file.dev, inode: file.inode, size: file.size, mtimeNs: file.mtimeNs },
      });
    } else {
      // Anonymous memory, or a file the image holds every page of (deleted, memfd): anonymous.
      vmas.push({ ...base, kind: shared ? 'shared-anon' : 'anon', data });
    }
  }
  const inLayout = new Set(layout.map((v) => `${v.start}-${v.end}`));
  for (const f of state.mappedFiles) {
    // Shared file mappings: their pages live in the file, so no layout has them.
    if (f.perms[3] !== 's' || inLayout.has(`${f.start}-${f.end}`)) continue;
    const file = { path: f.path, offset: f.offset, dev: f.dev, inode: f.inode, size: f.size, mtimeNs: f.mtimeNs };
    vmas.push({ start: f.start, end: f.end, prot: protFromPerms(f.perms), shared: true, kind: 'file', growsDown: false, name: f.path, file, data: [] });
  }
  for (const s of state.specials) vmas.push({ start: s.start, end: s.end, prot: 0, shared: false, kind: 'special', growsDown: false, name: s.name, data: [] });
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
