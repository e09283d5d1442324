// A handed-over process is a child of the receiver that made it (the restorer's clone3), and Node
// never waits for children it did not spawn: without this, one that exits would stay a zombie
// until the receiver exits. Its life is not tied to ours (the restore clears the death signal;
// if we exit it is reparented), we only collect its exit status. `ended` is told either way the
// process stops being ours (reaped, or not our child any more), so that a count of handed-over
// processes running here goes down again (receiver-metrics.ts).

import { logger } from '../../common/log';
import { reapChild } from '../../native';

const log = logger('handover');
const POLL_MS = 2000;

export function reapWhenDone(pid: number, session: string, ended: () => void = () => undefined): void {
  const timer = setInterval(() => {
    let exit;
    try {
      exit = reapChild(pid, false);
    } catch {
      // Not our child any more (or never was): nothing to collect.
      clearInterval(timer);
      ended();
      return;
    }
    if (exit === null) return;
    clearInterval(timer);
    ended();
    log.info(`session ${session}: the handed-over process ${pid} ended (${JSON.stringify(exit)})`);
  }, POLL_MS);
  timer.unref(); // never keeps the receiver alive on its own
}
