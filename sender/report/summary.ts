// The closing summary (human lines) and the --json document. Both come from one MigrationSummary.

import { verifyText, type HandoverFigures, type MigrationSummary } from './figures';
import { formatBytes, formatSeconds } from '../../common/units';

export function summaryLines(s: MigrationSummary): string[] {
  const ratio = s.memoryBytes > 0 ? (s.bytesSent / s.memoryBytes).toFixed(2) : '-';
  const lines = [
    `session ${s.sessionId}: pid ${s.pid} committed to ${s.to}`,
    `rounds:      ${s.precopyRounds} pre-copy + stop-and-copy (stopped: ${s.stopReason}: ${s.stopWhy})`,
    `downtime:    ${formatSeconds(s.downtimeSeconds)} (target ${formatSeconds(s.downtimeTargetSeconds)}), ` + `frozen ${formatSeconds(s.frozenSeconds)}`,
    `total time:  ${formatSeconds(s.totalSeconds)}`,
    `sent:        ${formatBytes(s.bytesSent)} on the wire for ${formatBytes(s.memoryBytes)} of memory (${ratio}x), ` +
      `compression ${s.compressionRatio.toFixed(2)}:1`,
    `verify:      ${verifyText(s.verify)}`,
    `after:       target ${s.after === 'resume' ? 'resumed' : s.after === 'stop' ? 'left stopped (SIGSTOP)' : 'killed'}`,
  ];
  const h = s.handover;
  if (h) {
    lines.splice(-1, 1, `handover:    pid ${h.destinationPid} runs at the destination; source killed`, `             ${handoverDowntimeText(h)}`);
  }
  if (s.maxThrottlePercent > 0) lines.splice(2, 0, `throttle:    up to ${s.maxThrottlePercent}% (auto-converge)`);
  if (s.reconnects > 0) lines.splice(-3, 0, `reconnects:  ${s.reconnects} (link broken, session resumed)`);
  return lines;
}

/** A handover's downtime and its split; "the rest" is mostly the start request's round trip. */
export function handoverDowntimeText(h: HandoverFigures): string {
  const rest = Math.max(0, h.totalDowntimeSeconds - h.freezeToCommitSeconds - h.verifySeconds - h.restoreSeconds);
  return (
    `downtime ${formatSeconds(h.totalDowntimeSeconds)} = freeze to commit ${formatSeconds(h.freezeToCommitSeconds)} ` +
    `(freeze ${formatSeconds(h.freezeSeconds)}, capture ${formatSeconds(h.captureSeconds)}, final round ${formatSeconds(h.finalRoundSeconds)}, ` +
    `commit ${formatSeconds(h.commitSeconds)}), verify ${formatSeconds(h.verifySeconds)}, ` +
    `restore ${formatSeconds(h.restoreSeconds)}${h.prebuilt ? ' (built during pre-copy)' : ''}, the rest ${formatSeconds(rest)}`
  );
}

/** The --json document: the summary itself, every figure in base units (bytes, seconds). */
export function summaryJson(s: MigrationSummary): string {
  return JSON.stringify(s, null, 2);
}
