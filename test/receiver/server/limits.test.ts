// Receiver limits (`receiver serve --max-sessions --max-image-bytes --max-message-bytes
// --max-rate`) against real receiver processes: each refusal is RESOURCE_EXHAUSTED with a reason
// naming the flag, exactly as the sender prints it, and costs no other session anything.

import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import * as grpc from '@grpc/grpc-js';
import { parseSizeFlag } from '../../../common/cli';
import { LinkError, MigrationLink } from '../../../sender/transfer/migration-link';
import { serializeSenderMessage } from '../../../proto/service';
import { oversized } from '../../../receiver/server/message-scan';
import { SessionSlots } from '../../../receiver/server/session-limits';
import { pagesNotHeld } from '../../../common/page-runs';
import { MAX_VMAS } from '../../../image/input-checks';
import { startReceiver } from '../../helpers/receiver';
import { commitOf, exchange, grpcCode, pageBatch, roundEnd, sessionStart, sessionState, sessionWithRoundZero } from './server-client';
import { Model, PS, pagesOf, tempDir, vma } from '../../image/store-helpers';

const A = 0x7f6600000000;
const LAYOUT = [vma(A, 32)];

test('parseSizeFlag: bytes and binary suffixes; clear errors', (t) => {
  t.is(parseSizeFlag(undefined, '--x', 7, 0, 2 ** 50), 7);
  t.is(parseSizeFlag('4096', '--x', 0, 0, 2 ** 50), 4096);
  t.is(parseSizeFlag('512K', '--x', 0, 0, 2 ** 50), 512 << 10);
  t.is(parseSizeFlag('1.5g', '--x', 0, 0, 2 ** 50), 1.5 * 2 ** 30);
  t.is(parseSizeFlag('2GiB', '--x', 0, 0, 2 ** 50), 2 ** 31);
  t.is(parseSizeFlag('3T', '--x', 0, 0, 2 ** 50), 3 * 2 ** 40);
  t.throws(() => parseSizeFlag('1X', '--x', 0, 0, 2 ** 50), { message: /--x expects a size in bytes, optionally with a K, M, G or T suffix/ });
  t.throws(() => parseSizeFlag('-1', '--x', 0, 0, 2 ** 50), { message: /expects a size/ });
  t.throws(() => parseSizeFlag('1K', '--x', 0, 4096, 2 ** 50), { message: "--x must be between 4.00 KiB and 1024 TiB, got '1K'" });
});

test('SessionSlots: a slot per session, a takeover keeps its slot, a release by a former holder frees nothing', (t) => {
  const slots = new SessionSlots<string>(2);
  slots.claim('a', 's1');
  slots.claim('b', 's2');
  t.throws(() => slots.claim('c', 's3'), { message: 'too many sessions at once (2; --max-sessions)' });
  slots.claim('a', 's4'); // takeover of a
  slots.release('a', 's1'); // the stale stream lets go: a stays with s4
  t.is(slots.holder('a'), 's4');
  t.is(slots.size, 2);
  slots.release('b', 's2');
  slots.claim('c', 's3');
  t.is(slots.size, 2);
});

test('pagesNotHeld counts only the pages an image does not hold yet', (t) => {
  const held: [number, number][] = [
    [A, A + 4 * PS],
    [A + 10 * PS, A + 12 * PS],
  ];
  t.is(pagesNotHeld([A, 4], held, PS), 0);
  t.is(pagesNotHeld([A + 2 * PS, 4, A + 9 * PS, 4], held, PS), 2 + 2);
  t.is(pagesNotHeld([A + 20 * PS, 3], held, PS), 3);
  t.is(pagesNotHeld([A + 20 * PS, 3], [], PS), 3);
});

