// `receiver export --format core`: an ELF64 core file of the migrated process as the kernel would
// have dumped it at the freeze: PT_NOTE (NT_PRSTATUS + NT_FPREGSET [+ NT_X86_XSTATE] per thread, NT_PRPSINFO,
// NT_FILE) then one PT_LOAD per VMA of the committed layout with its content (same rule as the
// raw export). Zero pages stay holes in the sparse file. Written to FILE.partial and renamed, so
// FILE exists only when complete.

import { promises as fsp } from 'node:fs';
import { logger } from '../../common/log';
import { xsaveLayout } from '../../native';
import { xstateForGdb } from './xstate-layout';
import type { ImageManifest, SessionReader } from '../../image/image-store';
import { pwriteFull } from '../../image/durable-file';
import {
  EHDR_SIZE,
  NT_FILE,
  NT_AUXV,
  NT_FPREGSET,
  NT_X86_XSTATE,
  NT_PRPSINFO,
  NT_PRSTATUS,
  PHDR_SIZE,
  PT_LOAD,
  PT_NOTE,
  SHDR_SIZE,
  elfHeader,
  extendedNumberingSection,
  note,
  ntFile,
  programHeader,
  prpsinfo,
  prstatus,
  segmentFlags,
} from './elf-core';
import { ExportError } from './export-error';
import { addCounts, committed, type ExportOptions, type ExportSummary } from './raw-export';
import { forEachBlock, forEachContentRun, planVmas, type PageCounts } from './vma-content';
import { X86_64_FPREGS_BYTES, X86_64_REGS_BYTES } from './x86-regs';

const log = logger('export');

export async function exportCore(image: SessionReader, outFile: string, opts: ExportOptions = {}): Promise<ExportSummary> {
  const manifest = await committed(image);
  const plans = await planVmas(image, manifest.layout, opts);
  if (
    !opts.force &&
    (await fsp.lstat(outFile).then(
      () => true,
      () => false,
    ))
  ) {
    throw new ExportError('OUT_EXISTS', `${outFile} exists; choose another name or pass --force`);
  }
  const ps = image.pageSize;
  const notes = coreNotes(manifest);
  const phnum = 1 + plans.length;
  const shoff = EHDR_SIZE + phnum * PHDR_SIZE;
  const notesOffset = shoff + SHDR_SIZE;
  let offset = Math.ceil((notesOffset + notes.length) / ps) * ps;
  const headers: Buffer[] = [
    elfHeader(phnum, shoff),
    programHeader({ type: PT_NOTE, flags: 0, offset: notesOffset, vaddr: 0, filesz: notes.length, memsz: 0, align: 4 }),
  ];
  const segOffsets: number[] = [];
  for (const { vma } of plans) {
    const size = vma.end - vma.start;
    headers.push(programHeader({ type: PT_LOAD, flags: segmentFlags(vma.perms), offset, vaddr: vma.start, filesz: size, memsz: size, align: ps }));
    segOffsets.push(offset);
    offset += size;
  }
  // Section header 0 is only read with extended numbering (phnum >= 0xffff); otherwise it is padding.
  headers.push(extendedNumberingSection(phnum), notes);
  const head = Buffer.concat(headers);

  const partial = `${outFile}.partial`;
  const fh = await fsp.open(partial, 'w', 0o600);
  const total: PageCounts = { data: 0, zero: 0, file: 0, none: 0 };
  try {
    await fh.truncate(offset);
    await pwriteFull(fh, head, 0, head.length, 0);
    for (let k = 0; k < plans.length; k++) {
      const plan = plans[k];
      const c: PageCounts = { data: 0, zero: 0, file: 0, none: 0 };
      await forEachBlock(image, plan, c, async (addr, block, src) => {
        const writes: Promise<void>[] = [];
        const at = segOffsets[k] + (addr - plan.vma.start);
        forEachContentRun(src, (i, j) => writes.push(pwriteFull(fh, block, i * ps, (j - i) * ps, at + i * ps)));
        await Promise.all(writes);
      });
      addCounts(total, c);
    }
    await fh.close();
    await fsp.rename(partial, outFile);
  } catch (err) {
    await fh.close().catch(() => undefined);
    await fsp.rm(partial, { force: true });
    throw err;
  }
  const bytes = plans.reduce((n, p) => n + (p.vma.end - p.vma.start), 0);
  log.info(`session ${image.id}: core file ${outFile} (${plans.length} segments, ${manifest.threads.length} threads)`);
  return { vmas: plans.length, bytes, pages: total, out: outFile };
}

/** The PT_NOTE content: the main thread's notes first (as the kernel orders them), then the others'. */
function coreNotes(m: ImageManifest): Buffer {
  for (const t of m.threads) {
    if (t.regs.length !== X86_64_REGS_BYTES) {
      throw new ExportError(
        'UNSUPPORTED',
        `core export supports x86_64 only: thread ${t.tid} has ${t.regs.length} bytes of registers, not ${X86_64_REGS_BYTES}`,
      );
    }
  }
  const pid = m.meta.pid;
  const threads = [...m.threads].sort((a, b) => (a.tid === pid ? -1 : b.tid === pid ? 1 : 0));
  // Each thread's XSAVE area (AVX and beyond): gdb shows those registers from NT_X86_XSTATE.
  const layout = xsaveLayout(); // the image was taken on this kind of CPU: restore insists on it too
  // Every freeze captures it; a restorable image also has it in its process state.
  const xstate = new Map<number, Buffer>();
  for (const t of m.threads) if (t.xstate && t.xstate.length > 0) xstate.set(t.tid, xstateForGdb(t.xstate, layout));
  for (const t of m.processState?.threads ?? []) xstate.set(t.tid, xstateForGdb(t.xstate, layout));
  const out: Buffer[] = [];
  threads.forEach((t, i) => {
    const fpvalid = t.fpregs.length === X86_64_FPREGS_BYTES;
    out.push(note('CORE', NT_PRSTATUS, prstatus(t.tid, pid, t.regs, fpvalid)));
    if (i === 0) {
      out.push(note('CORE', NT_PRPSINFO, prpsinfo(pid, m.meta.command)));
      out.push(note('CORE', NT_FILE, ntFile(m.layout, m.meta.pageSize)));
      if (m.processState) out.push(note('CORE', NT_AUXV, m.processState.mm.auxv));
    }
    // BFD ties NT_FPREGSET to the NT_PRSTATUS before it: keep each thread's pair together.
    if (fpvalid) out.push(note('CORE', NT_FPREGSET, t.fpregs));
    const xs = xstate.get(t.tid);
    if (xs) out.push(note('LINUX', NT_X86_XSTATE, xs));
  });
  if (threads.length === 0) {
    out.push(note('CORE', NT_PRPSINFO, prpsinfo(pid, m.meta.command)));
    out.push(note('CORE', NT_FILE, ntFile(m.layout, m.meta.pageSize)));
  }
  return Buffer.concat(out);
}
