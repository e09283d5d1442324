// The exposition text of MigrationMetrics: naming rules, help text, the figures of a fed session,
// hostile figures, per-session series expiring, and the cap on session label values.

import test from 'ava';
import type { MigrationMetrics, RoundFiguresIn } from '../../../common/metrics/migration-metrics';
import { ReceiverMetrics } from '../../../receiver/receiver-metrics';

interface Family {
  name: string;
  type?: string;
  help?: string;
  samples: Array<{ name: string; labels: Record<string, string>; value: number }>;
}

/** Parse Prometheus text format 0.0.4 into metric families (enough for our own output). */
function parseExposition(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  const family = (name: string) => {
    let f = families.get(name);
    if (!f) families.set(name, (f = { name, samples: [] }));
    return f;
  };
  for (const line of text.split('\n')) {
    let m: RegExpExecArray | null;
    if ((m = /^# HELP (\S+) (.*)$/.exec(line))) family(m[1]).help = m[2];
    else if ((m = /^# TYPE (\S+) (\S+)$/.exec(line))) family(m[1]).type = m[2];
    else if ((m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line))) {
      const labels: Record<string, string> = {};
      for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
      const base = families.has(m[1]) ? m[1] : m[1].replace(/_(bucket|sum|count)$/, '');
      family(base).samples.push({ name: m[1], labels, value: Number(m[3]) });
    } else if (line !== '') {
      throw new Error(`unparsable exposition line: ${line}`);
    }
  }
  return families;
}

const value = (fams: Map<string, Family>, name: string, labels: Record<string, string> = {}) =>
  (fams.get(name) ?? fams.get(name.replace(/_(bucket|sum|count)$/, '')))?.samples.find(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  )?.value;

const round = (over: Partial<RoundFiguresIn> = {}): RoundFiguresIn => ({
  dirtyPages: 1000,
  zeroPages: 10,
  rawBytes: 990 * 4096,
  wireBytes: 400_000,
  durationSeconds: 0.2,
  dirtyRateBytesPerSecond: 5e6,
  transferRateBytesPerSecond: 2e8,
  expectedDowntimeSeconds: 0.02,
  remainingBytes: 100 * 4096,
  ...over,
});

/** Start a session, run `rounds` rounds, end it with a committed report. */
function feed(m: MigrationMetrics, id: string, rounds = 3): void {
  m.sessionStarted({ sessionId: id, pageSize: 4096, downtimeTargetSeconds: 0.3, memoryBytes: 64 << 20 });
  for (let i = 0; i < rounds; i++) m.roundEnded(id, round({ dirtyPages: 1000 >> i }));
  m.sessionEnded(id, { result: 'committed', downtimeSeconds: 0.05, totalSeconds: 3, verifyMismatches: 2 });
}

async function until(what: string, cond: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out waiting for: ${what}`);
}

test('every metric has HELP and TYPE, the precopy_ prefix and base-unit names', async (t) => {
  const m = new ReceiverMetrics({ processMetrics: true });
  m.kernelFeatures({ kernelRelease: '6.18.0', pageSize: 4096, pagemapScan: true, userfaultfd: true, uffdWpAsync: true, uffdWpUnpopulated: true });
  feed(m, 'expo-1');
  const fams = parseExposition(await m.text());
  t.true(fams.size > 20);
  for (const f of fams.values()) {
    t.truthy(f.help, `${f.name} has help text`);
    t.truthy(f.type, `${f.name} has a TYPE`);
    t.regex(f.name, /^precopy_[a-z0-9_]+$/, `${f.name} is prefixed precopy_`);
    // Node's process metrics (collectDefaultMetrics) keep prom-client's own names, some of which
    // break the suffix rules (the gauge nodejs_active_resources_total): the rules are for ours.
    if (/^precopy_(nodejs|process)_/.test(f.name)) continue;
    if (f.type === 'counter') t.regex(f.name, /_total$/, `counter ${f.name} ends in _total`);
    else t.notRegex(f.name, /_total$/, `${f.type} ${f.name} does not end in _total`);
    // Base units only (bytes, seconds), as the last word before _total/_info/_per_second.
    const stem = f.name.replace(/_total$/, '').replace(/_info$/, '');
    t.notRegex(stem, /_(ms|milliseconds|us|microseconds|minutes|hours|kb|kib|mb|mib|gb|gib|pages_bytes)(_|$)/, `${f.name} uses base units`);
    if (/_bytes|_seconds/.test(stem)) t.regex(stem, /_(bytes|seconds|bytes_per_second)$/, `${f.name}: the unit is the suffix`);
  }
  // Our own families, with the type the issue asks for.
  const expected: Record<string, string> = {
    precopy_migrations_total: 'counter',
    precopy_migrations_in_progress: 'gauge',
    precopy_rounds_total: 'counter',
    precopy_round_dirty_bytes: 'gauge',
    precopy_transferred_bytes_total: 'counter',
    precopy_remaining_bytes: 'gauge',
    precopy_dirty_rate_bytes_per_second: 'gauge',
    precopy_transfer_rate_bytes_per_second: 'gauge',
    precopy_expected_downtime_seconds: 'gauge',
    precopy_downtime_target_seconds: 'gauge',
    precopy_downtime_seconds: 'histogram',
    precopy_migration_duration_seconds: 'histogram',
    precopy_round_duration_seconds: 'histogram',
    precopy_zero_pages_total: 'counter',
    precopy_compression_input_bytes_total: 'counter',
    precopy_compression_output_bytes_total: 'counter',
    precopy_verify_mismatches_total: 'counter',
    precopy_build_info: 'gauge',
    precopy_kernel_features_info: 'gauge',
    precopy_refused_streams_total: 'counter',
    precopy_session_takeovers_total: 'counter',
  };
  for (const [name, type] of Object.entries(expected)) t.is(fams.get(name)?.type, type, name);
  m.close();
});

test('a fed session shows its figures, global counters add up', async (t) => {
  const m = new ReceiverMetrics({ version: '9.9.9' });
  m.kernelFeatures({ kernelRelease: '6.18.0', pageSize: 4096, pagemapScan: true, userfaultfd: true, uffdWpAsync: true, uffdWpUnpopulated: false });
  m.sessionStarted({ sessionId: 's1', pageSize: 4096, downtimeTargetSeconds: 0.3 });
  m.roundEnded('s1', round({ dirtyPages: 16384, wireBytes: 1000 }));
  m.roundEnded('s1', round({ dirtyPages: 512, wireBytes: 500, remainingBytes: 8192, expectedDowntimeSeconds: 0.004 }));
  let f = parseExposition(await m.text());
  const s1 = { session: 's1' };
  t.is(value(f, 'precopy_migrations_in_progress'), 1);
  t.is(value(f, 'precopy_rounds_total', s1), 2);
  t.is(value(f, 'precopy_round_dirty_bytes', s1), 512 * 4096, 'last round, in bytes');
  t.is(value(f, 'precopy_transferred_bytes_total', s1), 1500);
  t.is(value(f, 'precopy_remaining_bytes', s1), 8192);
  t.is(value(f, 'precopy_expected_downtime_seconds', s1), 0.004);
  t.is(value(f, 'precopy_downtime_target_seconds', s1), 0.3);
  t.is(value(f, 'precopy_dirty_rate_bytes_per_second', s1), 5e6);
  t.is(value(f, 'precopy_transfer_rate_bytes_per_second', s1), 2e8);
  t.is(value(f, 'precopy_zero_pages_total'), 20);
  t.is(value(f, 'precopy_compression_output_bytes_total'), 1500);
  t.is(value(f, 'precopy_compression_input_bytes_total'), 2 * 990 * 4096);
  t.is(value(f, 'precopy_round_duration_seconds_count'), 2);
  t.is(value(f, 'precopy_build_info', { version: '9.9.9', role: 'receiver' }), 1);
  t.is(value(f, 'precopy_kernel_features_info', { kernel_release: '6.18.0', uffd_wp_unpopulated: 'false' }), 1);
  for (const r of ['committed', 'failed', 'aborted']) t.is(value(f, 'precopy_migrations_total', { result: r }), 0, `${r} starts at 0`);

  m.sessionEnded('s1', { result: 'committed', downtimeSeconds: 0.04, totalSeconds: 12, verifyMismatches: 3 });
  m.sessionEnded('s1', { result: 'failed' }); // idempotent: a second end changes nothing
  f = parseExposition(await m.text());
  t.is(value(f, 'precopy_migrations_in_progress'), 0);
  t.is(value(f, 'precopy_migrations_total', { result: 'committed' }), 1);
  t.is(value(f, 'precopy_migrations_total', { result: 'failed' }), 0);
  t.is(value(f, 'precopy_downtime_seconds_count'), 1);
  t.is(value(f, 'precopy_downtime_seconds_sum'), 0.04);
  t.is(value(f, 'precopy_downtime_seconds_bucket', { le: '0.05' }), 1);
  t.is(value(f, 'precopy_downtime_seconds_bucket', { le: '0.025' }), 0);
  t.is(value(f, 'precopy_session_downtime_seconds', s1), 0.04);
  t.is(value(f, 'precopy_migration_duration_seconds_sum'), 12);
  t.is(value(f, 'precopy_verify_mismatches_total'), 3);
  t.is(value(f, 'precopy_rounds_total', s1), 2, 'series stay during the retention time');
  m.close();
});

test('hostile figures and unknown results neither throw nor corrupt counters', async (t) => {
  const m = new ReceiverMetrics();
  m.sessionStarted({ sessionId: 'h', pageSize: NaN, downtimeTargetSeconds: -1 });
  t.notThrows(() => m.roundEnded('h', round({ dirtyPages: -5, zeroPages: NaN, rawBytes: -1, wireBytes: Infinity, durationSeconds: -3, remainingBytes: NaN })));
  m.roundEnded('nobody', round()); // a RoundEnd for a session never started: global figures only
  m.sessionEnded('h', { result: 'exploded', downtimeSeconds: NaN, totalSeconds: -1, verifyMismatches: -7 });
  const f = parseExposition(await m.text());
  for (const fam of f.values()) for (const s of fam.samples) t.true(Number.isFinite(s.value) || s.labels.le === '+Inf', `${s.name} finite`);
  t.is(value(f, 'precopy_transferred_bytes_total', { session: 'h' }), 0);
  t.is(value(f, 'precopy_round_dirty_bytes', { session: 'h' }), 0);
  t.is(value(f, 'precopy_downtime_target_seconds', { session: 'h' }), undefined, 'no target given');
  t.is(value(f, 'precopy_rounds_total', { session: 'nobody' }), undefined);
  t.is(value(f, 'precopy_round_duration_seconds_count'), 2);
  t.is(value(f, 'precopy_migrations_total', { result: 'failed' }), 1, 'unknown result words count as failed');
  t.is(f.get('precopy_migrations_total')!.samples.length, 3, 'the result label keeps three values');
  t.is(value(f, 'precopy_migrations_in_progress'), 0);
  m.close();
});

test('per-session series disappear after the retention time, global ones stay', async (t) => {
  const m = new ReceiverMetrics({ retentionMs: 50 });
  feed(m, 'gone-1');
  feed(m, 'gone-2');
  m.sessionStarted({ sessionId: 'live', pageSize: 4096 });
  m.roundEnded('live', round());
  t.true((await m.text()).includes('session="gone-1"'));
  await until('finished sessions dropped', async () => !(await m.text()).includes('session="gone-'));
  const text = await m.text();
  t.false(text.includes('session="gone-2"'));
  t.true(text.includes('precopy_rounds_total{session="live"} 1'), 'a running session keeps its series');
  const f = parseExposition(text);
  t.is(value(f, 'precopy_migrations_total', { result: 'committed' }), 2);
  t.is(value(f, 'precopy_downtime_seconds_count'), 2);
  t.deepEqual(m.labelledSessions(), ['live']);

  // A session that resumes after its end keeps counting where it was.
  feed(m, 'again', 2);
  m.sessionStarted({ sessionId: 'again', pageSize: 4096 });
  m.roundEnded('again', round());
  t.is(value(parseExposition(await m.text()), 'precopy_rounds_total', { session: 'again' }), 3);
  m.close();
});

test('session label values are capped: extra sessions count only in global figures', async (t) => {
  const m = new ReceiverMetrics({ maxSessions: 3 });
  for (let i = 0; i < 10; i++) {
    m.sessionStarted({ sessionId: `flood-${i}`, pageSize: 4096 });
    m.roundEnded(`flood-${i}`, round());
  }
  m.sessionStarted({ sessionId: 'x'.repeat(65), pageSize: 4096 }); // too long to be a label value
  let f = parseExposition(await m.text());
  t.is(f.get('precopy_rounds_total')!.samples.length, 3);
  t.is(value(f, 'precopy_untracked_sessions_total'), 8);
  t.is(value(f, 'precopy_migrations_in_progress'), 11, 'untracked sessions are still in progress');
  t.is(value(f, 'precopy_round_duration_seconds_count'), 10, 'and their rounds still count');

  // A finished session makes room: the oldest finished one goes first.
  m.sessionEnded('flood-1', { result: 'aborted' });
  m.sessionEnded('flood-0', { result: 'aborted' });
  m.sessionStarted({ sessionId: 'newcomer', pageSize: 4096 });
  m.roundEnded('newcomer', round());
  f = parseExposition(await m.text());
  t.deepEqual(
    f
      .get('precopy_rounds_total')!
      .samples.map((s) => s.labels.session)
      .sort(),
    ['flood-0', 'flood-2', 'newcomer'],
  );
  t.is(m.labelledSessions().length, 3);
  m.close();
});
