// proto/message-buffers.ts, the sender link's reused buffers for serialized page batches: a batch
// encoded into one decodes to itself, a buffer is handed out again only after it was given back.

import test from 'ava';
import type { PageBatch } from '../../../proto/messages';
import { MessageBuffers } from '../../../sender/transfer/message-buffers';
import { decodePagesMessage, encodePagesMessage } from '../../../proto/page-codec';

const batch = (fill: number): PageBatch => ({
  runs: [0x7f0000000000, 256],
  zeroMap: Buffer.alloc(0),
  encoding: 'RAW',
  rawLength: 1 << 20,
  payload: Buffer.alloc(1 << 20, fill),
});

test('a page batch encoded into a reused buffer decodes to itself; given back, the buffer is reused', (t) => {
  const pool = new MessageBuffers(2);
  const a = encodePagesMessage(batch(1), pool.take);
  const b = encodePagesMessage(batch(2), pool.take);
  t.not(a.buffer, b.buffer, 'two batches in use never share a buffer');
  t.deepEqual(decodePagesMessage(a), { msg: 'pages', pages: batch(1) });
  t.deepEqual(decodePagesMessage(b), { msg: 'pages', pages: batch(2) });
  pool.give(a);
  pool.give(a); // twice: still handed out once
  const c = encodePagesMessage(batch(3), pool.take);
  t.is(c.buffer, a.buffer, 'the given-back buffer is reused');
  t.not(encodePagesMessage(batch(4), pool.take).buffer, c.buffer);
  t.deepEqual(decodePagesMessage(b), { msg: 'pages', pages: batch(2) }, 'the one in use is untouched');
  t.deepEqual(decodePagesMessage(c), { msg: 'pages', pages: batch(3) });
});

test('small messages are not pooled; at most capacity buffers are kept', (t) => {
  const pool = new MessageBuffers(1);
  const small = pool.take(100);
  t.is(small.length, 100);
  pool.give(small);
  const x = pool.take(1 << 20);
  const y = pool.take(1 << 20);
  pool.give(x);
  pool.give(y);
  t.is(pool.take(1 << 20).buffer, x.buffer);
  t.not(pool.take(1 << 20).buffer, y.buffer, 'y was beyond capacity');
});
