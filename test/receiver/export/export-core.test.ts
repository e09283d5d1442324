// The core export read by the real tools: readelf -a parses it, gdb -c prints the right bytes at
// addresses of sent, zero, never-sent and file-backed pages, and the threads' registers.

import test from 'ava';
import { execFileSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { ImageStore } from '../../../image/image-store';
import { exportCore } from '../../../receiver/export/core-export';
import { ExportError } from '../../../receiver/export/export-error';
import { Model, PS, commitModel, figures, meta, pagesOf, sendBatch, tempDir, vma, x86Regs } from '../../image/store-helpers';

const A = 0x7f0000000000;
const F = 0x7f3000000000;
const R = 0x7f5000000000;

function gdb(core: string, ...cmds: string[]): string {
  return execFileSync('gdb', ['-nx', '-batch', ...cmds.flatMap((c) => ['-ex', c]), '-c', core], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** The 4 quadwords gdb prints for x/4gx ADDR. */
function gdbQuads(core: string, addr: number): bigint[] {
  const out = gdb(core, `x/4gx 0x${addr.toString(16)}`);
  const words = [...out.matchAll(/^0x[0-9a-f]+:\s+(.*)$/gm)].flatMap((m) => m[1].trim().split(/\s+/));
  return words.map((w) => BigInt(w));
}

function quadsAt(buf: Buffer, off: number): bigint[] {
  return [0, 1, 2, 3].map((i) => buf.readBigUInt64LE(off + i * 8));
}

test('core export: readelf parses it, gdb reads memory and registers', async (t) => {
  const dir = tempDir(t);
  const backing = path.join(dir, 'mapped.dat');
  const fileContent = Buffer.alloc(4 * PS);
  for (let i = 0; i < fileContent.length; i += 8) fileContent.writeBigUInt64LE(0xf11e000000000000n + BigInt(i), i);
  await fsp.writeFile(backing, fileContent);

  const store = new ImageStore(path.join(dir, 'images'));
  const img = await store.create(meta('core1', { pid: 4242, command: 'target' }));
  const model = new Model();
  const layout = [
    vma(A, 8),
    vma(F, 3, { perms: 'r--p', path: backing, fileBacked: true, offset: PS, inode: (await fsp.stat(backing)).ino }),
    vma(R, 2, { perms: 'r-xp' }),
  ];
  model.setLayout(layout);
  await img.beginRound(0, 'STOP_AND_COPY', layout);
  await sendBatch(img, model, [...pagesOf(A, 5), ...pagesOf(R, 2)], 1, new Set([A + 2 * PS]));
  await img.endRound(figures(0));
  const main = x86Regs({ rip: 0x401234n, rsp: 0x7ffc12345670n, rax: 0xdeadbeefn, cs: 0x33n, ss: 0x2bn, eflags: 0x246n });
  const other = x86Regs({ rip: 0x405678n, rsp: 0x7f00deadb000n, cs: 0x33n, ss: 0x2bn });
  const fp = Buffer.alloc(512);
  fp.writeUInt32LE(0x1f80, 24); // mxcsr
  // Threads in any order: the main thread (tid = pid) must come first in the core.
  await commitModel(img, model, [
    { tid: 4243, regs: other, fpregs: fp },
    { tid: 4242, regs: main, fpregs: fp },
  ]);
  const core = path.join(dir, 'target.core');
  const summary = await exportCore(img, core);
  t.like(summary, { vmas: 3, pages: { data: 6, zero: 1, file: 3, none: 3 } });

  const elf = execFileSync('readelf', ['-a', '-W', core], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  t.regex(elf, /Type:\s+CORE \(Core file\)/);
  t.regex(elf, /Machine:\s+Advanced Micro Devices X86-64/);
  t.is([...elf.matchAll(/^\s+LOAD\s/gm)].length, 3);
  t.is([...elf.matchAll(/NT_PRSTATUS/g)].length, 2);
  t.is([...elf.matchAll(/NT_FPREGSET/g)].length, 2);
  t.regex(elf, /NT_PRPSINFO/);
  t.regex(elf, /NT_FILE/);
  // This readelf cannot decode 64-bit NT_FILE notes ("32-bit build", same for gcore's cores);
  // gdb reads them: info proc mappings lists the file-backed VMA with its offset.
  const maps = gdb(core, 'info proc mappings');
  t.regex(maps, new RegExp(`0x${F.toString(16)}\\s+0x${(F + 3 * PS).toString(16)}\\s+0x3000\\s+0x1000\\s+${backing.replace(/[.]/g, '\\.')}`), maps);
  t.notRegex(elf.replace('Cannot decode 64-bit note in 32-bit build', ''), /[Ww]arning|[Ee]rror|[Cc]annot/);

  // Memory: a sent page, a zero page, an anonymous page never sent, file-backed never-sent pages, an r-x VMA.
  const expectA = model.vmaBytes(layout[0]);
  t.deepEqual(gdbQuads(core, A + 16), quadsAt(expectA, 16));
  t.deepEqual(gdbQuads(core, A + 4 * PS + 256), quadsAt(expectA, 4 * PS + 256));
  t.deepEqual(gdbQuads(core, A + 2 * PS), [0n, 0n, 0n, 0n]);
  t.deepEqual(gdbQuads(core, A + 6 * PS + 8), [0n, 0n, 0n, 0n]);
  t.deepEqual(gdbQuads(core, F + 8), quadsAt(fileContent, PS + 8));
  t.deepEqual(gdbQuads(core, F + 2 * PS + 64), quadsAt(fileContent, 3 * PS + 64));
  t.deepEqual(gdbQuads(core, R + PS), quadsAt(model.vmaBytes(layout[2]), PS));

  // Registers, per thread.
  const regs = gdb(core, 'info threads', 'info registers rip rsp rax', 'thread 2', 'info registers rip rsp');
  t.regex(regs, /LWP 4242/);
  t.regex(regs, /LWP 4243/);
  t.regex(regs, /rip\s+0x401234\s/);
  t.regex(regs, /rsp\s+0x7ffc12345670\s/);
  t.regex(regs, /rax\s+0xdeadbeef\s/);
  t.regex(regs, /rip\s+0x405678\s/);
  t.regex(gdb(core, 'info registers mxcsr'), /mxcsr\s+0x1f80/);
  await img.close();
});

test('core export refuses an uncommitted session and an existing output file', async (t) => {
  const dir = tempDir(t);
  const store = new ImageStore(path.join(dir, 'images'));
  const img = await store.create(meta('core2'));
  const err = await t.throwsAsync(exportCore(img, path.join(dir, 'x.core')));
  t.true(err instanceof ExportError);
  t.is((err as ExportError).code, 'NOT_COMMITTED');
  await commitModel(img, new Model());
  await fsp.writeFile(path.join(dir, 'x.core'), 'keep me');
  const exists = await t.throwsAsync(exportCore(img, path.join(dir, 'x.core')));
  t.is((exists as ExportError).code, 'OUT_EXISTS');
  t.is(await fsp.readFile(path.join(dir, 'x.core'), 'utf8'), 'keep me');
  t.deepEqual(await exportCore(img, path.join(dir, 'x.core'), { force: true }), {
    vmas: 0,
    bytes: 0,
    pages: { data: 0, zero: 0, file: 0, none: 0 },
    out: path.join(dir, 'x.core'),
  });
  t.regex(execFileSync('readelf', ['-h', path.join(dir, 'x.core')], { encoding: 'utf8' }), /CORE/);
  await img.close();
});
