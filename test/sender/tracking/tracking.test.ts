// The scanning layer (sender/tracking/tracked-process.ts) against real target processes: round 0
// returns exactly the populated pages, later rounds exactly what was written (in max_pages
// batches), and every change of the address space a process can make is seen: new, replaced,
// moved, split, re-protected VMAs, MADV_DONTNEED, THP, brk and stack growth, fork.

import test, { type ExecutionContext } from 'ava';
import { UserError } from '../../../common/errors';
import { probeKernel } from '../../../native';
import { TrackedProcess } from '../../../sender/tracking/tracked-process';
import { readMaps as readTargetMaps, type MapsEntry } from '../../../sender/tracking/maps';
import { SentPages } from '../../../sender/stage/sent-pages';
import { findMap, readMaps, readMem, vmFlags } from '../../helpers/procmem';
import { Target, withTarget } from '../../helpers/target';
import { drain, indexesIn, PAGE, pagemap, range, sleep, smapsField, tempFile } from './scan-helpers';

/** Attach, run round 0 to the end, hand the tracked process to fn, always close. */
async function tracked<T>(tg: Target, fn: (tp: TrackedProcess) => Promise<T>, round0 = true): Promise<T> {
  const tp = TrackedProcess.attach(tg.pid);
  try {
    if (round0) await drain(tp.initialRuns(4096));
    return await fn(tp);
  } finally {
    tp.close();
  }
}

/** One round as the orchestrator runs it: refresh, then every dirty page. */
async function round(tp: TrackedProcess, maxPages = 4096) {
  const r = tp.refresh();
  const d = await drain(tp.dirtyRuns(maxPages));
  return { ...r, ...d };
}

