// Unit tests of the pure scanning-layer logic: /proc/PID/maps parsing, classification of what is
// memory to copy, the VMA diff, and run batching. Sample maps text, no process.

import test from 'ava';
import { classifyVma, isMemoryToCopy, isProtNone, parseMaps, parseSmapsVmFlags, toVma, type MapsEntry } from '../../../sender/tracking/maps';
import { diffVmas, sameVma } from '../../../sender/tracking/vma-diff';
import { RunBatcher } from '../../../sender/tracking/run-batch';
import { cutSegments } from '../../../sender/stage/batch-stager';

const SAMPLE = [
  '55d0c6a00000-55d0c6a02000 r--p 00000000 fe:00 2146596                    /usr/bin/target',
  '55d0c6a02000-55d0c6a03000 r-xp 00002000 fe:00 2146596                    /usr/bin/target',
  '55d0c6a04000-55d0c6a05000 r--p 00003000 fe:00 2146596                    /usr/bin/target',
  '55d0c6a05000-55d0c6a06000 rw-p 00004000 fe:00 2146596                    /usr/bin/target',
  '55d0c7000000-55d0c7021000 rw-p 00000000 00:00 0                          [heap]',
  '7f0000000000-7f0000100000 rw-p 00000000 00:00 0 ',
  '7f0000100000-7f0000200000 ---p 00000000 00:00 0 ',
  '7f0000200000-7f0000300000 rw-s 00000000 00:01 1035                       /dev/zero (deleted)',
  '7f0000300000-7f0000301000 rw-p 00000000 00:00 0                          [anon:my name with spaces]',
  '7f0000301000-7f0000302000 rw-s 00000000 00:01 77                         [anon_shmem:ring]',
  '7f0000400000-7f0000408000 rw-s 00000000 00:01 1036                       /memfd:buf (deleted)',
  '7f0000408000-7f0000410000 rw-p 00000000 00:01 1036                       /memfd:buf (deleted)',
  '7f0000500000-7f0000510000 r--p 00001000 fe:00 4242                       /home/me/my data file.bin',
  '7f0000510000-7f0000520000 rw-s 00000000 fe:00 4243                       /home/me/shared db',
  '7f0000520000-7f0000530000 r-xp 00000000 fe:00 4244                       /usr/lib/libold.so (deleted)',
  '7f0000530000-7f0000540000 rw-s 00000000 00:01 98                         /SYSV0000abcd (deleted)',
  '7f0000540000-7f0000550000 rw-s 00000000 00:0e 11                         anon_inode:[perf_event]',
  '7f0000550000-7f0000560000 rw-s 00000000 00:06 501                        /dev/dri/card0',
  '7f0000560000-7f0000570000 rw-p 00000000 00:06 4                          /dev/shm/x (deleted)',
  '7ffd10000000-7ffd10021000 rw-p 00000000 00:00 0                          [stack]',
  '7ffd101fe000-7ffd10202000 r--p 00000000 00:00 0                          [vvar]',
  '7ffd10202000-7ffd10204000 r-xp 00000000 00:00 0                          [vdso]',
  'ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]',
  '',
].join('\n');

const byPath = (vs: MapsEntry[], p: string) => {
  const v = vs.find((x) => x.path === p);
  if (!v) throw new Error(`no VMA with path ${p}`);
  return v;
};

test('parseMaps reads every field, paths with spaces and (deleted) kept verbatim', (t) => {
  const vs = parseMaps(SAMPLE);
  t.is(vs.length, 23);
  const exe = vs[1];
  t.deepEqual(toVma(exe), {
    start: 0x55d0c6a02000,
    end: 0x55d0c6a03000,
    perms: 'r-xp',
    offset: 0x2000,
    path: '/usr/bin/target',
    fileBacked: true,
    inode: 2146596,
    dev: 'fe:00',
  });
  t.is(vs[5].path, '', 'anonymous: empty path (trailing blank dropped)');
  t.false(vs[5].fileBacked);
  t.truthy(vs.find((v) => v.path === '[anon:my name with spaces]'));
  const data = byPath(vs, '/home/me/my data file.bin');
  t.is(data.offset, 0x1000);
  t.true(data.fileBacked);
  t.false(byPath(vs, '/usr/lib/libold.so (deleted)').fileBacked, 'a deleted file cannot back pages at the receiver');
  t.false(byPath(vs, '/memfd:buf (deleted)').fileBacked);
  t.false(byPath(vs, '/dev/zero (deleted)').fileBacked);
  t.false(byPath(vs, '/SYSV0000abcd (deleted)').fileBacked);
});