test('--max-sessions: the next session is refused before it touches anything; a refused resume stays resumable', async (t) => {
  const images = path.join(tempDir(t, 'precopy-limits-'), 'images');
  const receiver = await startReceiver({ images, args: ['--max-sessions', '2'] });
  t.teardown(() => receiver.stop());

  // A session left resumable (its sender went away), then two others fill both slots.
  const left = await sessionWithRoundZero(receiver.address, 'lim-left', LAYOUT);
  await left.link.close();
  const one = await sessionWithRoundZero(receiver.address, 'lim-1', LAYOUT);
  t.teardown(() => one.link.close());
  const two = await sessionWithRoundZero(receiver.address, 'lim-2', LAYOUT);
  t.teardown(() => two.link.close());

  for (const start of [sessionStart('lim-3'), sessionStart('lim-left', { resume: true })]) {
    const link = await MigrationLink.connect(receiver.address);
    const err = await t.throwsAsync(link.start(start), { instanceOf: LinkError });
    await link.close();
    t.is(err?.message, `receiver at ${receiver.address}: too many sessions at once (2; --max-sessions) (RESOURCE_EXHAUSTED)`);
    t.false(err?.retryable);
    t.log(err?.message);
  }
  t.is(await sessionState(images, 'lim-3'), undefined, 'the refused session was not created');
  t.is(await sessionState(images, 'lim-left'), 'receiving', 'the refused resume left the session resumable');

  // A slot frees up (lim-1 commits and ends): the resume now succeeds and commits.
  t.true((await one.link.commit(commitOf(one.model))).ok);
  await one.link.close();
  const again = await MigrationLink.connect(receiver.address);
  t.teardown(() => again.close());
  t.is((await again.start(sessionStart('lim-left', { resume: true }))).lastDurableRound, 0);
  t.true((await again.commit(commitOf(left.model))).ok);
  t.true((await two.link.commit(commitOf(two.model))).ok);
});

/** A receiver started with `args`, and session `id` opened on it with round 0 started. */
async function roundZeroUnder(t: ExecutionContext, args: string[], id: string, layout = LAYOUT) {
  const images = path.join(tempDir(t, 'precopy-limits-'), 'images');
  const receiver = await startReceiver({ images, args });
  t.teardown(() => receiver.stop());
  const model = new Model();
  model.setLayout(layout);
  const link = await MigrationLink.connect(receiver.address);
  t.teardown(() => link.close());
  await link.start(sessionStart(id));
  await link.send({ roundStart: { round: 0, phase: 'PRECOPY', layout } });
  return { images, receiver, model, link };
}

test('--max-image-bytes: pages re-sent are not counted twice; the batch that would exceed it is refused', async (t) => {
  const { images, receiver, model, link } = await roundZeroUnder(t, ['--max-image-bytes', '64K'], 'img-1'); // 16 pages
  await link.send({ pages: pageBatch(model, pagesOf(A, 8), 1) });
  for (let gen = 2; gen < 6; gen++) await link.send({ pages: pageBatch(model, pagesOf(A, 8), gen) }); // the same 8 pages again
  await link.send({ pages: pageBatch(model, pagesOf(A + 8 * PS, 8), 1, { zeros: new Set(pagesOf(A + 12 * PS, 4)) }) });
  t.is((await link.endRound(roundEnd(0))).pagesStored, 16, 'exactly at the limit');

  // A run outside the layout is still refused for what it is, not for its size.
  const bad = await sessionWithRoundZero(receiver.address, 'img-bad', [vma(A, 2)]);
  t.teardown(() => bad.link.close());
  await bad.link.send({ roundStart: { round: 1, phase: 'PRECOPY', layout: [vma(A, 2)] } });
  await bad.link.send({ pages: pageBatch(new Model(), pagesOf(A + 64 * PS, 20), 1) }).catch(() => undefined);
  const badErr = await bad.link.whenEnded();
  t.is(badErr?.code, grpc.status.INVALID_ARGUMENT, badErr?.message);

  await link.send({ roundStart: { round: 1, phase: 'PRECOPY', layout: LAYOUT } });
  await link.send({ pages: pageBatch(new Model(), pagesOf(A + 15 * PS, 2), 2) }).catch(() => undefined);
  const err = await link.whenEnded();
  t.is(err?.code, grpc.status.RESOURCE_EXHAUSTED);
  t.is(
    err?.message,
    `receiver at ${receiver.address}: session img-1: image would exceed 64.0 KiB (--max-image-bytes): it holds 16 pages, the batch adds 1, the limit is 16 (RESOURCE_EXHAUSTED)`,
  );
  t.log(err?.message);
  t.is(await sessionState(images, 'img-1'), 'failed');
});

test('--max-message-bytes: a larger message is refused by its size, smaller ones pass', async (t) => {
  const { images, model, link } = await roundZeroUnder(t, ['--max-message-bytes', '64K'], 'msg-1');
  await link.send({ pages: pageBatch(model, pagesOf(A, 8), 1) }); // 32 KiB
  t.is((await link.endRound(roundEnd(0))).pagesStored, 8);
  await link.send({ roundStart: { round: 1, phase: 'PRECOPY', layout: LAYOUT } });
  await link.send({ pages: pageBatch(new Model(), pagesOf(A, 32), 2) }).catch(() => undefined); // 128 KiB
  const err = await link.whenEnded();
  t.is(err?.code, grpc.status.RESOURCE_EXHAUSTED);
  t.regex(err!.message, /larger than max \(\d+ vs\.? 65536\)/);
  t.log(err?.message);
  t.is(await sessionState(images, 'msg-1'), 'receiving', 'resumable at round 0');
});

