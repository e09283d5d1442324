// The session report: one self-contained HTML page (inline CSS and SVG, no script, no external
// asset) with a session's figures and per-round charts, for people without Grafana. Drawn from
// what the receiver keeps on disk: the session's metadata and state, the round records (the
// sender's RoundEnd figures) and the sender's final Report.
//
// Every string in the page may come from a remote sender (command, host, reasons): all of it is
// escaped, and a Content-Security-Policy forbids scripts and fetches should escaping ever fail.

import type { Report } from '../../proto/messages';
import type { RoundEnd, SessionMeta } from '../../image/store-types';
import { formatBytes, formatRate, formatSeconds } from '../../common/units';
import { CHART_CSS, escapeXml as esc, renderChart } from './svg-chart';

export interface ReportRound extends RoundEnd {
  /** PRECOPY, STOP_AND_COPY or VERIFY_FIX, when known. */
  phase?: string;
  /** ISO 8601 time the round became durable. */
  endedAt?: string;
}

export interface SessionReportInput {
  meta: SessionMeta;
  /** receiving, committed, failed, aborted. */
  state: string;
  /** Why the session failed or was aborted. */
  reason?: string;
  imagePages?: number;
  rounds: ReportRound[];
  /** The sender's final Report, when it sent one. */
  report?: Partial<Report>;
  /** The sender's downtime target (0 or absent: unknown). */
  downtimeTargetSeconds?: number;
  /** ISO 8601; defaults to now. */
  generatedAt?: string;
}

const REPORT_STRINGS = ['stopReason', 'verify', 'result', 'error'] as const;
const REPORT_NUMBERS = ['downtimeSeconds', 'frozenSeconds', 'totalSeconds', 'bytesSent', 'memoryBytes', 'verifyMismatches'] as const;

/** The Report fields of a stored report record, type-checked (the record came over the network). */
export function reportFromRecord(rec: Record<string, unknown> | undefined): Partial<Report> | undefined {
  if (!rec || typeof rec !== 'object') return undefined;
  const out: Partial<Report> = {};
  for (const k of REPORT_STRINGS) if (typeof rec[k] === 'string') out[k] = rec[k] as string;
  for (const k of REPORT_NUMBERS) if (typeof rec[k] === 'number' && Number.isFinite(rec[k])) out[k] = rec[k] as number;
  return out;
}

const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? v : NaN);

const FORMATS = { bytes: formatBytes, seconds: formatSeconds, rate: formatRate };

/** The per-round charts: what each draws from a round record. */
const CHARTS: Array<{
  title: string;
  unit: keyof typeof FORMATS;
  /** Draw the downtime target line. */
  target?: boolean;
  log?: boolean;
  series: Array<{ name: string; kind: 'bar' | 'line'; color: string; value: (r: ReportRound, pageSize: number) => number }>;
}> = [
  { title: 'Dirty bytes per round', unit: 'bytes', series: [{ name: 'dirty', kind: 'bar', color: '#ff7f0e', value: (r, ps) => num(r.dirtyPages) * ps }] },
  {
    title: 'Bytes sent per round',
    unit: 'bytes',
    series: [
      { name: 'page bytes', kind: 'bar', color: '#aec7e8', value: (r) => num(r.rawBytes) },
      { name: 'on the wire', kind: 'bar', color: '#1f77b4', value: (r) => num(r.wireBytes) },
    ],
  },
  { title: 'Round duration', unit: 'seconds', series: [{ name: 'duration', kind: 'bar', color: '#2ca02c', value: (r) => num(r.durationSeconds) }] },
  {
    title: 'Expected downtime vs. target',
    unit: 'seconds',
    target: true,
    log: true, // round 0's estimate is orders of magnitude above the last rounds'
    series: [{ name: 'expected downtime', kind: 'line', color: '#9467bd', value: (r) => num(r.expectedDowntimeSeconds) }],
  },
  {
    title: 'Dirty rate vs. transfer rate',
    unit: 'rate',
    series: [
      { name: 'dirty rate', kind: 'line', color: '#ff7f0e', value: (r) => num(r.dirtyRateBytesPerSecond) },
      { name: 'transfer rate', kind: 'line', color: '#1f77b4', value: (r) => num(r.transferRateBytesPerSecond) },
    ],
  },
];
const orDash = (v: number, f: (x: number) => string) => (Number.isFinite(v) ? f(v) : '–');