test('parseMaps: a file name ending in a space keeps it; bad lines throw', (t) => {
  const [v] = parseMaps('7f0000500000-7f0000510000 r--p 00000000 fe:00 9 /tmp/trailing \n');
  t.is(v.path, '/tmp/trailing ');
  t.throws(() => parseMaps('garbage line\n'), { message: /unparsable/ });
});

test('classification: what is memory to copy', (t) => {
  const vs = parseMaps(SAMPLE);
  const kind = (p: string) => classifyVma(byPath(vs, p));
  t.is(kind('[heap]'), 'anon');
  t.is(kind('[stack]'), 'anon');
  t.is(kind(''), 'anon');
  t.is(kind('[anon:my name with spaces]'), 'anon');
  t.is(kind('/dev/zero (deleted)'), 'shared-anon', 'MAP_SHARED|MAP_ANONYMOUS');
  t.is(kind('[anon_shmem:ring]'), 'shared-anon');
  t.is(kind('/SYSV0000abcd (deleted)'), 'shared-anon', 'SYSV shm');
  t.is(classifyVma(vs.find((v) => v.path === '/memfd:buf (deleted)' && v.perms === 'rw-s')!), 'shared-anon');
  t.is(classifyVma(vs.find((v) => v.path === '/memfd:buf (deleted)' && v.perms === 'rw-p')!), 'orphan-private');
  t.is(kind('/usr/lib/libold.so (deleted)'), 'orphan-private');
  t.is(kind('/dev/shm/x (deleted)'), 'orphan-private');
  t.is(kind('/home/me/my data file.bin'), 'file-private');
  t.is(classifyVma(vs[2]), 'file-private', 'RELRO (r--p of the executable) is copied where written');
  t.is(kind('/home/me/shared db'), 'shared-file', 'its data lives in the file');
  t.is(kind('anon_inode:[perf_event]'), 'special');
  t.is(kind('[vvar]'), 'special');
  t.is(kind('[vdso]'), 'special');
  t.is(kind('[vsyscall]'), 'special');
  const copied = vs.filter(isMemoryToCopy).map((v) => v.path);
  for (const p of ['[vvar]', '[vdso]', '[vsyscall]', '/home/me/shared db', 'anon_inode:[perf_event]']) t.false(copied.includes(p), p);
  t.true(copied.includes(''), 'PROT_NONE reservations stay in the layout');
  t.true(isProtNone(vs[6]));
});

test('device mappings: VM_IO/VM_PFNMAP from smaps VmFlags are not memory; others follow the usual rules', (t) => {
  const vs = parseMaps(SAMPLE);
  const card = byPath(vs, '/dev/dri/card0');
  const flags = parseSmapsVmFlags(
    [
      '7f0000550000-7f0000560000 rw-s 00000000 00:06 501                        /dev/dri/card0',
      'Size:                 64 kB',
      'VmFlags: rd wr sh mr mw me ms io pf dc de dd sd ',
      '7ffd10000000-7ffd10021000 rw-p 00000000 00:00 0                          [stack]',
      'VmFlags: rd wr mr mw me gd ac ',
    ].join('\n'),
  );
  t.deepEqual(flags.get(0x7ffd10000000), ['rd', 'wr', 'mr', 'mw', 'me', 'gd', 'ac']);
  card.vmFlags = flags.get(card.start);
  t.is(classifyVma(card), 'special');
  t.false(isMemoryToCopy(card));
});

