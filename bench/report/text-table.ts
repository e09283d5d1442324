// Plain-text tables: columns padded to their widest cell, numbers right-aligned.

import type { Stat } from '../lib/stats';

/** "median (min-max)" with `digits` decimals; "-" when there is no figure. */
export function fmtStat(s: Stat | undefined, digits = 2): string {
  if (!s || !Number.isFinite(s.median)) return '-';
  return `${s.median.toFixed(digits)} (${s.min.toFixed(digits)}-${s.max.toFixed(digits)})`;
}

export function fmtNum(n: number, digits = 2, suffix = ''): string {
  return Number.isFinite(n) ? `${n.toFixed(digits)}${suffix}` : '-';
}

export function renderTable(title: string, headers: string[], rows: string[][], notes: string[] = []): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const numeric = headers.map((_, i) => rows.length > 0 && rows.every((r) => /^[-\d.(]/.test(r[i] ?? '-')));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i > 0 && numeric[i] ? c.padStart(widths[i]) : c.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  return [title, line(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line), ...notes.map((n) => `  ${n}`), ''].join('\n');
}
