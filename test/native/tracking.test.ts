// Dirty tracking against a real target: arm (uffd injected into the target), register, WP scans
// walked in max_pages batches resumed from walkEnd. Every page the target writes between two scans
// must be reported; nothing else may be, except where the kernel reports a whole range.

import test from 'ava';
import * as fs from 'node:fs';
import { arm, NativeError, PAGE_IS_HUGE, PAGE_IS_WRITTEN, readPages, PM_SCAN_WP_MATCHING } from '../../native';
import { readMem } from '../helpers/procmem';
import { replyFields, TARGET_BIN, withTarget } from '../helpers/target';
import { ChildLines, minus, pagesOf, POPULATED, randomPages, runs, sorted, walk, WP_SCAN } from './native-helpers';

const PAGE = 4096;
const DIRTY = { flags: WP_SCAN, categoryMask: PAGE_IS_WRITTEN, returnMask: PAGE_IS_WRITTEN };

test.serial('tracking is exact: every page written between two scans is reported, in max_pages batches', (t) =>
  withTarget({ mib: 64, seed: 11 }, async (tg) => {
    const start = tg.base;
    const end = tg.base + tg.pages * PAGE;
    const tr = arm(tg.pid);
    try {
      tr.register(start, end);
      // Arming scan: write-protects everything and returns the populated set (all of main).
      const armed = walk(tr, { start, end, flags: WP_SCAN, categoryMask: PAGE_IS_WRITTEN, returnMask: POPULATED });
      t.is(pagesOf(armed.regions, start).size, tg.pages, 'arming scan reports every filled page');

      const written = randomPages(1234, tg.pages, 700);
      for (const [first, count] of runs(written)) await tg.write(first, count);

      // Small batches: 16 pages a call, 4 regions a vec, resumed from walkEnd.
      const dirty = walk(tr, { start, end, ...DIRTY, maxPages: 16 }, 4);
      const reported = pagesOf(dirty.regions, start);
      t.true(dirty.calls > 700 / 16, `walk took ${dirty.calls} calls`);
      t.true(
        dirty.pagesPerCall.every((n) => n <= 16),
        'no call reports more than max_pages',
      );
      t.deepEqual(minus(written, reported), [], 'written pages not reported (lost writes)');
      // 4 KiB pages: the kernel reports exactly the written pages.
      t.deepEqual(minus(reported, written), [], 'pages reported but never written');
      t.true(dirty.regions.every((r) => r.categories === PAGE_IS_WRITTEN));

      const again = walk(tr, { start, end, ...DIRTY });
      t.deepEqual(sorted(pagesOf(again.regions, start)), [], 'the scan after reports nothing: pages were re-protected');
    } finally {
      tr.close();
    }
  }),
);

