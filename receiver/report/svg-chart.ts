// Inline SVG charts for the session report: one value per round, drawn as bars or as a line,
// with an optional dashed target line. Plain SVG markup (no script, no external assets), so the
// page renders the same in any browser, offline, and can be mailed or archived as one file.
// Hover text uses SVG <title> elements, which browsers show without JavaScript.

export interface Series {
  name: string;
  /** One value per round (same length as the chart's labels); NaN = no value. */
  values: number[];
  /** CSS colour. */
  color: string;
  kind: 'bar' | 'line';
}

export interface ChartSpec {
  title: string;
  /** X axis labels, one per round ("0", "1", ...). */
  labels: string[];
  series: Series[];
  /** Formats a value for ticks and hover text. */
  format: (v: number) => string;
  /** A horizontal reference (the downtime target), drawn dashed. */
  target?: { value: number; name: string };
  /** Log scale: for values spanning orders of magnitude (expected downtime from round 0 on). */
  log?: boolean;
  /** Values are bytes: round the axis top in powers of 1024 so ticks read 25 MiB, not 23.8 MiB. */
  binary?: boolean;
}

const W = 560;
const H = 240;
const M = { top: 28, right: 12, bottom: 34, left: 74 };
const PW = W - M.left - M.right;
const PH = H - M.top - M.bottom;

/** Escape text for HTML and SVG content and attribute values. */
export function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

const fmt = (n: number) => (Math.round(n * 10) / 10).toString();

