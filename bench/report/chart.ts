// bench/out/chart.svg: the headline comparisons as horizontal bar panels (ours next to the limit
// or the alternative), plain SVG written here, no dependencies.

import { escapeXml } from '../../receiver/report/svg-chart';
import type { BenchResults } from './results';

interface Bar {
  name: string;
  value: number;
  color: string;
}
interface Group {
  label: string;
  bars: Bar[];
}
interface Panel {
  title: string;
  unit: string;
  /** Log scale, for figures spanning orders of magnitude. */
  log: boolean;
  groups: Group[];
}

const W = 760;
const LABEL_W = 250;
const BAR_H = 14;
const OURS = '#1f77b4';
const LIMIT = '#7f7f7f';
const DISK = '#bcbd22';
const OTHER = '#ff7f0e';

/** 3 significant digits, never in exponent form. */
const short = (v: number) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toPrecision(3));

function panelSvg(p: Panel, y0: number): { svg: string; height: number } {
  const values = p.groups.flatMap((g) => g.bars.map((b) => b.value)).filter((v) => Number.isFinite(v) && v > 0);
  const max = Math.max(...values, 1e-9);
  const min = Math.min(...values, max);
  const lo = p.log ? Math.floor(Math.log10(min)) : 0;
  const hi = p.log ? Math.max(lo + 1, Math.ceil(Math.log10(max))) : max;
  const plotW = W - LABEL_W - 110;
  const x = (v: number) => (p.log ? ((Math.log10(Math.max(v, 10 ** lo)) - lo) / (hi - lo)) * plotW : (v / hi) * plotW);
  const parts: string[] = [`<text x="8" y="${y0 + 14}" font-weight="bold">${escapeXml(p.title)}${p.log ? ' (log scale)' : ''}</text>`];
  let y = y0 + 24;
  for (const g of p.groups) {
    parts.push(`<text x="8" y="${y + BAR_H - 3}">${escapeXml(g.label)}</text>`);
    for (const b of g.bars) {
      const w = Number.isFinite(b.value) && b.value > 0 ? Math.max(1, x(b.value)) : 0;
      const text = Number.isFinite(b.value) ? `${short(b.value)} ${p.unit} ${b.name}` : `${b.name}: n/a`;
      parts.push(
        `<rect x="${LABEL_W}" y="${y}" width="${w.toFixed(1)}" height="${BAR_H - 2}" fill="${b.color}"><title>${escapeXml(text)}</title></rect>`,
        `<text x="${(LABEL_W + w + 4).toFixed(1)}" y="${y + BAR_H - 3}" font-size="10">${escapeXml(text)}</text>`,
      );
      y += BAR_H;
    }
    y += 6;
  }
  return { svg: parts.join('\n'), height: y - y0 + 10 };
}

export function renderChart(r: BenchResults): string {
  const panels: Panel[] = [];
  if (r.throughput) {
    panels.push({
      title: '1. Round-0 throughput vs process_vm_readv of the same target and vs the disk',
      unit: 'GB/s',
      log: false,
      groups: r.throughput.map((t) => ({
        label: t.config.name,
        bars: [
          { name: 'precopy', value: t.round0GBps.median, color: OURS },
          { name: 'raw limit', value: t.rawLimitGBps.median, color: LIMIT },
          { name: 'disk limit', value: t.diskLimitGBps.median, color: DISK },
        ],
      })),
    });
  }
  if (r.scan) {
    panels.push({
      title: '2. One dirty round, 1% of 1 GiB written',
      unit: 'ms',
      log: true,
      groups: r.scan.map((s) => ({
        label: s.layout.name,
        bars: [
          { name: 'sender scan', value: s.senderMs.median, color: OURS },
          { name: 'raw ioctl', value: s.rawIoctlMs.median, color: LIMIT },
          { name: 'pagemap read', value: s.pagemapReadMs.median, color: OTHER },
        ],
      })),
    });
  }
  if (r.downtime) {
    const rates = [...new Set(r.downtime.filter((d) => d.mib === 1024).map((d) => d.rateMBps))];
    const alt = r.alternatives?.tools.filter((t) => t.available) ?? [];
    panels.push({
      title: "3./4. Downtime of a 1 GiB target by dirty rate, and the alternatives' pause",
      unit: 'ms',
      log: true,
      groups: [
        ...rates.map((rate) => ({
          label: `${rate} MB/s dirtied`,
          bars: [false, true].map((verify) => ({
            name: verify ? 'frozen, with verify' : 'downtime, no verify',
            value: r.downtime!.find((d) => d.mib === 1024 && d.rateMBps === rate && d.verify === verify)?.[verify ? 'frozenMs' : 'downtimeMs'].median ?? NaN,
            color: verify ? '#aec7e8' : OURS,
          })),
        })),
        ...alt.map((t) => ({ label: t.tool, bars: [{ name: 'pause', value: t.available ? t.pauseMs.median : NaN, color: OTHER }] })),
      ],
    });
  }
  let y = 0;
  const body: string[] = [];
  for (const p of panels) {
    const { svg, height } = panelSvg(p, y);
    body.push(svg);
    y += height;
  }
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${y}" viewBox="0 0 ${W} ${y}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${y}" fill="#fff"/>`,
    ...body,
    '</svg>',
    '',
  ].join('\n');
}