const vma = (start: number, end: number, perms = 'rw-p', path = '') =>
  toVma(parseMaps(`${start.toString(16)}-${end.toString(16)} ${perms} 00000000 00:00 0 ${path}\n`)[0]);

test('diffVmas: added, removed, changed (grown, mprotect, replaced object), unchanged', (t) => {
  const P = 0x1000;
  const before = [vma(0x10000, 0x20000), vma(0x30000, 0x40000), vma(0x50000, 0x60000), vma(0x70000, 0x80000, 'rw-p', '[heap]'), vma(0x90000, 0xa0000)];
  const after = [
    vma(0x10000, 0x20000), // unchanged
    vma(0x30000, 0x34000), // split by an mprotect of its tail ...
    vma(0x34000, 0x40000, 'r--p'), // ... into this new VMA
    vma(0x50000, 0x60000, 'r--p'), // mprotect of the whole VMA
    vma(0x70000, 0x70000 + 40 * P, 'rw-p', '[heap]'), // brk growth
    // 0x90000 munmapped
    vma(0xb0000, 0xc0000), // new mmap
  ];
  const d = diffVmas(before, after);
  t.deepEqual(
    d.unchanged.map((v) => v.start),
    [0x10000],
  );
  t.deepEqual(
    d.added.map((v) => v.start),
    [0x34000, 0xb0000],
  );
  t.deepEqual(
    d.removed.map((v) => v.start),
    [0x90000],
  );
  t.deepEqual(
    d.changed.map((c) => [c.before.start, c.after.end]),
    [
      [0x30000, 0x34000],
      [0x50000, 0x60000],
      [0x70000, 0x70000 + 40 * P],
    ],
  );
  t.true(sameVma(before[0], after[0]));
  // A different file at the same place is a change even with equal extents.
  const f1 = toVma(parseMaps('10000-20000 r--p 00000000 fe:00 1 /a\n')[0]);
  const f2 = toVma(parseMaps('10000-20000 r--p 00000000 fe:00 2 /b\n')[0]);
  t.is(diffVmas([f1], [f2]).changed.length, 1);
  t.deepEqual(diffVmas([], []), { added: [], removed: [], changed: [], unchanged: [] });
});

test('RunBatcher: batches of at most maxPages, runs merged only inside a VMA, zero hints kept', (t) => {
  const P = 4096;
  const b = new RunBatcher(5, P);
  b.boundary(0x10000);
  t.is(b.add(0x10000, 2), 2);
  t.is(b.add(0x12000, 1, true), 1, 'contiguous: extends the run, zero hint recorded');
  b.boundary(0x13000); // next VMA starts right after
  t.is(b.add(0x13000, 4), 2, 'only 2 fit');
  t.true(b.full());
  const first = b.take();
  t.deepEqual([...first.runs], [0x10000, 3, 0x13000, 2], 'a run never crosses the VMA boundary');
  t.deepEqual([...first.zeroHint!], [0x12000, 1]);
  t.is(first.pages, 5);
  t.is(b.pages, 0);
  t.is(b.add(0x15000, 2), 2);
  const second = b.take();
  t.deepEqual([...second.runs], [0x15000, 2]);
  t.is(second.zeroHint, undefined);
  t.throws(() => new RunBatcher(0, P));
});

test('cutSegments: runs split where zero hints start and end, first segment of each run flagged', (t) => {
  const P = 4096;
  const segs = cutSegments({ runs: Float64Array.from([0x10000, 6, 0x20000, 2]), pages: 8, zeroHint: Float64Array.from([0x12000, 2, 0x20000, 1]) }, P);
  // (start, pages, kind 0=read 1=zero, first)
  t.deepEqual(segs, [0x10000, 2, 0, 1, 0x12000, 2, 1, 0, 0x14000, 2, 0, 0, 0x20000, 1, 1, 1, 0x21000, 1, 0, 0]);
  t.deepEqual(cutSegments({ runs: Float64Array.from([0x10000, 3]), pages: 3 }, P), [0x10000, 3, 0, 1]);
});
