// The manifest.json of a raw export: what each START-END.bin holds and where it was mapped, plus
// the threads' registers and the process identity. Addresses are hex strings as in /proc/PID/maps
// (JSON numbers would lose nothing below 2^53, but people compare them with maps files).

import type { Vma } from '../../common/vma';
import { vmaRangeName } from '../../common/vma';
import { digestHex } from '../../common/image-digest';
import type { ImageManifest } from '../../image/image-store';
import type { PageCounts, VmaPlan } from './vma-content';
import { decodeX86Regs } from './x86-regs';

const hex = (n: number) => `0x${n.toString(16)}`;

export const rawFileName = (v: Vma): string => `${vmaRangeName(v.start, v.end)}.bin`;

export function exportManifest(m: ImageManifest, plans: VmaPlan[], counts: PageCounts[]) {
  return {
    format: 'precopy-raw-1',
    sessionId: m.sessionId,
    pid: m.meta.pid,
    command: m.meta.command,
    sourceHost: m.meta.sourceHost,
    kernel: m.meta.kernel,
    pageSize: m.meta.pageSize,
    committedAt: m.committedAt,
    imageDigest: digestHex(m.imageDigest),
    imagePages: m.imagePages,
    vmas: plans.map((p, i) => ({
      start: hex(p.vma.start),
      end: hex(p.vma.end),
      perms: p.vma.perms,
      offset: hex(p.vma.offset),
      path: p.vma.path,
      fileBacked: p.vma.fileBacked,
      inode: p.vma.inode,
      dev: p.vma.dev,
      file: rawFileName(p.vma),
      populated: p.populated.map(([s, e]) => [hex(s), hex(e)]),
      pages: counts[i],
      backingFile: p.backing ?? null,
    })),
    threads: m.threads.map((t) => ({
      tid: t.tid,
      regs: decodeX86Regs(t.regs) ?? null,
      regsBase64: t.regs.toString('base64'),
      fpregsBase64: t.fpregs.toString('base64'),
    })),
  };
}
