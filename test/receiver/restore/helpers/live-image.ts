// A MemorySource made from a live (frozen) process: its VMAs from /proc/PID/maps, which pages hold
// data from /proc/PID/pagemap, and those pages' bytes read through /proc/PID/mem into memory,
// so that the source outlives the process (the tests kill it before restoring).
//
// Which pages hold data (pagemap bits: 63 present, 62 swapped, 61 file-page or shared-anon):
// anonymous memory: present or swapped; private file mappings: present and not a file page (the
// process's private copy-on-write copies) or swapped; shared file mappings: none (the file has
// them).

import * as fs from 'node:fs';
import { type MemorySource, protFromPerms, type VmaImage, type VmaKind } from '../../../../image/memory-source';

const PAGE = 4096;
const SPECIALS = new Set(['[vvar]', '[vvar_vclock]', '[vdso]']);
const PRESENT = 1n << 63n;
const SWAPPED = 1n << 62n;
const FILE_PAGE = 1n << 61n;

export interface LiveImage extends MemorySource {
  /** Bytes of page data held. */
  readonly bytes: number;
}

export function snapshotMemory(pid: number): LiveImage {
  const vmas: VmaImage[] = [];
  const chunks: Array<{ start: number; data: Buffer }> = [];
  const pagemap = fs.openSync(`/proc/${pid}/pagemap`, 'r');
  const mem = fs.openSync(`/proc/${pid}/mem`, 'r');
  let bytes = 0;
  try {
    for (const line of fs.readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
      const m = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) \S+ (\d+)\s*(.*)$/.exec(line);
      if (!m) continue;
      const [start, end] = [parseInt(m[1], 16), parseInt(m[2], 16)];
      const perms = m[3];
      const name = m[6];
      if (name === '[vsyscall]') continue;
      const shared = perms[3] === 's';
      let kind: VmaKind;
      if (SPECIALS.has(name)) kind = 'special';
      else if (name === '' || name.startsWith('[')) kind = shared ? 'shared-anon' : 'anon';
      else if (shared && (name.startsWith('/dev/zero') || name.startsWith('/memfd:'))) kind = 'shared-anon';
      else kind = 'file';
      const v: VmaImage = { start, end, prot: protFromPerms(perms), shared, kind, growsDown: name === '[stack]', name, data: [] };
      if (kind === 'file') {
        const st = fs.statSync(name.replace(/ \(deleted\)$/, ''), { bigint: true, throwIfNoEntry: false });
        v.file = {
          path: name,
          offset: parseInt(m[4], 16),
          dev: st?.dev ?? 0n,
          inode: BigInt(m[5]),
          size: st?.size ?? 0n,
          mtimeNs: st?.mtimeNs ?? 0n,
        };
      }
      if (kind !== 'special' && !(kind === 'file' && shared)) {
        const pages = (end - start) / PAGE;
        const pm = Buffer.alloc(pages * 8);
        fs.readSync(pagemap, pm, 0, pm.length, (start / PAGE) * 8);
        let runStart = -1;
        for (let i = 0; i <= pages; i++) {
          let has = false;
          if (i < pages) {
            const e = pm.readBigUInt64LE(i * 8);
            has = (e & SWAPPED) !== 0n || ((e & PRESENT) !== 0n && (kind !== 'file' || (e & FILE_PAGE) === 0n));
          }
          if (has && runStart < 0) runStart = i;
          if (!has && runStart >= 0) {
            const s = start + runStart * PAGE;
            const e = start + i * PAGE;
            v.data.push([s, e]);
            const data = Buffer.alloc(e - s);
            let done = 0;
            while (done < data.length) {
              const n = fs.readSync(mem, data, done, data.length - done, s + done);
              if (n <= 0) throw new Error(`short read of /proc/${pid}/mem at 0x${(s + done).toString(16)}`);
              done += n;
            }
            chunks.push({ start: s, data });
            bytes += data.length;
            runStart = -1;
          }
        }
      }
      vmas.push(v);
    }
  } finally {
    fs.closeSync(pagemap);
    fs.closeSync(mem);
  }
  chunks.sort((a, b) => a.start - b.start);
  return {
    vmas,
    bytes,
    read(addr: number, len: number, into: Buffer): void {
      // Binary search for the chunk holding addr (reads never cross a data run).
      let lo = 0;
      let hi = chunks.length - 1;
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if (chunks[mid].start <= addr) lo = mid;
        else hi = mid - 1;
      }
      const c = chunks[lo];
      if (!c || addr < c.start || addr + len > c.start + c.data.length) throw new Error(`no image data at 0x${addr.toString(16)}+${len}`);
      c.data.copy(into, 0, addr - c.start, addr - c.start + len);
    },
  };
}
