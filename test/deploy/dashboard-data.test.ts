// The end-to-end check: a real receiver (`receiver serve --metrics-listen`) scraped every
// second by a real Prometheus, a real migration of a running target by the sender CLI, then every
// panel query of the shipped dashboard evaluated through Prometheus' HTTP API: none may come back
// empty. The receiver's metrics must agree with the round records it keeps on disk, and the
// session report of that migration must render in Chromium.

import test from 'ava';
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { ImageStore } from '../../image/image-store';
import { run as reportCommand } from '../../receiver/commands/report';
import { panelsWithoutData } from '../helpers/dashboard';
import { Prometheus, freePort } from '../helpers/prometheus';
import { renderPage } from '../helpers/chromium';
import { startReceiver, type ReceiverHandle } from '../helpers/receiver';
import { REPO_ROOT, Target } from '../helpers/target';
import { tempDir } from '../image/store-helpers';

const SENDER_CLI = path.join(REPO_ROOT, 'dist', 'sender', 'cli.js');

test('after a real migration, every panel query of the dashboard returns data', async (t) => {
  const dir = tempDir(t, 'precopy-dash-');
  const images = path.join(dir, 'images');
  const metricsPort = await freePort();
  let receiver: ReceiverHandle | undefined;
  let prom: Prometheus | undefined;
  let target: Target | undefined;
  try {
    // `serve` starts its metrics server before it prints the ready line.
    receiver = await startReceiver({ images, args: ['--metrics-listen', `127.0.0.1:${metricsPort}`] });
    prom = await Prometheus.start({ targets: [`127.0.0.1:${metricsPort}`] });
    await prom.waitFor('up == 1');

    // A target that keeps writing, so the migration takes several rounds.
    target = await Target.start({ mib: 64 });
    await target.writers(1, 16 << 20);
    const start = Date.now() / 1000;
    const session = 'dash-1';
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [SENDER_CLI, 'migrate', '--pid', String(target.pid), '--to', receiver.address, '--session', session, '--json'],
      { maxBuffer: 16 << 20 },
    );
    t.truthy(stdout);
    t.is((await target.check()).bad, 0, 'the target runs on unharmed');

    // The migration's end and two more scrapes, so rates over its last rounds have their samples.
    await prom.waitFor(`precopy_migrations_total{result="committed"} >= 1`);
    const ended = Date.now() / 1000;
    await prom.waitFor('timestamp(up)', (s) => Number(s.value[1]) > ended + 2);

    // A plain migration hands nothing over: the handover counters and gauge show their zeros, but
    // restore percentiles need a handover, which needs a destination host of its own
    // (test/helpers/dest-host.ts). dashboard.test.ts proves that panel's queries with fed metrics.
    const noHandover = ['Handover restore time'];
    const empty = await panelsWithoutData(prom, session, Math.floor(start) - 1, Math.ceil(Date.now() / 1000), noHandover);
    t.deepEqual(empty, [], 'panels without data');

    // The receiver's metrics agree with the round records it keeps.
    const img = await new ImageStore(images).open(session);
    const rounds = img.rounds();
    await img.close();
    const [r] = await prom.query(`precopy_rounds_total{session="${session}"}`);
    t.is(Number(r.value[1]), rounds.length);
    const [sent] = await prom.query(`precopy_transferred_bytes_total{session="${session}"}`);
    t.is(
      Number(sent.value[1]),
      rounds.reduce((a, x) => a + x.wireBytes, 0),
    );
    const [target_] = await prom.query(`precopy_downtime_target_seconds{session="${session}"}`);
    t.is(Number(target_.value[1]), 0.3, "the sender's default --downtime-ms 300 reached the receiver");

    // The session report of the same migration renders with its charts.
    const html = path.join(dir, 'dash-1.html');
    t.is(await reportCommand(['--images', images, session, '--out', html]), 0);
    const page = await renderPage(html);
    t.deepEqual(page.console, []);
    t.is((page.dom.match(/<svg class="chart"/g) ?? []).length, 5);
    t.is((page.dom.match(/<tr><td>/g) ?? []).length, rounds.length);
    t.regex(page.dom, /<dt>Downtime target<\/dt><dd>300 ms<\/dd>/, "the report shows the sender's downtime target");
  } catch (err) {
    if (receiver) t.log(`receiver log:\n${receiver.stderr().slice(-8000)}`);
    throw err;
  } finally {
    await target?.kill();
    await prom?.stop();
    await receiver?.stop();
  }
});
