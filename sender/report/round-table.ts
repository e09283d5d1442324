// The per-round table: one line per round as it finishes, so a user watches convergence live.
// Columns: round, phase, dirty pages, bytes sent (wire), duration, dirty rate, bandwidth,
// expected downtime, throttle.

import type { RoundRecord } from './figures';
import { formatBytes, formatRate, formatSeconds } from '../../common/units';

const COLUMNS: [string, number][] = [
  ['round', 5],
  ['phase', 13],
  ['dirty pages', 12],
  ['sent', 11],
  ['duration', 10],
  ['dirty rate', 13],
  ['bandwidth', 13],
  ['exp. downtime', 13],
  ['throttle', 8],
];

const PHASE_NAMES: Record<RoundRecord['phase'], string> = {
  PRECOPY: 'pre-copy',
  STOP_AND_COPY: 'stop-and-copy',
  VERIFY_FIX: 'verify-fix',
};

function row(cells: string[]): string {
  return cells.map((c, i) => (i === 1 ? c.padEnd(COLUMNS[i][1]) : c.padStart(COLUMNS[i][1]))).join('  ');
}

export function roundTableHeader(): string {
  return row(COLUMNS.map(([name]) => name));
}

export function roundTableLine(r: RoundRecord): string {
  const precopy = r.phase === 'PRECOPY';
  return row([
    String(r.round),
    PHASE_NAMES[r.phase],
    String(r.dirtyPages),
    formatBytes(r.wireBytes),
    formatSeconds(r.durationSeconds),
    r.round === 0 || !precopy ? '-' : formatRate(r.dirtyRateBytesPerSecond),
    formatRate(r.bandwidthBytesPerSecond),
    precopy ? formatSeconds(r.expectedDowntimeSeconds) : '-',
    r.throttlePercent > 0 ? `${r.throttlePercent}%` : '-',
  ]);
}

export function roundTable(rounds: readonly RoundRecord[]): string {
  return [roundTableHeader(), ...rounds.map(roundTableLine)].join('\n');
}
