// The on-disk format of one session, DIR/<id>/:
//   meta.json          SessionMeta, written once at creation
//   state.json         the durable state: state, last durable round, round records, current
//                      layout, and the window index naming which bitmap generation holds each
//                      window's presence bitmaps. Replaced atomically; its rename is the commit
//                      point of every round and of every state change.
//   chunks/<hex>.dat   sparse data files, one per 1 GiB address window (see chunk-files.ts)
//   bitmaps/<gen>.bm   presence bitmap generations (see page-windows.ts)
//   manifest.json      the committed image (layout, threads, digest, window index); valid only
//                      while state.json says committed with the same commit number
//   journal.jnl        the last stop-and-copy or fix-up round's pages (see page-journal.ts), while
//                      state.json names it
//   report.json        the sender's final report
//   owner.lock         pid of the writer holding the session (see session-lock.ts)

import * as path from 'node:path';
import type { Vma } from '../common/vma';
import type { ImageManifest, SessionMeta, SessionState, StoredRound } from './store-types';
import { decodeProcessStateValue } from './process-state';
import { invalid } from './store-error';
import type { JournalRef } from './page-journal';

export const FORMAT = 1;

/** [window index, generation, slot] */
export type WindowIndex = [number, number, number][];

export interface StateFile {
  format: number;
  state: SessionState;
  lastDurableRound: number;
  updatedAt: string;
  reason?: string;
  /** Highest bitmap generation that may be referenced; new generations count up from it. */
  gen: number;
  /** Commits made; manifest.json is the committed image only if its commit equals this. */
  commit: number;
  layout: Vma[];
  windows: WindowIndex;
  imagePages: number;
  dataPages: number;
  rounds: StoredRound[];
  /** A journaled round's pages may not be durable in the chunk files yet: a writer opening the
   *  session replays this journal first (page-journal.ts). */
  journal?: JournalRef;
}

export interface ManifestFile {
  format: number;
  sessionId: string;
  commit: number;
  committedAt: string;
  pageSize: number;
  layout: Vma[];
  /** Registers as base64; xstate only when the sender captured the XSAVE area. */
  threads: { tid: number; regs: string; fpregs: string; xstate?: string }[];
  /** 16 hex digits. */
  imageDigest: string;
  imagePages: number;
  dataPages: number;
  windows: WindowIndex;
  /** A restorable image's process state, as image/process-state.ts encodes it (JSON). */
  process?: unknown;
}

export function sessionFiles(dir: string) {
  return {
    dir,
    meta: path.join(dir, 'meta.json'),
    state: path.join(dir, 'state.json'),
    manifest: path.join(dir, 'manifest.json'),
    report: path.join(dir, 'report.json'),
    chunks: path.join(dir, 'chunks'),
    bitmaps: path.join(dir, 'bitmaps'),
    generation: (gen: number) => path.join(dir, 'bitmaps', `${String(gen).padStart(8, '0')}.bm`),
  };
}

export type SessionFiles = ReturnType<typeof sessionFiles>;

/** Generation number of a bitmap file name, or undefined for other names. */
export function generationOf(name: string): number | undefined {
  const m = /^(\d{8,})\.bm$/.exec(name);
  return m ? Number(m[1]) : undefined;
}

/** manifest.json → ImageManifest (registers as Buffers, digest as bigint). */
export function decodeManifest(m: ManifestFile, meta: SessionMeta): ImageManifest {
  if (m.format !== FORMAT) throw invalid(`manifest format ${m.format} is not supported`);
  if (!/^[0-9a-f]{16}$/.test(m.imageDigest)) throw invalid('manifest digest is malformed');
  return {
    sessionId: m.sessionId,
    meta,
    commit: m.commit,
    committedAt: m.committedAt,
    layout: m.layout,
    threads: m.threads.map((t) => ({
      tid: t.tid,
      regs: Buffer.from(t.regs, 'base64'),
      fpregs: Buffer.from(t.fpregs, 'base64'),
      ...(t.xstate ? { xstate: Buffer.from(t.xstate, 'base64') } : {}),
    })),
    imageDigest: BigInt(`0x${m.imageDigest}`),
    imagePages: m.imagePages,
    dataPages: m.dataPages,
    processState: m.process === undefined ? undefined : decodeProcessStateValue(m.process),
  };
}
