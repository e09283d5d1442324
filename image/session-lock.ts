// One writer per session. A writer (create/resume) holds the session: in this process through a
// registry, across processes through DIR/<id>/owner.lock holding the owner's pid. A lock whose
// pid is dead (kill -9, crash) is stale and taken over; readers (open, list, verify, export)
// take no lock.

import { promises as fsp, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { badState } from './store-error';

const held = new Set<string>();
const LOCK = 'owner.lock';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A killed owner whose parent has not reaped it yet (a zombie) holds nothing any more.
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return st[st.lastIndexOf(')') + 2] !== 'Z';
  } catch {
    return false;
  }
}

/** Pid of another live process holding the session (from its lock file), else undefined. */
async function otherOwner(sessionDir: string): Promise<number | undefined> {
  const text = await fsp.readFile(path.join(sessionDir, LOCK), 'utf8').catch(() => '');
  const pid = Number(text.trim());
  if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid) return undefined;
  return alive(pid) ? pid : undefined;
}

/** Pid of the live process holding the session (this one included), or undefined. */
export async function liveOwner(sessionDir: string): Promise<number | undefined> {
  return held.has(sessionDir) ? process.pid : otherOwner(sessionDir);
}

export async function acquireSession(sessionDir: string, id: string): Promise<void> {
  // Registry first and synchronously, so two streams of this process cannot both get past here.
  if (held.has(sessionDir)) throw badState(`session ${id} is in use by another stream of this process`);
  held.add(sessionDir);
  try {
    const owner = await otherOwner(sessionDir);
    if (owner !== undefined) throw badState(`session ${id} is in use by process ${owner}`);
    // Written in place: the pid is only a hint for other processes; the registry is the truth here.
    await fsp.writeFile(path.join(sessionDir, LOCK), `${process.pid}\n`, { mode: 0o600 });
  } catch (err) {
    held.delete(sessionDir);
    throw err;
  }
}

export async function releaseSession(sessionDir: string): Promise<void> {
  if (!held.delete(sessionDir)) return;
  await fsp.rm(path.join(sessionDir, LOCK), { force: true }).catch(() => undefined);
}