/** Deterministic "random" distinct page indexes. */
function randomPages(seed: number, n: number, count: number): number[] {
  let a = seed >>> 0;
  const s = new Set<number>();
  while (s.size < count) {
    a = (Math.imul(a ^ (a >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0;
    s.add(a % n);
  }
  return [...s].sort((x, y) => x - y);
}

test.serial('round 0 returns exactly the populated pages (checked against /proc/PID/pagemap), not unwritten private file pages', async (t) => {
  const file = tempFile(32);
  await withTarget({ mib: 16, seed: 5, sharedMib: 1, file, filePages: 32 }, async (tg) => {
    await tg.dontneed(100, 50); // holes in main
    await tg.filewrite(3); // one copied-on-write page in the private file mapping
    const info = await tg.info();
    const tp = TrackedProcess.attach(tg.pid);
    try {
      // Expected from the kernel's own pagemap, VMA by VMA, before anything is write-protected.
      const expected = new Set<number>();
      for (const v of tp.layout()) {
        const n = (v.end - v.start) / PAGE;
        const pm = pagemap(tg.pid, v.start, n);
        const shared = v.perms[3] === 's';
        pm.forEach((e, i) => {
          if ((e.present || e.swapped) && (shared || !v.fileBacked || !e.fileOrShared)) expected.add(v.start + i * PAGE);
        });
      }
      const got = await drain(tp.initialRuns(4096));
      t.deepEqual(
        [...got.pages].filter((a) => !expected.has(a)).map((a) => a.toString(16)),
        [],
        'returned but not populated',
      );
      t.deepEqual(
        [...expected].filter((a) => !got.pages.has(a)).map((a) => a.toString(16)),
        [],
        'populated but not returned',
      );
      t.true(got.batches.every((b) => b.pages <= 4096));
      // The cases the property is about, spelled out:
      const main = indexesIn(got.pages, tg.base, tg.pages);
      t.deepEqual(main, [...range(0, 100), ...range(150, tg.pages)], 'main minus the MADV_DONTNEED hole');
      t.deepEqual(indexesIn(got.pages, info.file, 32), [3], 'only the written page of the private file mapping');
      t.true(
        pagemap(tg.pid, info.file, 32).filter((e) => e.present && e.fileOrShared).length >= 31,
        'the other file pages are populated page cache (so leaving them out was a decision)',
      );
      t.is(indexesIn(got.pages, info.shared, info.sharedPages).length, info.sharedPages, 'shared anonymous pages are copied');
      const relro = tp.layout().filter((v) => v.path.includes('libc') && v.perms === 'r--p');
      t.true(
        relro.some((v) => [...got.pages].some((a) => a >= v.start && a < v.end)),
        'written pages of a read-only private mapping (RELRO) are returned',
      );
      t.false(
        tp.layout().some((v) => v.path === '[vdso]' || v.path === '[vvar]'),
        'vdso/vvar are not in the layout',
      );
    } finally {
      tp.close();
    }
  });
});

test.serial('every written page is reported, in batches of at most max_pages resumed from walk_end', (t) =>
  withTarget({ mib: 64, seed: 7 }, (tg) =>
    tracked(tg, async (tp) => {
      await round(tp); // settle what the target wrote while answering commands
      const written = randomPages(42, tg.pages, 700);
      for (const i of written) await tg.write(i, 1);
      const r = await round(tp, 16);
      t.true(
        r.batches.every((b) => b.pages <= 16),
        'no batch above max_pages',
      );
      t.true(r.batches.length >= 700 / 16, `${r.batches.length} batches`);
      t.deepEqual(indexesIn(r.pages, tg.base, tg.pages), written, '4 KiB pages: exactly the written ones');
      // And nothing twice: the next round without writes reports no main page.
      t.deepEqual(indexesIn((await round(tp)).pages, tg.base, tg.pages), []);
    }),
  ),
);

test.serial('a VMA mapped after arming is detected by the diff, registered, sent whole, then tracked', (t) =>
  withTarget({ mib: 4, seed: 8 }, (tg) =>
    tracked(tg, async (tp) => {
      const addr = await tg.mmap(64);
      t.false(vmFlags(tg.pid, addr)!.includes('uw'), 'not registered yet');
      const r = await round(tp);
      t.true(
        r.diff.added.some((v) => v.start <= addr && addr < v.end),
        'the diff shows it',
      );
      t.true(vmFlags(tg.pid, addr)!.includes('uw'), 'registered by the refresh');
      t.deepEqual(indexesIn(r.pages, addr, 64), range(0, 64), 'fresh: every populated page');
      t.true(r.discard.some((x, i) => i % 2 === 0 && x <= addr && addr < x + r.discard[i + 1] * PAGE));
      await tg.writep(addr + 5 * PAGE, 3);
      t.deepEqual(indexesIn((await round(tp, 2)).pages, addr, 64), [5, 6, 7], 'then only its writes');
    }),
  ),
);

test.serial('munmap + mmap at the same address: the maps look the same, the replaced VMA is still seen', (t) =>
  withTarget({ mib: 4, seed: 9 }, (tg) =>
    tracked(tg, async (tp) => {
      const addr = await tg.mmap(32);
      await round(tp);
      await tg.munmap(addr, 32);
      const again = await tg.mmap(32);
      t.is(again, addr, 'precondition: the kernel reused the address');
      const r = await round(tp);
      t.false(
        [...r.diff.added, ...r.diff.changed.map((c) => c.after)].some((v) => v.start <= addr && addr < v.end),
        'invisible in the maps diff',
      );
      t.deepEqual(indexesIn(r.pages, addr, 32), range(0, 32), 'the new object comes back whole');
      t.true(r.discard.includes(addr), 'and what the receiver held there is discarded');
      await tg.writep(addr + 31 * PAGE, 1);
      t.deepEqual(indexesIn((await round(tp)).pages, addr, 32), [31]);
    }),
  ),
);

test.serial('mremap (moved and grown): moved pages come back, later writes in the new range are tracked', (t) =>
  withTarget({ mib: 4, seed: 10 }, (tg) =>
    tracked(tg, async (tp) => {
      const addr = await tg.mmap(16);
      await tg.mmap(4); // a neighbour, so that growing usually has to move
      await round(tp);
      const moved = await tg.mremap(addr, 16, 64);
      t.not(moved, addr, 'precondition: the neighbour made it move');
      const r = await round(tp);
      t.deepEqual(indexesIn(r.pages, moved, 64), range(0, 16), 'its 16 populated pages, at the new address');
      t.true(vmFlags(tg.pid, moved)!.includes('uw'), 'registered again (mremap drops the registration)');
      t.true(
        r.diff.removed.some((v) => v.start === addr) && !r.layout.some((v) => v.start < addr + 16 * PAGE && addr < v.end),
        'the old range left the layout',
      );
      await tg.writep(moved + 2 * PAGE, 1);
      await tg.writep(moved + 40 * PAGE, 2); // in the grown tail
      t.deepEqual(indexesIn((await round(tp)).pages, moved, 64), [2, 40, 41]);
    }),
  ),
);

/** The 40-page mapping at addr is registered whole: the target can mremap all of it (EFAULT
 *  across a registered/unregistered cut), and writes after the move are tracked. */
async function assertWholeAndTracked(t: ExecutionContext, tg: Target, tp: TrackedProcess, addr: number): Promise<void> {
  t.true(vmFlags(tg.pid, addr)!.includes('uw'), 'registered');
  const moved = await tg.mremap(addr, 40, 80);
  await tg.writep(moved + 50 * PAGE, 1);
  t.deepEqual(indexesIn((await round(tp)).pages, moved, 80), [...range(0, 40), 50], 'moved, then written: all tracked');
}

test.serial('a registration decided on stale maps leaves no split VMA behind: the target can still mremap the whole', (t) =>
  withTarget({ mib: 4, seed: 12 }, async (tg) => {
    // A 16-page VMA with free space above it (what the attach's maps will show) ...
    const addr = await tg.mmap(64);
    await tg.munmap(addr + 16 * PAGE, 48);
    const tp = TrackedProcess.attach(tg.pid);
    try {
      // ... replaced before round 0 registers it by a 40-page one at the same address: the
      // registration of the 16 pages the maps showed cuts it in two.
      await tg.munmap(addr, 16);
      await tg.mmapAt(addr, 40);
      const r0 = await drain(tp.initialRuns(4096));
      const vma = readMaps(tg.pid).find((m) => m.start <= addr && addr < m.end)!;
      t.true(vma.end >= addr + 40 * PAGE, `one VMA covers the new mapping (${vma.start.toString(16)}-${vma.end.toString(16)})`);
      t.deepEqual(indexesIn(r0.pages, addr, 40), range(0, 40), 'round 0 returns all its pages');
      await assertWholeAndTracked(t, tg, tp, addr);
    } finally {
      tp.close();
    }
  }),
);

test.serial('a refresh whose maps went stale before it registered reads them again: no split VMA is left', (t) =>
  withTarget({ mib: 4, seed: 13 }, async (tg) => {
    const addr = await tg.mmap(64);
    await tg.munmap(addr + 16 * PAGE, 48);
    // The race of a target remapping between our read of its maps and our registration, made
    // certain: the next read returns maps taken earlier.
    let staleRead: MapsEntry[] | null = null;
    const readMapsOnce = (pid: number) => {
      const maps = staleRead ?? readTargetMaps(pid);
      staleRead = null;
      return maps;
    };
    const tp = TrackedProcess.attach(tg.pid, { readMaps: readMapsOnce });
    try {
      await drain(tp.initialRuns(4096));
      await tg.munmap(addr, 16);
      await tg.mmapAt(addr, 16); // a new 16-page object: what the stale read shows, unregistered
      staleRead = readTargetMaps(tg.pid);
      await tg.munmap(addr, 16);
      await tg.mmapAt(addr, 40); // what is there when the refresh registers
      const r = await round(tp);
      const vma = readMaps(tg.pid).find((m) => m.start <= addr && addr < m.end)!;
      t.is(vma.end, addr + 40 * PAGE, `one VMA covers the new mapping (${vma.start.toString(16)}-${vma.end.toString(16)})`);
      t.deepEqual(indexesIn(r.pages, addr, 40), range(0, 40), 'all its pages come back');
      t.true(r.discard.includes(addr), 'and what the receiver held there is discarded');
      await assertWholeAndTracked(t, tg, tp, addr);
    } finally {
      tp.close();
    }
  }),
);

test.serial('mprotect splitting a VMA (middle third read-only): writes before and after are all reported', (t) =>
  withTarget({ mib: 4, seed: 11 }, (tg) =>
    tracked(tg, async (tp) => {
      const addr = await tg.mmap(30);
      await round(tp);
      await tg.writep(addr + 12 * PAGE, 3); // written ...
      await tg.mprotect(addr + 10 * PAGE, 10, 'r'); // ... then made read-only before the next scan
      const r = await round(tp);
      t.true(r.diff.changed.length + r.diff.added.length >= 2, 'the split shows in the diff');
      t.deepEqual(indexesIn(r.pages, addr, 30), [12, 13, 14], 'writes made before the mprotect');
      const parts = readMaps(tg.pid).filter((m) => m.start >= addr && m.end <= addr + 30 * PAGE);
      t.is(parts.length, 3);
      await tg.writep(addr + 2 * PAGE, 1);
      await tg.writep(addr + 25 * PAGE, 1);
      t.deepEqual(indexesIn((await round(tp)).pages, addr, 30), [2, 25]);
      await tg.mprotect(addr + 10 * PAGE, 10, 'rw');
      await tg.writep(addr + 15 * PAGE, 1);
      t.deepEqual(indexesIn((await round(tp)).pages, addr, 30), [15]);
    }),
  ),
);

test.serial('a PROT_NONE area holding data is sent once, not scanned while PROT_NONE, tracked once accessible', (t) =>
  withTarget({ mib: 4, seed: 12 }, (tg) =>
    tracked(tg, async (tp) => {
      const addr = await tg.mmap(8, 'none'); // filled, then PROT_NONE
      const r = await round(tp);
      t.deepEqual(indexesIn(r.pages, addr, 8), range(0, 8), 'its data is sent when first seen');
      t.true(
        r.layout.some((v) => v.start === addr && v.perms === '---p'),
        'it is in the layout',
      );
      t.false(vmFlags(tg.pid, addr)!.includes('uw'), 'not registered (a big reservation would cost every scan)');
      t.deepEqual(indexesIn((await round(tp)).pages, addr, 8), [], 'not again');
      await tg.mprotect(addr, 8, 'rw');
      const back = await round(tp);
      t.deepEqual(indexesIn(back.pages, addr, 8), range(0, 8), 'accessible again: a new object for us, sent whole');
      t.true(vmFlags(tg.pid, addr)!.includes('uw'));
      await tg.writep(addr + 4 * PAGE, 1);
      t.deepEqual(indexesIn((await round(tp)).pages, addr, 8), [4]);
    }),
  ),
);

test.serial('MADV_DONTNEED pages are reported (they read as zeros) and later writes still are', (t) =>
  withTarget({ mib: 8, seed: 13 }, (tg) =>
    tracked(tg, async (tp) => {
      await round(tp);
      await tg.dontneed(50, 10);
      const r = await round(tp);
      t.deepEqual(indexesIn(r.pages, tg.base, tg.pages), range(50, 60));
      await tg.write(55, 1);
      t.deepEqual(indexesIn((await round(tp)).pages, tg.base, tg.pages), [55]);
      // At freeze the populated set leaves out what is gone (now pte markers, reported SWAPPED)
      // and keeps the rewritten page.
      await tg.dontneed(70, 5);
      await round(tp);
      const pop = await drain(tp.populatedRuns());
      const main = indexesIn(pop.pages, tg.base, tg.pages);
      t.deepEqual(main, [...range(0, 50), 55, ...range(60, 70), ...range(75, tg.pages)]);
      // The same when told what the receiver holds (all of main): held markers are still no data.
      const held = new SentPages(PAGE);
      held.record([tg.base, tg.pages], new BigUint64Array(tg.pages));
      t.deepEqual(indexesIn((await drain(tp.populatedRuns(held))).pages, tg.base, tg.pages), main);
      // (Reading them maps the zero page: populated again, with zeros.)
      t.true(readMem(tg.pid, tg.pageAddr(50), 5 * PAGE).equals(Buffer.alloc(5 * PAGE)), 'they read as zeros');
      t.deepEqual(indexesIn((await drain(tp.populatedRuns())).pages, tg.base, 60).slice(50), range(50, 56), '50-54 read, 55 rewritten, 56-59 still gone');
    }),
  ),
);

test.serial('THP: a write to one 4 KiB page of a write-protected huge page reports that page alone', (t) =>
  withTarget({ mib: 8, seed: 14, thp: true }, async (tg) => {
    t.true(smapsField(tg.pid, tg.base, 'AnonHugePages') >= 2048, 'precondition: main is backed by huge pages');
    await tracked(tg, async (tp) => {
      await round(tp);
      await tg.write(700, 1);
      await tg.write(1500, 2);
      t.deepEqual(indexesIn((await round(tp)).pages, tg.base, tg.pages), [700, 1500, 1501]);
    });
  }),
);

test.serial('brk growth: the new heap pages are sent, then tracked', (t) =>
  withTarget({ mib: 4, seed: 15 }, (tg) =>
    tracked(tg, async (tp) => {
      await round(tp);
      const addr = await tg.brk(20);
      const r = await round(tp);
      t.deepEqual(indexesIn(r.pages, addr, 20), range(0, 20));
      t.true(r.layout.some((v) => v.path === '[heap]' && v.start <= addr && addr + 20 * PAGE <= v.end));
      await tg.writep(addr + 3 * PAGE, 1);
      t.deepEqual(indexesIn((await round(tp)).pages, addr, 20), [3]);
    }),
  ),
);

test.serial('stack growth: every populated page of the grown stack is reported', (t) =>
  withTarget({ mib: 4, seed: 16 }, (tg) =>
    tracked(tg, async (tp) => {
      await round(tp);
      const before = readMaps(tg.pid).find((m) => m.path === '[stack]')!;
      await tg.stack(1024);
      const after = readMaps(tg.pid).find((m) => m.path === '[stack]')!;
      t.true(after.start < before.start, 'precondition: the stack VMA grew down');
      const r = await round(tp);
      const n = (before.start - after.start) / PAGE;
      const populated = pagemap(tg.pid, after.start, n)
        .map((e, i) => (e.present ? i : -1))
        .filter((i) => i >= 0);
      t.true(populated.length > 200, `${populated.length} pages of new stack`);
      t.deepEqual(
        populated.filter((i) => !r.pages.has(after.start + i * PAGE)),
        [],
        'grown pages not reported',
      );
    }),
  ),
);

test.serial("fork: the child's writes do not show in the parent's tracking; the parent's own do", (t) =>
  withTarget({ mib: 8, seed: 17 }, (tg) =>
    tracked(tg, async (tp) => {
      await round(tp);
      const child = await tg.fork();
      await sleep(300); // the child rewrites 16 random pages of its copy every 10 ms
      const childPage0 = readMem(child, tg.base, tg.pages * PAGE);
      const parentPage0 = readMem(tg.pid, tg.base, tg.pages * PAGE);
      t.false(childPage0.equals(parentPage0), 'precondition: the child did write its copy');
      t.deepEqual(indexesIn((await round(tp)).pages, tg.base, tg.pages), [], 'no main page written by the parent');
      await tg.write(100, 3); // copy-on-write breaks in the parent
      t.deepEqual(indexesIn((await round(tp)).pages, tg.base, tg.pages), [100, 101, 102]);
    }),
  ),
);

test.serial('a VMA that vanishes between refresh and scan is dropped, not fatal', (t) =>
  withTarget({ mib: 4, seed: 18 }, (tg) =>
    tracked(tg, async (tp) => {
      const addr = await tg.mmap(16);
      await round(tp);
      await tg.writep(addr, 2);
      tp.refresh();
      await tg.munmap(addr, 16);
      const d = await drain(tp.dirtyRuns(64));
      t.deepEqual(indexesIn(d.pages, addr, 16), []);
      const r = tp.refresh();
      t.true(r.diff.removed.some((v) => v.start === addr));
      t.is(findMap(tg.pid, addr), undefined);
    }),
  ),
);

test.serial('attach refuses clearly: a dead pid, a kernel without the features', async (t) => {
  const tg = await Target.start({ mib: 1 });
  const pid = tg.pid;
  await tg.kill();
  const dead = t.throws(() => TrackedProcess.attach(pid));
  t.true(dead instanceof UserError);
  t.regex(dead!.message, new RegExp(`no such process ${pid}`));
  const features = { ...probeKernel(), missing: ['UFFD_FEATURE_WP_ASYNC (Linux >= 6.7)'] };
  const missing = t.throws(() => TrackedProcess.attach(process.pid, { features }));
  t.true(missing instanceof UserError);
  t.regex(missing!.message, /cannot track a process's writes: missing UFFD_FEATURE_WP_ASYNC/);
});
