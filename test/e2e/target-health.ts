// The target after a migration failed, was aborted or had its sender SIGKILLed: it must run on as if
// nothing happened. Read from /proc with the tests' own code (never the sender's), plus the
// target's own `check` of its memory:
//   - alive, no thread traced (TracerPid 0 on every thread) nor stopped (state t/T);
//   - no userfaultfd among its fds (the one arming injects is closed again) and no uffd-wp
//     registration left on its main area (`uw` in VmFlags);
//   - its pages internally consistent (`check`: bad=0) and its writers still writing.

import type { ExecutionContext } from 'ava';
import * as fs from 'node:fs';
import { readMem, threadStates, vmFlags } from '../helpers/procmem';
import type { Target } from '../helpers/target';
import { threadTracers, waitFor } from '../native/native-helpers';

/** fds of pid that are a userfaultfd (`anon_inode:[userfaultfd]`). */
export function userfaultfds(pid: number): number[] {
  const out: number[] = [];
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`).includes('userfaultfd')) out.push(Number(fd));
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

/** Sum of the generation headers of `pages` main pages from `base`: grows with every page a
 *  writer rewrites (the test workload's page header is {u32 index, u32 generation}). */
export function generationSum(pid: number, base: number, pages: number): number {
  const chunk = 1024;
  let sum = 0;
  for (let p = 0; p < pages; p += chunk) {
    const n = Math.min(chunk, pages - p);
    const mem = readMem(pid, base + p * 4096, n * 4096);
    for (let i = 0; i < n; i++) sum += mem.readUInt32LE(i * 4096 + 4);
  }
  return sum;
}

export interface UnharmedOptions {
  /** Main area to look at (default: the target's first program's; pass the new one after exec). */
  main?: { base: number; pages: number };
  /** The target runs writer threads: they must still make progress. */
  writers?: boolean;
  /** Prefix of assertion messages (which kill, which case). */
  label?: string;
  /** The process runs bin/target (default): its main area and its own `check` are looked at. */
  workload?: boolean;
}

/**
 * Assert the target runs on unharmed. A tracer may still be finishing (an arming helper whose
 * sender was killed completes its injection first; a capture helper lets the threads go once it
 * sees its sender gone): that is waited for, then everything must hold at once.
 */
export async function assertUnharmed(t: ExecutionContext, target: Target, opts: UnharmedOptions = {}): Promise<void> {
  const label = opts.label ? `${opts.label}: ` : '';
  const { base, pages } = opts.main ?? target;
  t.true(target.alive, `${label}the target is alive`);
  // A helper the killed sender started may still be seizing the threads when it sees its sender gone
  // (then it lets them go): wait for untraced and running to hold together, not one after the other.
  const stopped = () => threadStates(target.pid).filter((s) => s.state === 't' || s.state === 'T');
  await waitFor(
    `${label}every thread of ${target.pid} untraced and running`,
    () => threadTracers(target.pid).every((x) => x === 0) && stopped().length === 0,
    20_000,
  ).catch(() => undefined); // what still holds is reported below
  t.deepEqual(
    threadTracers(target.pid).filter((x) => x !== 0),
    [],
    `${label}no thread left traced`,
  );
  t.deepEqual(stopped(), [], `${label}no thread left stopped`);
  t.deepEqual(userfaultfds(target.pid), [], `${label}no userfaultfd left in its fds`);
  if (opts.workload === false) return;
  t.false(vmFlags(target.pid, base)?.includes('uw') ?? true, `${label}no uffd-wp registration left on its main area`);
  if (opts.writers) {
    const before = generationSum(target.pid, base, pages);
    await waitFor(`${label}the writers of ${target.pid} write on`, () => generationSum(target.pid, base, pages) > before, 20_000);
  }
  t.deepEqual(await target.check(), { bad: 0 }, `${label}its pages are consistent`);
}
