// The raw export: one START-END.bin per VMA holding what the process read there at the freeze
// (sent pages, zeros, the backing file's content for never-written file-backed pages), and
// manifest.json; a missing backing file is an error unless zero-filling was asked for.

import test from 'ava';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { ImageStore } from '../../../image/image-store';
import { exportRaw } from '../../../receiver/export/raw-export';
import { ExportError } from '../../../receiver/export/export-error';
import { vmaRangeName } from '../../../common/vma';
import { Model, PS, commitModel, figures, meta, pagesOf, sendBatch, tempDir, vma, x86Regs } from '../../image/store-helpers';

const A = 0x7f0000000000;
const F = 0x7f3000000000;

/** A committed session with an anonymous VMA and a file-backed one that extends past the file's end. */
async function fileBackedSession(t: import('ava').ExecutionContext) {
  const dir = tempDir(t);
  const backing = path.join(dir, 'lib.so');
  const content = Buffer.alloc(6 * PS);
  for (let i = 0; i < 6; i++) content.fill(0x41 + i, i * PS, (i + 1) * PS);
  await fsp.writeFile(backing, content);
  const store = new ImageStore(path.join(dir, 'images'));
  const img = await store.create(meta('raw1'));
  const model = new Model();
  // File pages 2..5 back VMA pages 0..3; VMA pages 4..7 lie past the end of the file.
  const fileVma = vma(F, 8, { perms: 'rw-p', path: backing, fileBacked: true, offset: 2 * PS, inode: (await fsp.stat(backing)).ino });
  const layout = [vma(A, 4), fileVma];
  model.setLayout(layout);
  await img.beginRound(0, 'STOP_AND_COPY', layout);
  await sendBatch(img, model, [A, A + 2 * PS, F + PS, F + 2 * PS, F + 5 * PS], 1, new Set([F + 2 * PS]));
  await img.endRound(figures(0));
  await commitModel(img, model, [{ tid: 4242, regs: x86Regs({ rip: 0x401000n }), fpregs: Buffer.alloc(512) }]);
  return { dir, backing, content, store, img, model, layout, fileVma };
}

test('file-backed VMA: never-written pages come from the file at the VMA offset, zeros past its end', async (t) => {
  const { dir, backing, content, img, model, layout, fileVma } = await fileBackedSession(t);
  const out = path.join(dir, 'out');
  const s = await exportRaw(img, out);
  t.deepEqual(s.pages, { data: 4, zero: 1, file: 5, none: 2 });

  const anon = await fsp.readFile(path.join(out, `${vmaRangeName(A, A + 4 * PS)}.bin`));
  t.true(anon.equals(model.vmaBytes(layout[0])));
  const file = await fsp.readFile(path.join(out, `${vmaRangeName(F, F + 8 * PS)}.bin`));
  t.is(file.length, 8 * PS);
  t.true(file.equals(model.vmaBytes(fileVma, content)));
  t.is(file[0], 0x43, 'page 0 is file page 2');
  t.true(file.subarray(2 * PS, 3 * PS).equals(Buffer.alloc(PS)), 'a zero page sent over a file page reads zeros');
  t.is(file[3 * PS], 0x46, 'page 3 is file page 5');
  t.true(file.subarray(6 * PS).equals(Buffer.alloc(2 * PS)), 'past the end of the file: zeros');

  const m = JSON.parse(await fsp.readFile(path.join(out, 'manifest.json'), 'utf8'));
  t.like(m, { sessionId: 'raw1', pid: 4242, pageSize: PS, imagePages: 5 });
  t.is(m.vmas.length, 2);
  t.like(m.vmas[1], {
    start: `0x${F.toString(16)}`,
    end: `0x${(F + 8 * PS).toString(16)}`,
    perms: 'rw-p',
    offset: '0x2000',
    path: backing,
    fileBacked: true,
    file: `${vmaRangeName(F, F + 8 * PS)}.bin`,
  });
  t.deepEqual(m.vmas[1].populated, [
    [`0x${(F + PS).toString(16)}`, `0x${(F + 3 * PS).toString(16)}`],
    [`0x${(F + 5 * PS).toString(16)}`, `0x${(F + 6 * PS).toString(16)}`],
  ]);
  t.deepEqual(m.vmas[0].populated, [
    [`0x${A.toString(16)}`, `0x${(A + PS).toString(16)}`],
    [`0x${(A + 2 * PS).toString(16)}`, `0x${(A + 3 * PS).toString(16)}`],
  ]);
  t.is(m.threads[0].tid, 4242);
  t.is(m.threads[0].regs.rip, '0x401000');

  // A second export into the same directory needs --force.
  const again = await t.throwsAsync(exportRaw(img, out));
  t.is((again as ExportError).code, 'OUT_EXISTS');
  await exportRaw(img, out, { force: true });
  await img.close();
});

test('a missing backing file fails the export and names it, unless zero-filling was asked for', async (t) => {
  const { dir, backing, img, model, fileVma } = await fileBackedSession(t);
  await fsp.rm(backing);
  const out = path.join(dir, 'out');
  const err = await t.throwsAsync(exportRaw(img, out));
  t.true(err instanceof ExportError);
  t.is((err as ExportError).code, 'MISSING_FILE');
  t.true(err!.message.includes(backing), err!.message);
  t.regex(err!.message, /zero-fill-missing/);
  t.deepEqual(await fsp.readdir(out).catch(() => []), [], 'nothing written');

  await exportRaw(img, out, { zeroFillMissing: true });
  const file = await fsp.readFile(path.join(out, `${vmaRangeName(F, F + 8 * PS)}.bin`));
  t.true(file.equals(model.vmaBytes(fileVma)), 'sent pages, zeros elsewhere');

  // --file-root finds the file under a copy of the source's tree.
  const root = path.join(dir, 'rootfs');
  await fsp.mkdir(path.join(root, path.dirname(backing)), { recursive: true });
  const copy = Buffer.alloc(6 * PS, 0x77);
  await fsp.writeFile(path.join(root, backing), copy);
  const out2 = path.join(dir, 'out2');
  await exportRaw(img, out2, { fileRoot: root });
  const viaRoot = await fsp.readFile(path.join(out2, `${vmaRangeName(F, F + 8 * PS)}.bin`));
  t.true(viaRoot.equals(model.vmaBytes(fileVma, copy)));
  await img.close();
});

test('raw export refuses a session that is not committed', async (t) => {
  const dir = tempDir(t);
  const store = new ImageStore(path.join(dir, 'images'));
  const img = await store.create(meta('raw2'));
  const model = new Model();
  model.setLayout([vma(A, 2)]);
  await img.beginRound(0, 'PRECOPY', model.layout);
  await sendBatch(img, model, pagesOf(A, 2), 0);
  await img.endRound(figures(0));
  const err = await t.throwsAsync(exportRaw(img, path.join(dir, 'out')));
  t.is((err as ExportError).code, 'NOT_COMMITTED');
  t.regex(err!.message, /receiving/);
  await img.close();
});
