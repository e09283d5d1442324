// The switch of a handover (docs/design.md, Handover), once the image is committed and the source
// stopped durably (SIGSTOP, no tracer: it stays stopped if we die): ask the receiver to start the
// process, then end the source (it runs there) or continue it (it does not). If the answer is
// lost, the receiver's durable record decides (Resolve); if even that cannot be learned, the
// source stays stopped and the user gets the one command that settles it later.

import { UserError } from '../../common/errors';
import { handoverDiePoint } from '../../common/fault-injection';
import { formatHostPort, type HostPort } from '../../common/cli';
import type { LinkSecurity } from '../../common/link-security';
import { logger } from '../../common/log';
import type { HandoverResult } from '../../proto/messages';
import { applyRecord, endSource, resumeSource } from './source-fate';
import { resolveDecision } from './resolve-loop';

const log = logger('handover');

/** Waiting for the receiver's answer: the restore copies the whole image into the new process. */
const START_TIMEOUT_MS = 300_000;
/** Asking again after the link broke. */
export const RESOLVE_SECONDS = 30;

export interface HandoverAsk {
  pid: number;
  sessionId: string;
  address: HostPort;
  security: LinkSecurity;
  /** The flags to repeat in `sender resolve` (TLS, token). */
  securityFlags: string[];
  ask(timeoutMs: number): Promise<HandoverResult>;
  /** Break the link as a lost connection would (the test hook below). */
  cut(why: string): void;
  /** Runs before the source is continued (never before it is killed). */
  beforeResume?: () => void;
}

export interface HandoverOutcome {
  destinationPid: number;
  restoreSeconds: number;
  /** The receiver built the process while the rounds arrived (false: a full restore, or unknown). */
  prebuilt: boolean;
}

/** The command that settles a handover whose decision the sender could not learn. */
export function resolveCommand(a: Pick<HandoverAsk, 'address' | 'sessionId' | 'pid' | 'securityFlags'>): string {
  return ['sender resolve --to', formatHostPort(a.address), '--session', a.sessionId, '--pid', String(a.pid), ...a.securityFlags].join(' ');
}

/** Ask, then settle the source. Resolves when the process runs at the destination (the source
 *  is killed); otherwise throws one line saying what became of the source. */
export async function runHandover(a: HandoverAsk): Promise<HandoverOutcome> {
  let result: HandoverResult;
  const fault = handoverDiePoint();
  // Test-only: die with the source stopped and nothing asked yet.
  if (fault === 'before-ask') process.kill(process.pid, 'SIGKILL');
  try {
    const answer = a.ask(START_TIMEOUT_MS);
    // Test-only: die, or lose the link, with the ask on its way and no answer yet (the hard case
    // of the switch).
    if (fault === 'after-ask' || fault === 'cut-after-ask') {
      // A few ms: the ask leaves, and no answer is back yet (a prebuilt start takes tens of ms).
      await new Promise((r) => setTimeout(r, 5));
      if (fault === 'after-ask') process.kill(process.pid, 'SIGKILL');
      else a.cut('link cut by PRECOPY_FAULT_HANDOVER_DIE=cut-after-ask');
    }
    result = await answer;
  } catch (err) {
    // Whatever failed once the ask may have left (a broken link, a deadline, anything): only the
    // receiver's record can say whether the process runs there.
    return settleUnknown(a, (err as Error).message);
  }
  if (result.ok) {
    endSource(a.pid);
    return { destinationPid: result.pid, restoreSeconds: result.restoreSeconds, prebuilt: result.prebuilt };
  }
  resumeSource(a.pid, a.beforeResume);
  throw new UserError(`handover failed: the receiver did not start the process (${result.message}); the source process ${a.pid} runs on`, 1);
}

async function settleUnknown(a: HandoverAsk, why: string): Promise<HandoverOutcome> {
  log.warn(`the link broke after asking for the start (${why}); asking the receiver what it decided`);
  const r = await resolveDecision(a.address, a.security, a.sessionId, RESOLVE_SECONDS);
  if (r === null) {
    throw new UserError(
      `handover undecided: the link broke after asking the receiver to start the process (${why}) and it could not be asked again within ` +
        `${RESOLVE_SECONDS}s; the source process ${a.pid} is left stopped; finish with: ${resolveCommand(a)}`,
      1,
    );
  }
  const done = applyRecord(r, a.pid, a.beforeResume);
  if (done === 'killed') return { destinationPid: r.pid, restoreSeconds: 0, prebuilt: false };
  throw new UserError(`handover failed: the receiver did not start the process (${r.reason}); the source process ${a.pid} runs on`, 1);
}
