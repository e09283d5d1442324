// The durable decision of a handover: DIR/SESSION/handover.json, replaced atomically like
// state.json. It is the one fact that says whether the process runs here, so that a sender that
// lost the link (or died) can learn whether to end or resume the source (docs/design.md, Handover).
//   starting     the start began; not decided yet (a receiver restart decides from facts)
//   running      the process runs here with `pid`: the source must be ended
//   rolled-back  nothing runs here and nothing will: the source must run on

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { atomicWrite } from '../../image/durable-file';
import type { HandoverRecord, HandoverState } from '../../proto/messages';

export type { HandoverRecord, HandoverState };

export const RECORD_FILE = 'handover.json';
const STATES: readonly HandoverState[] = ['starting', 'running', 'rolled-back'];

export interface StoredRecord extends HandoverRecord {
  /** The image's pid and program: what a restart compares a live process with. */
  expectedPid: number;
  exePath: string;
  updatedAt: string;
}

export const recordPath = (imagesDir: string, id: string): string => path.join(imagesDir, id, RECORD_FILE);

export async function writeRecord(imagesDir: string, id: string, r: Omit<StoredRecord, 'updatedAt'>): Promise<void> {
  await atomicWrite(recordPath(imagesDir, id), `${JSON.stringify({ ...r, updatedAt: new Date().toISOString() })}\n`);
}

/** The record of session `id`, or null when there is none (the handover never began). */
export async function readRecord(imagesDir: string, id: string): Promise<StoredRecord | null> {
  let text: string;
  try {
    text = await fsp.readFile(recordPath(imagesDir, id), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  const o = JSON.parse(text) as StoredRecord;
  if (!STATES.includes(o.state) || !Number.isInteger(o.pid)) throw new Error(`${recordPath(imagesDir, id)} is not a handover record`);
  return o;
}
