// The shipped Grafana dashboard (deploy/grafana/dashboards/precopy.json) as tests see it: its
// panel queries with Grafana's variables expanded the way Grafana expands them, and one check
// that every query returns data from a real Prometheus.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { REPO_ROOT } from './target';
import type { Prometheus } from './prometheus';

export const DASHBOARD_FILE = path.join(REPO_ROOT, 'deploy', 'grafana', 'dashboards', 'precopy.json');

export interface PanelTarget {
  panel: string;
  refId: string;
  expr: string;
  instant: boolean;
}

// Loose shape: tests check the fields themselves.
export type Dashboard = Record<string, any>;

export function loadDashboard(): Dashboard {
  return JSON.parse(fs.readFileSync(DASHBOARD_FILE, 'utf8'));
}

/** Every query of every panel (rows' nested panels included). */
export function panelTargets(d: Dashboard = loadDashboard()): PanelTarget[] {
  const out: PanelTarget[] = [];
  const walk = (panels: any[]) => {
    for (const p of panels ?? []) {
      for (const t of p.targets ?? []) out.push({ panel: p.title, refId: t.refId, expr: t.expr, instant: t.instant === true });
      walk(p.panels);
    }
  };
  walk(d.panels);
  return out;
}

export interface Vars {
  session: string;
  /** Seconds covered by the dashboard's time range ($__range). */
  rangeSeconds: number;
  /** Seconds between two points ($__interval); $__rate_interval is 4 of them, as Grafana's minimum. */
  stepSeconds: number;
}

/** Expand the variables Grafana would expand before sending the query. */
export function expand(expr: string, v: Vars): string {
  return expr
    .replaceAll('$__rate_interval', `${Math.max(4 * v.stepSeconds, 4)}s`)
    .replaceAll('$__interval', `${v.stepSeconds}s`)
    .replaceAll('$__range', `${Math.max(1, Math.ceil(v.rangeSeconds))}s`)
    .replaceAll('$session', v.session);
}

const hasNumber = (values: string[]) => values.some((x) => Number.isFinite(Number(x)));

/**
 * Run each panel query as Grafana would (range queries over [start, end], instant ones at end)
 * and list the queries that returned no series or only NaN/Inf: a panel that would show "No data".
 * `except`: titles of panels the caller's scenario cannot feed (it says why).
 */
export async function panelsWithoutData(prom: Prometheus, session: string, start: number, end: number, except: string[] = []): Promise<string[]> {
  const vars: Vars = { session, rangeSeconds: end - start, stepSeconds: 1 };
  const empty: string[] = [];
  for (const t of panelTargets()) {
    if (except.includes(t.panel)) continue;
    const expr = expand(t.expr, vars);
    const values = t.instant
      ? (await prom.query(expr, end)).map((s) => s.value[1])
      : (await prom.queryRange(expr, start, end, vars.stepSeconds)).flatMap((s) => s.values.map((v) => v[1]));
    if (!hasNumber(values)) empty.push(`${t.panel} [${t.refId}]: ${expr}`);
  }
  return empty;
}
