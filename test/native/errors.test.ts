// Errors a user meets reach JS as NativeError with errno, code, syscall and a message they can act
// on: a dead pid, a pid they may not trace (dropped privileges), a kernel lacking a feature (forced
// through PRECOPY_FAULT_MISSING_FEATURES). None of them touches the target.

import test from 'ava';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { arm, freeze, NativeError, probeKernel, FAKEABLE_FEATURES } from '../../native';
import { vmFlags } from '../helpers/procmem';
import { type Target, withTarget } from '../helpers/target';
import { childNode, threadTracers } from './native-helpers';

async function untouched(t: import('ava').ExecutionContext, tg: Target, fdsBefore: Map<number, string>) {
  t.deepEqual(await tg.fds(), fdsBefore, 'fd table unchanged');
  t.true(
    threadTracers(tg.pid).every((x) => x === 0),
    'not traced',
  );
  t.false(vmFlags(tg.pid, tg.base)?.includes('uw'), 'not registered');
  t.deepEqual(await tg.check(), { bad: 0 });
}

test.serial('probe: this kernel offers everything precopy needs', (t) => {
  const f = probeKernel();
  t.deepEqual(f.missing, []);
  t.true(f.pagemapScan && f.userfaultfd && f.uffdWpAsync && f.uffdWpUnpopulated);
  t.is(f.acceptedCategories, 0x1ff, 'categories WPALLOWED..GUARD (bits 0-8) accepted, bit 9 refused');
  t.is(f.pageSize, 4096);
  t.is(f.kernelRelease, os.release());
});

test.serial('a missing kernel feature (forced) is listed by the probe and arm refuses clearly', (t) =>
  withTarget({ mib: 2 }, async (tg) => {
    const fdsBefore = await tg.fds();
    const saved = process.env.PRECOPY_FAULT_MISSING_FEATURES;
    try {
      for (const [fake, flag, text] of [
        ['wp_async', 'uffdWpAsync', 'UFFD_FEATURE_WP_ASYNC'],
        ['pagemap_scan', 'pagemapScan', 'PAGEMAP_SCAN'],
        ['userfaultfd', 'userfaultfd', 'userfaultfd'],
        ['wp_unpopulated', 'uffdWpUnpopulated', 'UFFD_FEATURE_WP_UNPOPULATED'],
      ] as const) {
        process.env.PRECOPY_FAULT_MISSING_FEATURES = fake;
        const f = probeKernel();
        t.false(f[flag]);
        t.is(f.missing.length, 1);
        t.true(f.missing[0].includes(text), f.missing[0]);
        const err = t.throws(() => arm(tg.pid), { instanceOf: NativeError });
        t.is(err?.code, 'ENOTSUP');
        t.regex(err!.message, new RegExp(`cannot track a process's writes: missing .*${text}`));
      }
      t.deepEqual([...FAKEABLE_FEATURES].sort(), ['pagemap_scan', 'userfaultfd', 'wp_async', 'wp_unpopulated']);
      process.env.PRECOPY_FAULT_MISSING_FEATURES = 'soft_dirty';
      t.throws(() => probeKernel(), { instanceOf: TypeError, message: /unknown feature "soft_dirty"/ });
    } finally {
      if (saved === undefined) delete process.env.PRECOPY_FAULT_MISSING_FEATURES;
      else process.env.PRECOPY_FAULT_MISSING_FEATURES = saved;
    }
    t.deepEqual(probeKernel().missing, []);
    await untouched(t, tg, fdsBefore);
  }),
);

test.serial('a dead pid: "no such process N" (ESRCH) from arm and freeze', async (t) => {
  let pid = 0;
  await withTarget({ mib: 1 }, async (tg) => {
    pid = tg.pid;
  });
  for (const call of [() => arm(pid), () => freeze(pid)]) {
    const err = t.throws(call, { instanceOf: NativeError });
    t.is(err?.code, 'ESRCH');
    t.is(err?.errno, 3);
    t.is(err?.message, `no such process ${pid}`);
    t.truthy(err?.syscall);
  }
  t.throws(() => arm(0), { instanceOf: TypeError });
  t.throws(() => freeze(1.5), { instanceOf: TypeError });
});

test.serial('a thread id, ourselves, an already traced process: refused with the reason', (t) =>
  withTarget({ mib: 2 }, async (tg) => {
    await tg.blockers();
    const fdsBefore = await tg.fds();
    const tid = fs
      .readdirSync(`/proc/${tg.pid}/task`)
      .map(Number)
      .find((x) => x !== tg.pid)!;
    const thr = t.throws(() => arm(tid), { instanceOf: NativeError });
    t.is(thr?.code, 'EINVAL');
    t.is(thr?.message, `${tid} is a thread of process ${tg.pid}: give the process id`);
    t.throws(() => freeze(process.pid), { instanceOf: NativeError, message: /precopy process itself/ });

    const f = freeze(tg.pid); // we trace it now: the arming helper cannot
    try {
      const traced = t.throws(() => arm(tg.pid), { instanceOf: NativeError });
      t.is(traced?.code, 'EPERM');
      t.is(traced?.message, `process ${tg.pid} is already traced by process ${process.pid} (a debugger?); detach it first`);
    } finally {
      f.thaw();
    }
    await untouched(t, tg, fdsBefore);
  }),
);

test.serial('a process we may not trace (privileges dropped): "permission denied: need root or CAP_SYS_PTRACE"', (t) =>
  withTarget({ mib: 2 }, async (tg) => {
    const fdsBefore = await tg.fds();
    const child = childNode('unprivileged.js', [String(tg.pid), String(tg.base)]);
    const results = new Map<string, Record<string, unknown>>();
    for (let i = 0; i < 3; i++) {
      const r = JSON.parse(await child.line()) as Record<string, unknown>;
      results.set(r.call as string, r);
    }
    await child.exited;
    for (const [call, action] of [
      ['arm', 'read the page tables of'],
      ['freeze', 'trace'],
      ['readPages', 'read memory of'],
    ]) {
      const r = results.get(call)!;
      t.is(r.name, 'NativeError', `${call}: ${JSON.stringify(r)}`);
      t.true(r.code === 'EPERM' || r.code === 'EACCES', `${call}: code ${r.code}`);
      t.is(r.message, `permission denied: need root or CAP_SYS_PTRACE to ${action} ${tg.pid}`);
      t.truthy(r.syscall);
    }
    await untouched(t, tg, fdsBefore);
    // the same call works with privileges: the refusal was about permission
    arm(tg.pid).close();
  }),
);
