// What a receiver restart reads to settle a `starting` handover record: does the image's pid
// exist here as a live, untraced process running the image's program? A zombie, a process still
// held by a (dead) restorer's ptrace, or another program that took the pid is not it.

import { promises as fsp } from 'node:fs';

async function once(pid: number, exePath: string): Promise<boolean | null> {
  try {
    const status = await fsp.readFile(`/proc/${pid}/status`, 'utf8');
    const state = /^State:\s+(\S)/m.exec(status)?.[1];
    if (state === 'Z' || state === 'X') return false;
    // A tracer: the restorer that made it is going away and its SIGKILL is on the way.
    if (/^TracerPid:\s+(\d+)/m.exec(status)?.[1] !== '0') return null;
    return (await fsp.readlink(`/proc/${pid}/exe`)) === exePath;
  } catch {
    return false;
  }
}

/** True when pid is the image's process, alive. Waits a moment out a process still traced. */
export async function liveImageProcess(pid: number, exePath: string): Promise<boolean> {
  if (!Number.isInteger(pid) || pid <= 0 || exePath === '') return false;
  for (let i = 0; i < 20; i++) {
    const v = await once(pid, exePath);
    if (v !== null) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}
