// Page batches framed in place (sender/transfer/grpc-framing.ts) against a real `receiver serve`:
// the sender reuses a batch's payload slot as soon as send() returns, so every byte must have
// left by then. Batches small enough for grpc-js's retry buffer are the case that once broke
// (its write callback came before HTTP/2 had written them).

import * as path from 'node:path';
import test from 'ava';
import { MigrationLink } from '../../../sender/transfer/migration-link';
import { frameInPlace, GRPC_PREFIX_BYTES } from '../../../sender/transfer/grpc-framing';
import { PAGES_HEADER_ROOM, encodePagesMessageBefore } from '../../../proto/page-codec';
import { startReceiver } from '../../helpers/receiver';
import { assertImageEquals, commitOf, pageBatch, roundEnd, sessionStart, sessionState } from '../../receiver/server/server-client';
import { Model, PS, pagesOf, tempDir, vma } from '../../image/store-helpers';

const A = 0x7f1400000000;
const RAW = { zeroMap: Buffer.alloc(0), encoding: 'RAW' as const, rawLength: 2 * PS };

test('frameInPlace writes the gRPC prefix into the headroom before the message, same memory', (t) => {
  const slot = Buffer.alloc(PAGES_HEADER_ROOM + 2 * PS).subarray(PAGES_HEADER_ROOM);
  slot.fill(7);
  const message = encodePagesMessageBefore({ ...RAW, runs: [A, 2], payload: slot, payloadHeadroom: PAGES_HEADER_ROOM }, GRPC_PREFIX_BYTES)!;
  t.true(frameInPlace(message));
  const prefix = Buffer.from(message.buffer, message.byteOffset - GRPC_PREFIX_BYTES, GRPC_PREFIX_BYTES);
  t.is(prefix[0], 0, 'not compressed');
  t.is(prefix.readUInt32BE(1), message.length);
  t.is(message.buffer, slot.buffer, 'no copy');
  const header = message.length - slot.length;
  const roomy = { ...RAW, runs: [A, 2], payload: slot, payloadHeadroom: header + GRPC_PREFIX_BYTES };
  t.truthy(encodePagesMessageBefore(roomy, GRPC_PREFIX_BYTES), 'header and prefix fit exactly');
  t.is(
    encodePagesMessageBefore({ ...roomy, payloadHeadroom: header + GRPC_PREFIX_BYTES - 1 }, GRPC_PREFIX_BYTES),
    null,
    'no room for the prefix: the caller copies',
  );
});

test('batches sent from one reused slot, overwritten as soon as send() returns, arrive intact', async (t) => {
  const dir = tempDir(t, 'precopy-framing-');
  const images = path.join(dir, 'images');
  const receiver = await startReceiver({ images });
  t.teardown(() => receiver.stop());
  const link = await MigrationLink.connect(receiver.address);
  t.teardown(() => link.close());
  const sizes = [1, 4, 16, 64, 1024, 3, 2, 1]; // 4 KiB .. 4 MiB: under and over grpc-js's 256 KiB retry buffer
  const total = sizes.reduce((a, b) => a + b, 0);
  const model = new Model();
  const layout = [vma(A, total)];
  model.setLayout(layout);
  await link.start(sessionStart('framing-1'));
  await link.send({ roundStart: { round: 0, phase: 'PRECOPY', layout } });
  const slot = Buffer.allocUnsafeSlow(PAGES_HEADER_ROOM + 1024 * PS).subarray(PAGES_HEADER_ROOM);
  let at = A;
  for (const n of sizes) {
    const b = pageBatch(model, pagesOf(at, n), 1);
    b.payload.copy(slot);
    await link.send({ pages: { ...b, payload: slot.subarray(0, b.payload.length), payloadHeadroom: PAGES_HEADER_ROOM } });
    slot.fill(0xee); // what the stager does next: the slot's next batch
    at += n * PS;
  }
  t.is((await link.endRound(roundEnd(0))).pagesStored, total);
  await link.send({ roundStart: { round: 1, phase: 'STOP_AND_COPY', layout } });
  const result = await link.commit({ ...commitOf(model), finalRound: roundEnd(1) });
  t.true(result.ok, result.message);
  await link.report({ result: 'committed', downtimeSeconds: 0.01, verify: 'skipped' });
  t.is(await sessionState(images, 'framing-1'), 'committed');
  await assertImageEquals(t, images, 'framing-1', model, path.join(dir, 'export'));
});
