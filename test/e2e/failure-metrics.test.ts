// The failure paths (docs/design.md, Resume; Securing the link) on /metrics: the receiver counts the streams it refuses, by reason
// (precopy_refused_streams_total{reason}), and the sessions a resume takes over from a stale
// stream (precopy_session_takeovers_total); the sender counts its link breaks, by phase, and the
// ones it resumed from (precopy_link_breaks_total{phase}, precopy_reconnects_total). Real receiver
// and sender processes, scraped over HTTP while they run.

import * as fs from 'node:fs';
import * as path from 'node:path';
import test from 'ava';
import * as grpc from '@grpc/grpc-js';
import { SenderMetrics } from '../../sender/sender-metrics';
import { MigrationLink } from '../../sender/transfer/migration-link';
import type { PageTransfer } from '../../sender/transfer/page-transfer';
import { meteredTransfer } from '../../sender/transfer/metered-transfer';
import { freePort } from '../helpers/prometheus';
import { startReceiver, type ReceiverHandle } from '../helpers/receiver';
import { Target } from '../helpers/target';
import { pageBatch, roundUnderWay, sessionStart, sessionWithRoundZero } from '../receiver/server/server-client';
import { Model, pagesOf, tempDir, vma } from '../image/store-helpers';
import { runSender, startSender } from '../helpers/migration-cli';
import { roundsStarted, waitFor } from './resume-support';

const A = 0x7f6700000000;

