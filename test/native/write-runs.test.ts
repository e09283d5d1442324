// writeRuns (native/direct_write.cc): a batch's short runs written as one pool job — each piece of
// src lands at its position, pieces outside src are refused before anything is written, and a
// failing write reaches JS as a NativeError naming pwrite.

import test from 'ava';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { NativeError, writeRuns } from '../../native';

function tempFile(t: import('ava').ExecutionContext): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'precopy-write-runs-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return path.join(dir, 'f');
}

test('every (offset, length, position) piece of src lands at its position, nothing else is written', async (t) => {
  const file = tempFile(t);
  const src = Buffer.alloc(4 * 4096);
  for (let i = 0; i < 4; i++) src.fill(i + 1, i * 4096, (i + 1) * 4096);
  const fd = fs.openSync(file, 'w+');
  try {
    // Pages 2, 0, 3 of src at scattered positions (one of them twice: the later copy wins).
    const n = await writeRuns(fd, src, Float64Array.from([2 * 4096, 4096, 10 * 4096, 0, 4096, 3 * 4096, 3 * 4096, 4096, 3 * 4096]));
    t.is(n, 3 * 4096);
  } finally {
    fs.closeSync(fd);
  }
  const got = fs.readFileSync(file);
  t.is(got.length, 11 * 4096);
  t.true(got.subarray(10 * 4096).equals(src.subarray(2 * 4096, 3 * 4096)));
  t.true(got.subarray(3 * 4096, 4 * 4096).equals(src.subarray(3 * 4096)), 'the later piece at the same position wins');
  t.true(got.subarray(0, 3 * 4096).equals(Buffer.alloc(3 * 4096)), 'the rest is a hole');
});

test('a piece outside src is refused before anything is written; a read-only fd fails as a NativeError', async (t) => {
  const file = tempFile(t);
  fs.writeFileSync(file, '');
  const src = Buffer.alloc(8192, 7);
  const fd = fs.openSync(file, 'r+');
  try {
    t.throws(() => writeRuns(fd, src, Float64Array.from([0, 4096, 0, 4096, 8192, 0])), { instanceOf: TypeError });
    t.throws(() => writeRuns(fd, src, Float64Array.from([0, 4096])), { instanceOf: TypeError });
    t.is(fs.statSync(file).size, 0);
  } finally {
    fs.closeSync(fd);
  }
  const ro = fs.openSync(file, 'r');
  try {
    const err = await t.throwsAsync(writeRuns(ro, src, Float64Array.from([0, 4096, 0])), { instanceOf: NativeError });
    t.is(err!.code, 'EBADF');
    t.is(err!.syscall, 'pwrite');
  } finally {
    fs.closeSync(ro);
  }
});