/** 1, 2 or 5 times a power of ten, at least x. */
function niceCeil(x: number): number {
  if (!(x > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 2, 5, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}

interface Scale {
  y: (v: number) => number;
  ticks: number[];
}

function linearScale(max: number, binary: boolean): Scale {
  const unit = binary && max >= 1024 ? 1024 ** Math.floor(Math.log(max) / Math.log(1024)) : 1;
  const top = niceCeil(max / unit) * unit;
  return { y: (v) => M.top + PH - (Math.max(0, v) / top) * PH, ticks: [0, top / 4, top / 2, (3 * top) / 4, top] };
}

function logScale(min: number, max: number): Scale {
  const lo = Math.floor(Math.log10(min));
  const hi = Math.max(lo + 1, Math.ceil(Math.log10(max)));
  const y = (v: number) => M.top + PH - ((Math.log10(Math.max(v, 10 ** lo)) - lo) / (hi - lo)) * PH;
  const ticks: number[] = [];
  const step = Math.max(1, Math.ceil((hi - lo) / 6));
  for (let e = lo; e <= hi; e += step) ticks.push(10 ** e);
  return { y, ticks };
}

export function renderChart(spec: ChartSpec): string {
  const n = spec.labels.length;
  const all = spec.series.flatMap((s) => s.values).concat(spec.target ? [spec.target.value] : []);
  const finite = all.filter((v) => Number.isFinite(v));
  const positive = finite.filter((v) => v > 0);
  const useLog = spec.log === true && positive.length > 0;
  const scale = useLog ? logScale(Math.min(...positive), Math.max(...positive)) : linearScale(Math.max(0, ...finite), spec.binary === true);
  // On a log scale 0 has no place: such a value (the stop-and-copy round's expected downtime)
  // is left out rather than drawn at the bottom as if it were the smallest tick.
  const drawable = (v: number) => Number.isFinite(v) && (!useLog || v > 0);
  const slot = PW / Math.max(1, n);
  const xMid = (i: number) => M.left + slot * (i + 0.5);
  const bars = spec.series.filter((s) => s.kind === 'bar');
  const barW = Math.max(1, (slot * 0.8) / Math.max(1, bars.length));
  const base = M.top + PH;

  const out: string[] = [];
  out.push(
    `<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" role="img" aria-label="${escapeXml(spec.title)}">`,
    `<text class="chart-title" x="${M.left}" y="16">${escapeXml(spec.title)}${useLog ? ' (log scale)' : ''}</text>`,
  );
  // Grid and y ticks.
  for (const t of scale.ticks) {
    const y = fmt(scale.y(t));
    out.push(`<line class="grid" x1="${M.left}" x2="${M.left + PW}" y1="${y}" y2="${y}"/>`);
    out.push(`<text class="tick" x="${M.left - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${escapeXml(spec.format(t))}</text>`);
  }
  // X labels: at most ~20 so they never overlap.
  const every = Math.max(1, Math.ceil(n / 20));
  for (let i = 0; i < n; i += every) {
    out.push(`<text class="tick" x="${fmt(xMid(i))}" y="${base + 14}" text-anchor="middle">${escapeXml(spec.labels[i])}</text>`);
  }
  out.push(`<text class="axis" x="${M.left + PW / 2}" y="${H - 4}" text-anchor="middle">round</text>`);
  // Bars.
  bars.forEach((s, k) => {
    s.values.forEach((v, i) => {
      if (!drawable(v)) return;
      const x = xMid(i) - (barW * bars.length) / 2 + k * barW;
      const y = Math.min(base, scale.y(v));
      out.push(
        `<rect class="bar" x="${fmt(x)}" y="${fmt(y)}" width="${fmt(barW)}" height="${fmt(base - y)}" fill="${s.color}">` +
          `<title>${escapeXml(`round ${spec.labels[i]}: ${s.name} ${spec.format(v)}`)}</title></rect>`,
      );
    });
  });
  // Lines, with a dot per round for hover text.
  for (const s of spec.series.filter((x) => x.kind === 'line')) {
    let d = '';
    let pen = false;
    s.values.forEach((v, i) => {
      if (!drawable(v)) {
        pen = false;
        return;
      }
      d += `${pen ? 'L' : 'M'}${fmt(xMid(i))} ${fmt(scale.y(v))} `;
      pen = true;
    });
    if (d) out.push(`<path class="line" d="${d.trim()}" stroke="${s.color}"/>`);
    s.values.forEach((v, i) => {
      if (!drawable(v)) return;
      out.push(
        `<circle cx="${fmt(xMid(i))}" cy="${fmt(scale.y(v))}" r="3" fill="${s.color}">` +
          `<title>${escapeXml(`round ${spec.labels[i]}: ${s.name} ${spec.format(v)}`)}</title></circle>`,
      );
    });
  }
  if (spec.target && drawable(spec.target.value)) {
    const y = fmt(scale.y(spec.target.value));
    out.push(
      `<path class="target" d="M${M.left} ${y} H${M.left + PW}"><title>${escapeXml(`${spec.target.name} ${spec.format(spec.target.value)}`)}</title></path>`,
    );
  }
  out.push(`<line class="axis-line" x1="${M.left}" x2="${M.left + PW}" y1="${base}" y2="${base}"/>`);
  // Legend.
  const legend = [...spec.series.map((s) => ({ name: s.name, color: s.color, dashed: false }))];
  if (spec.target) legend.push({ name: spec.target.name, color: '#d62728', dashed: true });
  let lx = W - M.right;
  for (const item of legend.reverse()) {
    const w = 18 + item.name.length * 6.5;
    lx -= w + 10;
    out.push(
      `<g class="legend"><rect x="${fmt(lx)}" y="8" width="12" height="${item.dashed ? 2 : 10}" fill="${item.color}"/>` +
        `<text x="${fmt(lx + 16)}" y="17">${escapeXml(item.name)}</text></g>`,
    );
  }
  out.push('</svg>');
  return out.join('\n');
}

/** The CSS the charts need (inlined once in the page). */
export const CHART_CSS = `
svg.chart { width: 100%; max-width: 560px; height: auto; background: #fff; border: 1px solid #ddd; border-radius: 4px; }
svg.chart text { font: 11px sans-serif; fill: #333; }
svg.chart .chart-title { font-weight: bold; font-size: 12px; }
svg.chart .grid { stroke: #eee; }
svg.chart .axis-line { stroke: #888; }
svg.chart .line { fill: none; stroke-width: 2; }
svg.chart .target { stroke: #d62728; stroke-width: 1.5; stroke-dasharray: 6 4; fill: none; }
`;
