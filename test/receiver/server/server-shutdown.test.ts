// Health service and graceful shutdown of a real receiver process: grpc.health.v1 answers on the
// same port; SIGTERM turns it NOT_SERVING, gives streams --shutdown-grace, cuts the rest, exits 0,
// and the session that was cut resumes after a restart on the same images directory.

import * as path from 'node:path';
import test from 'ava';
import * as grpc from '@grpc/grpc-js';
import { MigrationLink } from '../../../sender/transfer/migration-link';
import { healthService, type HealthCheckResponse, type ServingStatus } from '../../../proto/health';
import { startReceiver } from '../../helpers/receiver';
import { assertImageEquals, commitOf, grpcCode, pageBatch, roundEnd, roundUnderWay, sessionStart, sessionState, sessionWithRoundZero } from './server-client';
import { pagesOf, tempDir, vma } from '../../image/store-helpers';

const A = 0x7f7800000000;
const LAYOUT = [vma(A, 16)];

type HealthClient = grpc.Client & {
  Check(req: { service: string }, cb: (err: grpc.ServiceError | null, res?: HealthCheckResponse) => void): void;
  Watch(req: { service: string }): grpc.ClientReadableStream<HealthCheckResponse>;
};

function healthClient(address: string): HealthClient {
  const Health = healthService();
  return new Health(address, grpc.credentials.createInsecure()) as unknown as HealthClient;
}

function check(client: HealthClient, service: string): Promise<ServingStatus | string> {
  return new Promise((resolve) => client.Check({ service }, (err, res) => resolve(err ? grpcCode(err.code) : res!.status)));
}

test('health: SERVING for the server and the Migration service; unknown services are NOT_FOUND', async (t) => {
  const receiver = await startReceiver({ images: path.join(tempDir(t, 'precopy-health-'), 'images') });
  t.teardown(() => receiver.stop());
  const health = healthClient(receiver.address);
  t.teardown(() => health.close());
  t.is(await check(health, ''), 'SERVING');
  t.is(await check(health, 'precopy.v1.Migration'), 'SERVING');
  t.is(await check(health, 'no.such.Service'), 'NOT_FOUND');
});

test('SIGTERM: NOT_SERVING, exit 0, the cut session resumes after a restart', async (t) => {
  const dir = tempDir(t, 'precopy-shutdown-');
  const images = path.join(dir, 'images');
  const receiver = await startReceiver({ images, args: ['--shutdown-grace', '1'], env: { PRECOPY_LOG: 'info' } });
  const health = healthClient(receiver.address);
  t.teardown(() => health.close());
  const statuses: ServingStatus[] = [];
  const watch = health.Watch({ service: 'precopy.v1.Migration' });
  watch.on('error', () => undefined);
  await new Promise<void>((resolve) =>
    watch.on('data', (r: HealthCheckResponse) => {
      statuses.push(r.status);
      resolve();
    }),
  );
  t.deepEqual(statuses, ['SERVING']);

  // A migration in flight: round 0 durable, round 1 under way.
  const { link, model } = await sessionWithRoundZero(receiver.address, 'sd-1', LAYOUT);
  await roundUnderWay(link, 1, LAYOUT, pagesOf(A, 2), 5);

  const watchEnded = new Promise<void>((resolve) => watch.on('status', () => resolve()));
  t.deepEqual(await receiver.stop('SIGTERM'), { code: 0, signal: null });
  await watchEnded;
  t.deepEqual(statuses, ['SERVING', 'NOT_SERVING']);
  const cut = await link.whenEnded();
  t.true(cut?.retryable, `${grpcCode(cut?.code)}: ${cut?.message}`);
  await link.close();
  t.regex(receiver.stderr(), /SIGTERM: shutting down/);
  t.regex(receiver.stderr(), /cutting them/);

  const again = await startReceiver({ images });
  t.teardown(() => again.stop());
  t.is(await sessionState(images, 'sd-1'), 'receiving');
  const resumed = await MigrationLink.connect(again.address);
  t.teardown(() => resumed.close());
  t.is((await resumed.start(sessionStart('sd-1', { resume: true }))).lastDurableRound, 0);
  await resumed.send({ roundStart: { round: 1, phase: 'STOP_AND_COPY', layout: LAYOUT } });
  // Everything dirtied since the last durable round, the pages of the cut round included.
  await resumed.send({ pages: pageBatch(model, pagesOf(A, 4), 5, { encoding: 'LZ4' }) });
  await resumed.endRound(roundEnd(1));
  t.true((await resumed.commit(commitOf(model))).ok);
  await resumed.close();
  await assertImageEquals(t, images, 'sd-1', model, path.join(dir, 'export'));
});

test('SIGINT with nothing in flight: prompt exit 0', async (t) => {
  const receiver = await startReceiver({ images: path.join(tempDir(t, 'precopy-shutdown-'), 'images'), env: { PRECOPY_LOG: 'info' } });
  t.deepEqual(await receiver.stop('SIGINT'), { code: 0, signal: null });
  t.regex(receiver.stderr(), /SIGINT: shutting down/);
});
