// After the link broke between asking for the start and hearing the answer, the decision is
// unknown: ask again (Resolve, each time on a fresh connection) for a while. The receiver may be
// restarting, or still restoring ("starting").

import type { HostPort } from '../../common/cli';
import type { LinkSecurity } from '../../common/link-security';
import { logger } from '../../common/log';
import type { HandoverRecord } from '../../proto/messages';
import { askResolve } from './resolve-client';

const log = logger('handover');

/** The decided record (running or rolled-back), or null when none came within `seconds`. */
export async function resolveDecision(address: HostPort, security: LinkSecurity, sessionId: string, seconds: number): Promise<HandoverRecord | null> {
  const deadline = Date.now() + seconds * 1000;
  let wait = 200;
  for (;;) {
    try {
      const r = await askResolve(address, security, sessionId, Math.max(1000, Math.min(5000, deadline - Date.now())));
      if (r.state !== 'starting') return r;
      log.debug(`session ${sessionId}: the receiver is still starting the process`);
    } catch (err) {
      log.debug(`session ${sessionId}: resolve failed: ${(err as Error).message}`);
    }
    if (Date.now() + wait > deadline) return null;
    await new Promise((r) => setTimeout(r, wait));
    wait = Math.min(wait * 2, 2000);
  }
}
