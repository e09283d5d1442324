// The shipped Grafana dashboard and its provisioning: schema fields Grafana needs to import it,
// the panels the issue asks for, queries that name only metrics we export and that a real
// Prometheus parses, and (against a MigrationMetrics fed with a session and scraped by a real
// Prometheus) every panel query returning data, the handover panels included (the metrics are fed
// handover events too). test/deploy/dashboard-data.test.ts does the last check again with a real
// receiver and a real migration.

import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ReceiverMetrics } from '../../receiver/receiver-metrics';
import { startMetricsServer } from '../../common/metrics/metrics-server';
import { loadDashboard, panelTargets, expand, panelsWithoutData } from '../helpers/dashboard';
import { Prometheus, PromQueryError } from '../helpers/prometheus';
import { REPO_ROOT } from '../helpers/target';

const DEPLOY = path.join(REPO_ROOT, 'deploy');
const read = (rel: string) => fs.readFileSync(path.join(DEPLOY, rel), 'utf8');

/** The datasource uid the provisioning file gives (no YAML parser: one `uid:` line). */
function provisionedDatasourceUid(): string {
  const m = /^\s*uid:\s*(\S+)\s*$/m.exec(read('grafana/provisioning/datasources/prometheus.yml'));
  if (!m) throw new Error('no uid in the datasource provisioning file');
  return m[1];
}

test('dashboard JSON has the schema fields Grafana imports', (t) => {
  const d = loadDashboard();
  const uid = provisionedDatasourceUid();
  t.is(typeof d.title, 'string');
  t.regex(d.uid, /^[a-zA-Z0-9_-]{1,40}$/, 'uid: at most 40 characters of a-zA-Z0-9_-');
  t.true(Number.isInteger(d.schemaVersion) && d.schemaVersion >= 36, 'schemaVersion of a current Grafana');
  t.is(typeof d.time?.from, 'string');
  t.true(Array.isArray(d.panels) && d.panels.length > 0);
  t.is(d.id, undefined, 'no database id in a provisioned dashboard');

  const ids = new Set<number>();
  const cells = new Set<string>();
  for (const p of d.panels) {
    t.true(Number.isInteger(p.id) && !ids.has(p.id), `panel ${p.title}: unique integer id`);
    ids.add(p.id);
    t.true(['timeseries', 'stat', 'bargauge', 'row'].includes(p.type), `panel ${p.title}: known type ${p.type}`);
    t.is(typeof p.title, 'string');
    const g = p.gridPos;
    t.true(
      [g.h, g.w, g.x, g.y].every((v: unknown) => Number.isInteger(v) && (v as number) >= 0),
      `panel ${p.title}: gridPos`,
    );
    t.true(g.w >= 1 && g.x + g.w <= 24, `panel ${p.title}: fits the 24-column grid`);
    for (let x = g.x; x < g.x + g.w; x++) {
      for (let y = g.y; y < g.y + g.h; y++) {
        t.false(cells.has(`${x},${y}`), `panel ${p.title} overlaps another at ${x},${y}`);
        cells.add(`${x},${y}`);
      }
    }
    t.deepEqual(p.datasource, { type: 'prometheus', uid }, `panel ${p.title}: the provisioned datasource`);
    const refIds = new Set<string>();
    t.true(p.targets.length > 0, `panel ${p.title} has queries`);
    for (const q of p.targets) {
      t.true(typeof q.expr === 'string' && q.expr.length > 0);
      t.regex(q.refId, /^[A-Z]$/);
      t.false(refIds.has(q.refId), `panel ${p.title}: unique refId ${q.refId}`);
      refIds.add(q.refId);
      t.deepEqual(q.datasource, { type: 'prometheus', uid });
    }
  }

  // The session picker.
  const vars = d.templating.list;
  const session = vars.find((v: any) => v.name === 'session');
  t.is(session?.type, 'query');
  t.deepEqual(session.datasource, { type: 'prometheus', uid });
  t.is(session.definition, 'label_values(precopy_rounds_total, session)');
  t.is(session.query.query, 'label_values(precopy_rounds_total, session)');
  t.is(session.multi, false);

  // The panels the issue asks for.
  const titles = d.panels.map((p: any) => p.title);
  for (const want of [
    'Dirty bytes per round',
    'Remaining vs. transferred',
    'Dirty rate vs. transfer rate',
    'Expected downtime vs. target',
    'Round durations',
    'Final downtimes',
    'Migrations by result',
    'Handovers by outcome',
    'Handover restore time',
    'Handed-over processes',
  ]) {
    t.true(titles.includes(want), `panel "${want}"`);
  }
  // Per-session panels follow the picker.
  for (const title of ['Dirty bytes per round', 'Remaining vs. transferred', 'Dirty rate vs. transfer rate', 'Expected downtime vs. target']) {
    const p = d.panels.find((x: any) => x.title === title);
    for (const q of p.targets) t.true(q.expr.includes('session="$session"'), `${title}: ${q.expr}`);
  }
});

test('provisioning and docker-compose agree on where the dashboard lives', (t) => {
  const provider = read('grafana/provisioning/dashboards/precopy.yml');
  const m = /^\s*path:\s*(\S+)\s*$/m.exec(provider);
  t.truthy(m);
  const compose = read('docker-compose.yml');
  t.true(compose.includes(`./grafana/dashboards:${m![1]}`), 'compose mounts the dashboards where the provider reads them');
  t.true(compose.includes('./grafana/provisioning:/etc/grafana/provisioning'));
  t.regex(read('grafana/provisioning/datasources/prometheus.yml'), /url: http:\/\/prometheus:9090/);
  t.true(compose.includes('./prometheus:/etc/prometheus'));
});

