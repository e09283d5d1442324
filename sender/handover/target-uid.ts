// The real uid of the target, sent in SessionStart so that a receiver with --handover-users can
// refuse a handover before anything is frozen (it checks the captured credentials again later).

import * as fs from 'node:fs';

export function targetUid(pid: number): number {
  const m = /^Uid:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}