export function renderSessionReport(input: SessionReportInput): string {
  const { meta, rounds } = input;
  const r = input.report ?? {};
  const ps = meta.pageSize;
  const target = num(input.downtimeTargetSeconds) > 0 ? num(input.downtimeTargetSeconds) : undefined;
  const labels = rounds.map((x) => String(x.round));
  const downtime = num(r.downtimeSeconds);
  const result = r.result || input.state;
  const title = `precopy session ${meta.sessionId}`;

  const verdict: string[] = [`<strong class="result result-${esc(result.replace(/[^a-z]/g, ''))}">${esc(result)}</strong>`];
  if (Number.isFinite(downtime)) {
    let d = `downtime ${formatSeconds(downtime)}`;
    if (target !== undefined) d += ` (target ${formatSeconds(target)}: ${downtime <= target ? 'met' : 'missed'})`;
    verdict.push(esc(d));
  }
  if (r.verify) verdict.push(esc(`verify ${r.verify}`));
  verdict.push(esc(`${rounds.length} round${rounds.length === 1 ? '' : 's'}`));

  const facts: Array<[string, string]> = [
    ['Session', meta.sessionId],
    ['State', input.state + (input.reason ? `: ${input.reason}` : '')],
    ['Process', `${meta.command || '?'} (pid ${meta.pid}) on ${meta.sourceHost || 'unknown host'}`],
    ['Source kernel', meta.kernel || '?'],
    ['Started', meta.createdAt],
    ['Memory at round 0', formatBytes(meta.memoryBytes)],
    ['Page size', `${ps} bytes`],
  ];
  if (input.imagePages !== undefined) facts.push(['Image', `${input.imagePages} pages (${formatBytes(input.imagePages * ps)})`]);
  if (r.result !== undefined) {
    facts.push(
      ['Result', r.result],
      ['Stop reason', r.stopReason || '–'],
      ['Final downtime', orDash(downtime, formatSeconds)],
      ['Downtime target', target !== undefined ? formatSeconds(target) : 'not given'],
      ['Frozen', orDash(num(r.frozenSeconds), formatSeconds)],
      ['Total time', orDash(num(r.totalSeconds), formatSeconds)],
      ['Bytes sent', orDash(num(r.bytesSent), formatBytes)],
      ['Verify', `${r.verify || '–'}${num(r.verifyMismatches) > 0 ? ` (${r.verifyMismatches} mismatching pages)` : ''}`],
    );
    if (r.error) facts.push(['Error', r.error]);
  } else {
    facts.push(['Report', 'the sender sent no final report']);
  }

  const charts =
    rounds.length === 0
      ? ['<p class="empty">No round was recorded for this session.</p>']
      : CHARTS.map((c) =>
          renderChart({
            title: c.title,
            labels,
            series: c.series.map((x) => ({ name: x.name, kind: x.kind, color: x.color, values: rounds.map((r) => x.value(r, ps)) })),
            target: c.target && target !== undefined ? { value: target, name: 'target' } : undefined,
            format: FORMATS[c.unit],
            log: c.log,
            binary: c.unit !== 'seconds',
          }),
        );

  const head = [
    'Round',
    'Phase',
    'Dirty',
    'Zero pages',
    'Page bytes',
    'Wire bytes',
    'Duration',
    'Dirty rate',
    'Transfer rate',
    'Expected downtime',
    'Remaining',
    'Throttle',
  ];
  const rows = rounds.map((x) =>
    [
      String(x.round),
      x.phase ?? '',
      formatBytes(num(x.dirtyPages) * ps),
      String(x.zeroPages),
      formatBytes(num(x.rawBytes)),
      formatBytes(num(x.wireBytes)),
      formatSeconds(num(x.durationSeconds)),
      formatRate(num(x.dirtyRateBytesPerSecond)),
      formatRate(num(x.transferRateBytesPerSecond)),
      formatSeconds(num(x.expectedDowntimeSeconds)),
      formatBytes(num(x.remainingBytes)),
      `${num(x.throttlePercent)}%`,
    ]
      .map((c) => `<td>${esc(c)}</td>`)
      .join(''),
  );

  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="precopy receiver report">
<title>${esc(title)}</title>
<style>
body { font: 14px/1.4 sans-serif; margin: 24px; color: #222; background: #fafafa; }
h1 { font-size: 20px; margin: 0 0 4px; }
.verdict { margin: 0 0 16px; color: #444; }
.result { text-transform: uppercase; }
.result-committed { color: #2ca02c; } .result-failed, .result-aborted { color: #d62728; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0 0 20px; }
dl.facts dt { color: #666; } dl.facts dd { margin: 0; word-break: break-all; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 12px; margin-bottom: 20px; }
table.rounds { border-collapse: collapse; font-size: 12px; background: #fff; }
table.rounds th, table.rounds td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
table.rounds th { background: #f0f0f0; }
footer { margin-top: 16px; color: #888; font-size: 12px; }
${CHART_CSS}
</style>
</head>
<body>
<h1>${esc(title)}</h1>
<p class="verdict">${verdict.join(' · ')}</p>
<dl class="facts">
${facts.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join('\n')}
</dl>
<section class="charts">
${charts.join('\n')}
</section>
<table class="rounds">
<thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead>
<tbody>
${rows.map((row) => `<tr>${row}</tr>`).join('\n')}
</tbody>
</table>
<footer>Generated ${esc(input.generatedAt ?? new Date().toISOString())} by <code>receiver report</code>.</footer>
</body>
</html>
`;
}