test('every panel query names only metrics MigrationMetrics exports', async (t) => {
  const m = new ReceiverMetrics();
  const exported = new Set<string>();
  for (const f of await m.registry.getMetricsAsJSON()) {
    exported.add(f.name);
    if (String(f.type) === 'histogram') for (const s of ['_bucket', '_sum', '_count']) exported.add(f.name + s);
  }
  m.close();
  const d = loadDashboard();
  const queries = [...panelTargets(d).map((q) => q.expr), d.templating.list[0].definition as string];
  for (const q of queries) {
    const names = q.match(/\bprecopy_[a-z0-9_]+/g) ?? [];
    t.true(names.length > 0, `query uses a precopy metric: ${q}`);
    for (const n of names) t.true(exported.has(n), `${n} (in ${q}) is exported`);
  }
});

test('every panel query parses in a real Prometheus', async (t) => {
  const prom = await Prometheus.start({ targets: ['127.0.0.1:1'] });
  try {
    const vars = { session: 'any', rangeSeconds: 3600, stepSeconds: 5 };
    for (const q of panelTargets()) {
      await t.notThrowsAsync(prom.query(expand(q.expr, vars)), `${q.panel} [${q.refId}]`);
    }
    // The check can fail: a broken query is refused as bad_data.
    const err = await t.throwsAsync(prom.query('sum(rate(precopy_rounds_total[5m])'));
    t.true(err instanceof PromQueryError && err.errorType === 'bad_data');
  } finally {
    await prom.stop();
  }
});

test('every panel query returns data from a fed MigrationMetrics scraped by a real Prometheus', async (t) => {
  // Each resource stopped in teardown as soon as it exists: when Prometheus cannot start, the
  // metrics server must not stay open (it kept the worker alive: the run hung).
  const metrics = new ReceiverMetrics();
  t.teardown(() => metrics.close());
  const srv = await startMetricsServer(metrics.registry, { host: '127.0.0.1', port: 0 });
  t.teardown(() => srv.close());
  const prom = await Prometheus.start({ targets: [`127.0.0.1:${srv.address.port}`] });
  t.teardown(() => prom.stop());
  await prom.waitFor('up == 1');
  const start = Date.now() / 1000;
  const session = 'fed-session';
  metrics.sessionStarted({ sessionId: session, pageSize: 4096, downtimeTargetSeconds: 0.3, memoryBytes: 64 << 20 });
  // Rounds spread over several 1 s scrapes, shrinking like a converging migration; between them,
  // two handovers: one whose process runs here, one whose restore failed.
  for (let i = 0; i < 16; i++) {
    if (i === 4 || i === 8) metrics.handoverStarted();
    if (i === 4) metrics.handoverSucceeded(0.12);
    if (i === 8) metrics.handoverRolledBack('restore_failed');
    const dirtyPages = Math.max(16, 16384 >> i);
    metrics.roundEnded(session, {
      dirtyPages,
      zeroPages: dirtyPages >> 4,
      rawBytes: dirtyPages * 4096,
      wireBytes: dirtyPages * 2048,
      durationSeconds: 0.05 + dirtyPages / 1e5,
      dirtyRateBytesPerSecond: 4e6,
      transferRateBytesPerSecond: 3e8,
      expectedDowntimeSeconds: (dirtyPages * 4096) / 3e8,
      remainingBytes: (dirtyPages >> 1) * 4096,
    });
    await new Promise((r) => setTimeout(r, 300));
  }
  metrics.sessionEnded(session, { result: 'committed', downtimeSeconds: 0.012, totalSeconds: 5, verifyMismatches: 0 });
  await prom.waitFor('precopy_session_downtime_seconds{session="fed-session"}');
  // Two more scrapes, so rates over the end of the session have their last samples.
  const ended = Date.now() / 1000;
  await prom.waitFor('timestamp(up)', (s) => Number(s.value[1]) > ended + 2);
  const empty = await panelsWithoutData(prom, session, Math.floor(start) - 1, Math.ceil(Date.now() / 1000));
  t.deepEqual(empty, [], 'panels without data');
  // Data, and the right data: the handover panels show what was fed (zeros would pass above).
  // increase() extrapolates to the range's edges, so the counts compare rather than equal 2 and 1.
  const vars = { session, rangeSeconds: Date.now() / 1000 - start + 1, stepSeconds: 1 };
  const shown = new Map<string, number>();
  for (const q of panelTargets().filter((x) => x.panel === 'Handovers by outcome')) {
    for (const s of await prom.query(expand(q.expr, vars))) shown.set(s.metric.reason ?? q.refId, Number(s.value[1]));
  }
  const asked = shown.get('A')!;
  const running = shown.get('B')!;
  t.true(asked > running && running > 0, `asked ${asked}, running ${running}`);
  t.true(shown.get('restore_failed')! > 0, 'the failed restore is shown');
  t.is(shown.get('refused'), 0);
  const [processes] = await prom.query('sum(precopy_handed_over_processes)');
  t.is(Number(processes.value[1]), 1);
});