/** The value of one series on `url` (NaN when absent). */
async function scrape(url: string, series: string): Promise<number> {
  const text = await (await fetch(url)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? NaN : Number(line.slice(series.length + 1));
}

async function receiverWithMetrics(t: Parameters<typeof tempDir>[0], args: string[]): Promise<{ receiver: ReceiverHandle; url: string }> {
  const dir = tempDir(t, 'precopy-failure-metrics-');
  const port = await freePort();
  const receiver = await startReceiver({ images: path.join(dir, 'images'), args: ['--metrics-listen', `127.0.0.1:${port}`, ...args] });
  t.teardown(() => receiver.stop());
  return { receiver, url: `http://127.0.0.1:${port}/metrics` };
}

const refused = (reason: string) => `precopy_refused_streams_total{reason="${reason}"}`;

test('receiver: a sender with the wrong token counts as refused, reason unauthenticated', async (t) => {
  const tokens = tempDir(t, 'precopy-failure-tokens-');
  const { receiver, url } = await receiverWithMetrics(t, ['--token-file', tokenFile(tokens, 'receiver', 'right-token')]);
  for (const reason of ['unauthenticated', 'too_many_sessions', 'image_too_big']) t.is(await scrape(url, refused(reason)), 0, `${reason} starts at 0`);
  const target = await Target.start({ mib: 4, seed: 71 });
  t.teardown(() => target.kill());
  const run = await runSender(['--pid', String(target.pid), '--to', receiver.address, '--token-file', tokenFile(tokens, 'sender', 'wrong-token')], {
    json: false,
  });
  t.is(run.code, 1, run.stderr);
  t.regex(run.stderr, /wrong or missing token/);
  t.is(await scrape(url, refused('unauthenticated')), 1);
  t.is(await scrape(url, refused('too_many_sessions')), 0);
  t.log(`${refused('unauthenticated')} 1 after: ${run.stderr.trim().split('\n').pop()}`);
});

test('receiver: image_too_big, a takeover, then too_many_sessions, each counted once', async (t) => {
  // One slot and 64 pages per image.
  const { receiver, url } = await receiverWithMetrics(t, ['--max-sessions', '1', '--max-image-bytes', '256K']);

  // 1. A batch that would take an image past --max-image-bytes ends its stream.
  const big = await MigrationLink.connect(receiver.address);
  t.teardown(() => big.close());
  const layout = [vma(A, 128)];
  await big.start(sessionStart('fm-big'));
  await big.send({ roundStart: { round: 0, phase: 'PRECOPY', layout } });
  await big.send({ pages: pageBatch(new Model(), pagesOf(A, 128), 1) }).catch(() => undefined);
  t.is((await big.whenEnded())?.code, grpc.status.RESOURCE_EXHAUSTED);
  t.is(await scrape(url, refused('image_too_big')), 1);

  // 2. A resume takes over a session its stale stream still holds (test/receiver/server/takeover.test.ts).
  t.is(await scrape(url, 'precopy_session_takeovers_total'), 0);
  const small = [vma(A, 32)];
  const { link: stale } = await sessionWithRoundZero(receiver.address, 'fm-tk', small);
  t.teardown(() => stale.close());
  await roundUnderWay(stale, 1, small, pagesOf(A, 8), 2);
  const fresh = await MigrationLink.connect(receiver.address);
  t.teardown(() => fresh.close());
  t.true((await fresh.start(sessionStart('fm-tk', { resume: true }))).resumed);
  t.is((await stale.whenEnded())?.code, grpc.status.ABORTED);
  t.is(await scrape(url, 'precopy_session_takeovers_total'), 1);

  // 3. The one slot is held (by the takeover's stream): a new session is refused.
  const third = await MigrationLink.connect(receiver.address);
  t.teardown(() => third.close());
  await t.throwsAsync(third.start(sessionStart('fm-third')), { message: /too many sessions at once \(1; --max-sessions\)/ });
  t.is(await scrape(url, refused('too_many_sessions')), 1);
  t.is(await scrape(url, refused('image_too_big')), 1);
  t.is(await scrape(url, refused('unauthenticated')), 0);
  t.log(`refused: image_too_big 1, too_many_sessions 1; takeovers 1`);
});

test('sender: a receiver kill and restart mid-migration counts one precopy link break and one reconnect', async (t) => {
  const images = path.join(tempDir(t, 'precopy-failure-metrics-'), 'images');
  const start = (port = 0) => startReceiver({ images, listen: `127.0.0.1:${port}`, env: { PRECOPY_LOG: 'debug' } });
  let receiver = await start();
  t.teardown(() => receiver.stop());
  const target = await Target.start({ mib: 32, seed: 72 });
  t.teardown(() => target.kill());
  await target.writers(1, 10_000_000);
  const metricsPort = await freePort();
  const url = `http://127.0.0.1:${metricsPort}/metrics`;
  // --downtime-ms 1 with a writer running never converges: the sender keeps running (and serving
  // its metrics) until it is told to stop.
  const sender = startSender(
    [
      '--pid',
      String(target.pid),
      '--to',
      receiver.address,
      '--session',
      `fm-resume-${process.pid}`,
      '--downtime-ms',
      '1',
      '--max-rounds',
      '10000',
      '--reconnect-timeout',
      '30',
      '--metrics-listen',
      `127.0.0.1:${metricsPort}`,
    ],
    { json: false },
  );
  let finished = false;
  const done = sender.done.finally(() => (finished = true));
  try {
    await waitFor(
      () => roundsStarted(receiver.stderr(), 'PRECOPY').includes(1),
      'pre-copy round 1',
      () => finished,
    );
    t.is(await scrape(url, 'precopy_reconnects_total'), 0);
    const port = receiver.port;
    await receiver.kill();
    receiver = await start(port);
    // A round reaches the new receiver only after the resume was accepted (and counted).
    await waitFor(
      () => roundsStarted(receiver.stderr(), 'PRECOPY').length >= 1,
      'a round after the resume',
      () => finished,
    );
    const reconnects = await scrape(url, 'precopy_reconnects_total');
    t.is(reconnects, 1);
    t.is(await scrape(url, 'precopy_link_breaks_total{phase="precopy"}'), 1);
    t.is(await scrape(url, 'precopy_link_breaks_total{phase="frozen"}'), 0);
    t.log(`sender /metrics after one receiver restart: reconnects ${reconnects}, link breaks (precopy) 1`);
  } finally {
    sender.child.kill('SIGTERM');
    const run = await done;
    t.log(`sender's last line: ${run.stderr.trim().split('\n').pop()}`);
  }
  t.is((await target.check()).bad, 0, 'the target runs on, consistent');
});

test('meteredTransfer: a break after a frozen round counts as frozen; retries count one break; a resume counts a reconnect', async (t) => {
  const metrics = new SenderMetrics();
  let attempts = 0;
  const inner = {
    description: 'fake',
    reopen: async () => {
      if (++attempts < 3) throw new Error('connection refused');
      return { sessionId: 's', resumed: true, lastDurableRound: 4 };
    },
    beginRound: async () => undefined,
  } as unknown as PageTransfer;
  const metered = meteredTransfer(inner, metrics);
  await metered.beginRound(5, 'STOP_AND_COPY', []);
  const start = sessionStart('s', { resume: true }) as Parameters<PageTransfer['reopen']>[0];
  await t.throwsAsync(metered.reopen(start));
  await t.throwsAsync(metered.reopen(start));
  await metered.reopen(start);
  const text = await metrics.text();
  t.regex(text, /^precopy_link_breaks_total\{phase="frozen"\} 1$/m);
  t.regex(text, /^precopy_link_breaks_total\{phase="precopy"\} 0$/m);
  t.regex(text, /^precopy_reconnects_total 1$/m);
  t.notRegex(text, /precopy_refused_streams_total|precopy_session_takeovers_total/, 'receiver-only metrics are not on the sender');
  metrics.close();
});

function tokenFile(dir: string, name: string, token: string): string {
  const file = path.join(dir, `${name}.token`);
  fs.writeFileSync(file, `${token}\n`, { mode: 0o600 });
  return file;
}