// The one time figure here is a lower bound the token bucket guarantees by construction (a slow
// machine only makes it longer), not a performance expectation.
test('--max-rate: page batches are delayed to the rate, the migration completes without an error', async (t) => {
  const { model, link } = await roundZeroUnder(t, ['--max-rate', '1M'], 'rate-1', [vma(A, 1024)]);
  const t0 = performance.now();
  for (let i = 0; i < 4; i++) await link.send({ pages: pageBatch(model, pagesOf(A + i * 256 * PS, 256), 1) });
  await link.endRound(roundEnd(0));
  const seconds = (performance.now() - t0) / 1000;
  t.true((await link.commit(commitOf(model))).ok);
  t.log(`4 MiB at --max-rate 1M (1 s burst): ${seconds.toFixed(2)} s, ${(4 / seconds).toFixed(2)} MiB/s`);
  t.true(seconds >= 2.9, `4 MiB with a 1 MiB burst at 1 MiB/s cannot take less than 3 s, took ${seconds.toFixed(2)} s`);
});

/** SenderMessage field `field` holding `entries` copies of the 2-byte inner field `inner` (an empty entry). */
function emptyEntries(field: number, inner: number, entries: number): Buffer {
  const body = Buffer.alloc(2 * entries);
  for (let i = 0; i < body.length; i += 2) body[i] = (inner << 3) | 2;
  const len: number[] = [];
  for (let n = body.length; ; n = Math.floor(n / 128)) {
    len.push(n >= 128 ? (n % 128) | 128 : n);
    if (n < 128) break;
  }
  return Buffer.concat([Buffer.from([(field << 3) | 2, ...len]), body]);
}

test('message scan: entries cheap to send and costly to decode are counted on the wire', (t) => {
  t.is(oversized(serializeSenderMessage({ pages: pageBatch(new Model(), pagesOf(A, 4), 1) })), null);
  t.is(oversized(serializeSenderMessage({ roundStart: { round: 0, phase: 'PRECOPY', layout: LAYOUT } })), null);
  t.is(oversized(Buffer.from([0x12, 0x7f, 0x01])), null, "bad bytes are the decoder's to name");
  t.is(oversized(emptyEntries(2, 3, MAX_VMAS)), null, 'MAX_VMAS entries pass');
  t.deepEqual(oversized(emptyEntries(2, 3, MAX_VMAS + 1)), { msg: 'oversized', error: `RoundStart layout has ${MAX_VMAS + 1} entries, more than ${MAX_VMAS}` });
  t.deepEqual(oversized(emptyEntries(6, 2, 70_000)), { msg: 'oversized', error: 'Commit threads has 70000 entries, more than 65536' });
  // Repeated top-level fields merge: their entries add up.
  const half = emptyEntries(6, 1, 150_000);
  t.deepEqual(oversized(Buffer.concat([half, half])), { msg: 'oversized', error: `Commit layout has 300000 entries, more than ${MAX_VMAS}` });
});

test('a 4 MiB RoundStart of 2M empty VMAs is refused before it is decoded; the receiver stays small', async (t) => {
  const images = path.join(tempDir(t, 'precopy-limits-'), 'images');
  const receiver = await startReceiver({ images });
  t.teardown(() => receiver.stop());
  const r = await exchange(receiver.address, [{ start: sessionStart('scan-1') }, emptyEntries(2, 3, 2 << 20)]);
  t.is(grpcCode(r.code), 'RESOURCE_EXHAUSTED', r.details);
  t.is(r.details, `RoundStart layout has 2097152 entries, more than ${MAX_VMAS}`);
  t.is(await sessionState(images, 'scan-1'), 'failed');
  // Decoded, those entries would take ~370 MiB of heap (measured with protobufjs).
  const hwm = Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${receiver.pid}/status`, 'utf8'))![1]) * 1024;
  t.log(`receiver peak RSS ${(hwm / 2 ** 20).toFixed(0)} MiB`);
  t.true(hwm < 256 << 20, `peak RSS ${hwm}`);
});
