// The verify pass (stop-and-copy, target still frozen): read the frozen target's populated memory,
// hash every page and compare with what the receiver holds according to SentPages — whose digest
// the receiver has just recomputed from its disk and accepted at commit. A page that differs is a
// write the tracking lost (docs/design.md, Kernel facts: MADV_DONTNEED, THP); it is re-sent, never
// silently kept wrong. Pages populated but never sent must be all-zero (the image gives zeros for
// an anonymous page it does not hold).
//
// The target stays frozen during the pass, so it is pipelined: batch k+1 is read (libuv pool)
// while batch k is hashed and compared (this thread), with two buffers.

import { logger } from '../common/log';
import { zeroPageHash } from '../common/image-digest';
import { hashPages, readPagesAsync } from '../native';
import { appendPage } from '../common/page-runs';
import { ProcMem } from './stage/proc-mem';
import type { SentPages } from './stage/sent-pages';
import { runsToBatches, type RunBatch } from './tracking/run-batch';

const log = logger('verify');

interface ReadBatch {
  batch: RunBatch;
  into: Buffer;
  /** 1 per page read, 0 per page that could not be read. */
  ok: Uint8Array;
}

export interface VerifyResult {
  /** Runs (start, pages) of populated pages whose content differs from the image. */
  differ: number[];
  /** Runs of populated pages that could not be read even through /proc/PID/mem (not verified). */
  unreadable: number[];
}

export async function verifyFrozen(pid: number, pageSize: number, populated: readonly number[], sent: SentPages, maxPages: number): Promise<VerifyResult> {
  const zero = zeroPageHash(pageSize);
  const bufs = [Buffer.allocUnsafe(maxPages * pageSize), Buffer.allocUnsafe(maxPages * pageSize)];
  const hashes = new BigUint64Array(maxPages);
  const differ: number[] = [];
  const unreadable: number[] = [];
  let checked = 0;
  const mem = new ProcMem(pid); // what process_vm_readv refuses (PROT_NONE data) it reads

  const read = async (batch: RunBatch, buf: Buffer): Promise<ReadBatch> => {
    const ranges = new Float64Array(batch.runs.length);
    for (let i = 0; i < batch.runs.length; i += 2) {
      ranges[i] = batch.runs[i];
      ranges[i + 1] = batch.runs[i + 1] * pageSize;
    }
    const into = buf.subarray(0, batch.pages * pageSize);
    const failed = new Set((await readPagesAsync(pid, ranges, into)).failed);
    const ok = new Uint8Array(batch.pages).fill(1);
    for (let r = 0, p = 0; r < batch.runs.length / 2; p += batch.runs[2 * r + 1], r++) {
      if (failed.has(r)) ok.set(mem.readPages(batch.runs[2 * r], batch.runs[2 * r + 1], pageSize, into, p * pageSize), p);
    }
    return { batch, into, ok };
  };

  const compare = ({ batch, into, ok }: ReadBatch): void => {
    hashPages(into, pageSize, hashes);
    for (let r = 0, p = 0; r < batch.runs.length / 2; r++) {
      for (let k = 0, addr = batch.runs[2 * r]; k < batch.runs[2 * r + 1]; k++, p++, addr += pageSize) {
        if (!ok[p]) appendPage(unreadable, addr, pageSize);
        else if (hashes[p] !== (sent.hashAt(addr) ?? zero)) appendPage(differ, addr, pageSize);
      }
    }
    checked += batch.pages;
  };

  try {
    let pending: Promise<ReadBatch> | null = null;
    let i = 0;
    for (const batch of runsToBatches(populated, maxPages, pageSize)) {
      const next = read(batch, bufs[i++ % 2]);
      next.catch(() => {}); // awaited below; do not let an earlier failure leave it unhandled
      if (pending) compare(await pending);
      pending = next;
    }
    if (pending) compare(await pending);
  } finally {
    mem.close();
  }
  if (unreadable.length > 0) log.warn(`${unreadable.length / 2} runs of populated pages could not be read while frozen (not verified)`);
  log.debug(`checked ${checked} pages, ${differ.length / 2} runs differ`);
  return { differ, unreadable };
}
