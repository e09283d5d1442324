// The /metrics HTTP server: serves a registry's exposition on a chosen or free port, links it
// from /, and reports a taken port as a user error.

import test from 'ava';
import { ReceiverMetrics } from '../../../receiver/receiver-metrics';
import { SenderMetrics } from '../../../sender/sender-metrics';
import { startMetricsServer } from '../../../common/metrics/metrics-server';
import { UserError } from '../../../common/errors';

test('serves /metrics and / on a free port, 404 elsewhere, closes', async (t) => {
  const m = new SenderMetrics();
  m.sessionStarted({ sessionId: 'http-1', pageSize: 4096 });
  const srv = await startMetricsServer(m.registry, { host: '127.0.0.1', port: 0 });
  try {
    t.true(srv.address.port > 0);
    t.is(srv.url, `http://127.0.0.1:${srv.address.port}/metrics`);
    const res = await fetch(srv.url);
    t.is(res.status, 200);
    t.regex(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const body = await res.text();
    t.regex(body, /^# HELP precopy_/m);
    t.regex(body, /^precopy_migrations_in_progress 1$/m);
    t.regex(body, /precopy_build_info\{[^}]*role="sender"/);

    const index = await fetch(`http://127.0.0.1:${srv.address.port}/`);
    t.is(index.status, 200);
    t.regex(await index.text(), /href="\/metrics"/);
    const missing = await fetch(`http://127.0.0.1:${srv.address.port}/nope`);
    t.is(missing.status, 404);
    await missing.text();
    const post = await fetch(srv.url, { method: 'POST', body: 'x' });
    t.is(post.status, 405);
    await post.text();
  } finally {
    await srv.close();
    m.close();
  }
  await t.throwsAsync(fetch(srv.url));
});

test('a port in use is a UserError naming the flag', async (t) => {
  const m = new ReceiverMetrics();
  const first = await startMetricsServer(m.registry, { host: '127.0.0.1', port: 0 });
  try {
    const err = await t.throwsAsync(startMetricsServer(m.registry, { host: '127.0.0.1', port: first.address.port }));
    t.true(err instanceof UserError);
    t.regex(err!.message, /^--metrics-listen: cannot listen on 127\.0\.0\.1:\d+: address already in use$/);
  } finally {
    await first.close();
    m.close();
  }
});