test.serial('tracking on transparent huge pages: written 4K pages exact, a zapped huge page reported whole', (t) =>
  withTarget({ mib: 16, thp: true, seed: 5 }, async (tg) => {
    const start = tg.base;
    const end = tg.base + tg.pages * PAGE;
    const huge = /AnonHugePages:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${tg.pid}/smaps_rollup`, 'utf8'));
    t.true(Number(huge?.[1]) >= 8192, `main must be backed by THPs for this test (AnonHugePages ${huge?.[1]} kB)`);

    const tr = arm(tg.pid);
    try {
      tr.register(start, end);
      const armed = walk(tr, { start, end, flags: WP_SCAN, categoryMask: PAGE_IS_WRITTEN, returnMask: POPULATED | PAGE_IS_HUGE });
      t.is(pagesOf(armed.regions, start).size, tg.pages);
      t.true(
        armed.regions.some((r) => r.categories & PAGE_IS_HUGE),
        'arming scan sees huge pages',
      );

      // Writes spread over huge pages 0-2 and 4-7; huge page 3 (pages 1536-2047) is zapped.
      const zapped = new Set(Array.from({ length: 512 }, (_, i) => 1536 + i));
      const written = new Set([...randomPages(99, tg.pages, 300)].filter((p) => !zapped.has(p)));
      for (const [first, count] of runs(written)) await tg.write(first, count);
      await tg.dontneed(1536, 512);

      const dirty = walk(tr, { start, end, ...DIRTY, maxPages: 16 }, 8);
      const reported = pagesOf(dirty.regions, start);
      t.deepEqual(minus(written, reported), [], 'written pages not reported (lost writes)');
      // A write fault on a write-protected huge PMD splits it (WP-async): only the written 4K page
      // is reported. MADV_DONTNEED of a whole huge page is reported as written over its whole
      // 2 MiB: the only extra pages.
      t.deepEqual(minus(reported, written), sorted(zapped), 'extra pages are exactly the zapped huge page');

      t.deepEqual(sorted(pagesOf(walk(tr, { start, end, ...DIRTY }).regions, start)), []);
    } finally {
      tr.close();
    }
  }),
);

test.serial('no write is lost while writer threads run: copying reported pages rebuilds memory exactly', (t) =>
  withTarget({ mib: 32, seed: 3 }, async (tg) => {
    const start = tg.base;
    const size = tg.pages * PAGE;
    const end = start + size;
    const image = Buffer.alloc(size);
    const copy = (regions: { start: number; end: number }[]) => {
      for (const r of regions) {
        const into = Buffer.alloc(r.end - r.start);
        const res = readPages(tg.pid, new Float64Array([r.start, r.end - r.start]), into);
        if (res.failed.length) throw new Error('main area unreadable');
        into.copy(image, r.start - start);
      }
    };
    await tg.writers(2, 32 << 20);
    const tr = arm(tg.pid);
    try {
      tr.register(start, end);
      copy(walk(tr, { start, end, flags: WP_SCAN, categoryMask: PAGE_IS_WRITTEN, returnMask: POPULATED }).regions);
      let reported = 0;
      for (let round = 0; round < 8; round++) {
        await new Promise((r) => setTimeout(r, 30));
        const d = walk(tr, { start, end, ...DIRTY, maxPages: 64 }, 16);
        reported += pagesOf(d.regions, start).size;
        copy(d.regions);
      }
      const writtenByThreads = await tg.stopWriters();
      copy(walk(tr, { start, end, ...DIRTY }).regions); // last round, target now quiet
      t.true(writtenByThreads > 0 && reported > 0, `writers wrote ${writtenByThreads} pages, rounds reported ${reported}`);
      const mem = readMem(tg.pid, start, size);
      let firstDiff = -1;
      for (let p = 0; p < tg.pages && firstDiff < 0; p++) if (image.compare(mem, p * PAGE, (p + 1) * PAGE, p * PAGE, (p + 1) * PAGE) !== 0) firstDiff = p;
      t.is(firstDiff, -1, `page ${firstDiff} differs: a write was not reported`);
      t.deepEqual(await tg.check(), { bad: 0 });
    } finally {
      tr.close();
    }
  }),
);

test.serial('a VMA mapped after arming is invisible until registered, then tracked', (t) =>
  withTarget({ mib: 4 }, async (tg) => {
    const tr = arm(tg.pid);
    try {
      tr.register(tg.base, tg.base + tg.pages * PAGE);
      const addr = await tg.mmap(64);
      const end = addr + 64 * PAGE;
      // Unregistered: CHECK_WPASYNC refuses (EPERM); without it the VMA is silently skipped.
      const err = t.throws(() => walk(tr, { start: addr, end, ...DIRTY }), { instanceOf: NativeError });
      t.is(err?.code, 'EPERM');
      t.deepEqual(walk(tr, { start: addr, end, flags: PM_SCAN_WP_MATCHING, categoryMask: PAGE_IS_WRITTEN, returnMask: PAGE_IS_WRITTEN }).regions, []);

      tr.register(addr, end);
      const armed = walk(tr, { start: addr, end, flags: WP_SCAN, categoryMask: PAGE_IS_WRITTEN, returnMask: POPULATED });
      t.is(pagesOf(armed.regions, addr).size, 64);
      await tg.writep(addr + 10 * PAGE, 3);
      await tg.writep(addr + 63 * PAGE, 1);
      t.deepEqual(sorted(pagesOf(walk(tr, { start: addr, end, ...DIRTY }).regions, addr)), [10, 11, 12, 63]);

      tr.unregister(addr, end);
      await tg.munmap(addr, 64);
      tr.unregister(addr, end); // gone: not an error
    } finally {
      tr.close();
    }
  }),
);

test.serial('scanAsync reports what scan reports and fails cleanly on a closed tracker', (t) =>
  withTarget({ mib: 8 }, async (tg) => {
    const start = tg.base;
    const end = start + tg.pages * PAGE;
    const tr = arm(tg.pid);
    tr.register(start, end);
    walk(tr, { start, end, flags: WP_SCAN, categoryMask: PAGE_IS_WRITTEN, returnMask: POPULATED });
    await tg.write(100, 5);
    await tg.write(2000, 1);
    const vec = new BigUint64Array(3 * 16);
    const r = await tr.scanAsync({ start, end, ...DIRTY }, vec);
    t.is(r.count, 2);
    t.is(r.walkEnd, end);
    t.deepEqual(
      [0, 1].map((i) => [(Number(vec[3 * i]) - start) / PAGE, (Number(vec[3 * i + 1]) - start) / PAGE]),
      [
        [100, 105],
        [2000, 2001],
      ],
    );
    t.is((await tr.scanAsync({ start, end, ...DIRTY }, vec)).count, 0);
    tr.close(); // drops the registration with the uffd
    const err = await t.throwsAsync(tr.scanAsync({ start, end, ...DIRTY }, vec), { instanceOf: NativeError });
    t.is(err?.code, 'EBADF');
    t.throws(() => tr.scan({ start, end, ...DIRTY }, new BigUint64Array(2)), { instanceOf: RangeError });
  }),
);

test.serial('a target without CAP_SYS_PTRACE (uid 65534) is armed with a user-mode-only uffd and tracked', async (t) => {
  // vm.unprivileged_userfaultfd = 0 refuses a plain userfaultfd() in such a process: arming
  // falls back to UFFD_USER_MODE_ONLY, which WP-async tracking does not need anyway.
  t.is(fs.readFileSync('/proc/sys/vm/unprivileged_userfaultfd', 'utf8').trim(), '0');
  const tg = new ChildLines(TARGET_BIN, ['--mib', '4'], { uid: 65534, gid: 65534 });
  try {
    const ready = replyFields(await tg.line());
    const start = ready.base;
    const end = start + ready.pages * PAGE;
    const fdsBefore = await tg.ask('fds');
    const tr = arm(ready.pid);
    try {
      t.is(await tg.ask('fds'), fdsBefore);
      tr.register(start, end);
      walk(tr, { start, end, flags: WP_SCAN, categoryMask: PAGE_IS_WRITTEN, returnMask: POPULATED });
      t.is(await tg.ask('write 7 2'), 'ok');
      t.is(await tg.ask('write 900 1'), 'ok');
      t.deepEqual(sorted(pagesOf(walk(tr, { start, end, ...DIRTY }).regions, start)), [7, 8, 900]);
    } finally {
      tr.close();
    }
  } finally {
    await tg.kill();
  }
});

// The kernel gathers at most 512 regions per internal pass; with a bigger vec_len and a walk that
// finishes in a later pass, it leaves walk_end at the earlier flush point (native/pagemap_scan.cc).
// The wrapper must never let that happen: walk_end always at or after the last region returned.
test.serial('a scan with room for more than 512 regions keeps walk_end after every region it returned', (t) =>
  withTarget({ mib: 16, seed: 21 }, async (tg) => {
    const start = tg.base;
    const end = tg.base + tg.pages * PAGE;
    const tr = arm(tg.pid);
    try {
      tr.register(start, end);
      walk(tr, { start, end, flags: WP_SCAN, categoryMask: PAGE_IS_WRITTEN, returnMask: POPULATED });
      // 700 isolated pages: 700 regions, finished in a second internal pass (the stale case).
      const written = new Set(Array.from({ length: 700 }, (_, i) => 2 * i));
      for (const p of written) await tg.write(p, 1);

      const vec = new BigUint64Array(3 * 1024);
      const seen: number[] = [];
      let calls = 0;
      for (let pos = start; pos < end;) {
        const r = tr.scan({ start: pos, end, ...DIRTY }, vec);
        calls++;
        for (let i = 0; i < r.count; i++) {
          const s = Number(vec[3 * i]);
          const e = Number(vec[3 * i + 1]);
          t.true(s >= pos && e <= r.walkEnd, `region ${s.toString(16)}-${e.toString(16)} outside [pos, walk_end ${r.walkEnd.toString(16)})`);
          for (let a = s; a < e; a += PAGE) seen.push((a - start) / PAGE);
        }
        t.true(r.walkEnd > pos);
        pos = r.walkEnd;
      }
      t.deepEqual(seen, sorted(written), 'each written page reported once, in address order');
      t.true(calls >= 2, 'the walk needed more than one call (at most 512 regions a call)');
    } finally {
      tr.close();
    }
  }),
);
