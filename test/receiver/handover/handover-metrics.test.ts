// The receiver's handover metrics (receiver-metrics.ts, fed through HandoverEvents): their names,
// help and closed reason label, and the figures a few handovers leave.

import test from 'ava';
import { ReceiverMetrics } from '../../../receiver/receiver-metrics';
import { ROLLBACK_REASONS } from '../../../receiver/handover/handover-events';

async function families(m: ReceiverMetrics) {
  return new Map((await m.registry.getMetricsAsJSON()).map((f) => [f.name, f]));
}

/** One sample's value: `name` (a histogram's _count or _bucket too) with these labels. */
async function sample(m: ReceiverMetrics, name: string, labels: Record<string, string | number> = {}): Promise<number | undefined> {
  for (const f of await m.registry.getMetricsAsJSON()) {
    for (const v of f.values as Array<{ metricName?: string; labels: Record<string, string | number>; value: number }>) {
      if ((v.metricName ?? f.name) === name && Object.entries(labels).every(([k, x]) => v.labels[k] === x)) return v.value;
    }
  }
  return undefined;
}

test('handover metrics: names, help, and every rollback reason at zero from the start', async (t) => {
  const m = new ReceiverMetrics();
  t.teardown(() => m.close());
  const fams = await families(m);
  const want: Array<[string, string]> = [
    ['precopy_handovers_started_total', 'counter'],
    ['precopy_handovers_succeeded_total', 'counter'],
    ['precopy_handovers_rolled_back_total', 'counter'],
    ['precopy_handover_restore_seconds', 'histogram'],
    ['precopy_handed_over_processes', 'gauge'],
  ];
  for (const [name, type] of want) {
    const f = fams.get(name);
    t.is(String(f?.type), type, name);
    t.true((f?.help.length ?? 0) > 20, `${name} has help`);
  }
  const rolledBack = fams.get('precopy_handovers_rolled_back_total')!.values;
  t.deepEqual(rolledBack.map((v) => v.labels.reason).sort(), [...ROLLBACK_REASONS].sort());
  t.true(rolledBack.every((v) => v.value === 0));
});

test('handover events: counts, restore seconds, and the processes running here', async (t) => {
  const m = new ReceiverMetrics();
  t.teardown(() => m.close());
  for (let i = 0; i < 3; i++) m.handoverStarted();
  m.handoverSucceeded(0.04);
  m.handoverSucceeded(1.5);
  m.handoverRolledBack('restore_failed');
  m.handoverRolledBack('never_asked');
  m.handedOverProcessEnded();
  t.is(await sample(m, 'precopy_handovers_started_total'), 3);
  t.is(await sample(m, 'precopy_handovers_succeeded_total'), 2);
  t.is(await sample(m, 'precopy_handovers_rolled_back_total', { reason: 'restore_failed' }), 1);
  t.is(await sample(m, 'precopy_handovers_rolled_back_total', { reason: 'never_asked' }), 1);
  t.is(await sample(m, 'precopy_handovers_rolled_back_total', { reason: 'refused' }), 0);
  t.is(await sample(m, 'precopy_handed_over_processes'), 1, 'two started, one ended');
  t.is(await sample(m, 'precopy_handover_restore_seconds_count'), 2);
  t.is(await sample(m, 'precopy_handover_restore_seconds_bucket', { le: 0.05 }), 1);
});
