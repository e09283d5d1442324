// The end of the source process in a handover: it is stopped (SIGSTOP, no tracer) from the moment
// the sender asks the receiver to start it until the decision is known; then it is killed (the
// process runs at the destination) or continued (it does not). Never both, never neither once
// decided (docs/design.md, Handover).

import type { HandoverRecord } from '../../proto/messages';

/** The destination runs the process: the stopped source goes. */
export function endSource(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

/** Nothing runs at the destination: the source runs on (`before`: what must be undone first,
 *  e.g. the write-protect tracking the sender left registered). */
export function resumeSource(pid: number, before?: () => void): void {
  before?.();
  try {
    process.kill(pid, 'SIGCONT');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

/** Apply a decided record; returns what was done, or null when it is not decided yet. */
export function applyRecord(r: HandoverRecord, pid: number, beforeResume?: () => void): 'killed' | 'resumed' | null {
  if (r.state === 'running') {
    endSource(pid);
    return 'killed';
  }
  if (r.state === 'rolled-back') {
    resumeSource(pid, beforeResume);
    return 'resumed';
  }
  return null;
}
