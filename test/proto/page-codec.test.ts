// The hand-written PageBatch codec (proto/page-codec.ts) against protobufjs through proto-loader:
// the same bytes out, the same messages in, and hostile bytes turned into MalformedMessage
// instead of exceptions.

import test from 'ava';
import type { PageBatch } from '../../proto/messages';
import { PAGES_HEADER_ROOM, decodePagesMessage, encodePagesMessage, encodePagesMessageBefore } from '../../proto/page-codec';
import { migrationDefinition } from '../../proto/service';

const proto = migrationDefinition('proto-loader').Migrate;
const fast = migrationDefinition('fast').Migrate;

const BATCHES: Record<string, PageBatch> = {
  'raw pages': {
    runs: [0x7ffd12340000, 3, 0x7ffd12350000, 1],
    zeroMap: Buffer.alloc(0),
    encoding: 'RAW',
    rawLength: 16384,
    payload: Buffer.alloc(16384, 0xab),
  },
  'lz4 with zero pages': { runs: [0x1000, 9], zeroMap: Buffer.from([0x05, 0x01]), encoding: 'LZ4', rawLength: 6 * 4096, payload: Buffer.from('lz4 bytes') },
  'only zero pages': { runs: [0x555555554000, 16], zeroMap: Buffer.from([0xff, 0xff]), encoding: 'RAW', rawLength: 0, payload: Buffer.alloc(0) },
  'addresses near 2^53': { runs: [2 ** 53 - 4096 * 8, 2], zeroMap: Buffer.alloc(0), encoding: 'RAW', rawLength: 8192, payload: Buffer.alloc(8192, 1) },
  'empty batch': { runs: [], zeroMap: Buffer.alloc(0), encoding: 'RAW', rawLength: 0, payload: Buffer.alloc(0) },
};

for (const [name, batch] of Object.entries(BATCHES)) {
  test(`codec: ${name}: each side reads what the other wrote`, (t) => {
    // protobufjs also writes fields that hold their default value; both encodings are valid.
    const mine = encodePagesMessage(batch);
    const theirs = proto.requestSerialize({ pages: batch });
    t.deepEqual(decodePagesMessage(mine), { msg: 'pages', pages: batch });
    t.deepEqual(decodePagesMessage(theirs), { msg: 'pages', pages: batch });
    t.deepEqual({ ...proto.requestDeserialize(mine) }, { msg: 'pages', pages: batch });
  });

  test(`codec: ${name}: framed in the payload's headroom, the same bytes as a copy`, (t) => {
    const area = Buffer.alloc(PAGES_HEADER_ROOM + batch.payload.length, 0xee);
    const payload = area.subarray(PAGES_HEADER_ROOM);
    batch.payload.copy(payload);
    const inPlace = encodePagesMessageBefore({ ...batch, payload, payloadHeadroom: PAGES_HEADER_ROOM });
    if (batch.payload.length === 0) {
      t.is(inPlace, null, 'no payload: nothing to save');
      return;
    }
    t.true(inPlace!.equals(encodePagesMessage(batch)));
    t.is(inPlace!.buffer, area.buffer, 'a view of the caller memory, not a copy');
    t.is(encodePagesMessageBefore({ ...batch, payload, payloadHeadroom: 2 }), null, 'too little room: the caller copies');
    t.is(encodePagesMessageBefore({ ...batch, payload: batch.payload }), null, 'no headroom declared');
  });
}

test('codec: other messages and merged messages go to proto-loader', (t) => {
  const start = proto.requestSerialize({ start: { sessionId: 's' } });
  t.is(decodePagesMessage(start), null);
  t.is(fast.requestDeserialize(start).start.sessionId, 's');
  // Two top-level fields in one message: not the fast path's business, proto-loader decides.
  const merged = Buffer.concat([encodePagesMessage(BATCHES['raw pages']), start]);
  t.is(decodePagesMessage(merged), null);
  t.deepEqual(fast.requestDeserialize(merged), proto.requestDeserialize(merged));
});

test('codec: unpacked runs and unknown fields are read as protobuf says', (t) => {
  // PageBatch{runs: 0x1000 (unpacked), 99: varint 7, runs: 2 (unpacked), raw_length: 8192}
  const inner = Buffer.from([0x08, 0x80, 0x20, 0x98, 0x06, 0x07, 0x08, 0x02, 0x20, 0x80, 0x40]);
  const msg = Buffer.concat([Buffer.from([0x1a, inner.length]), inner]);
  const got = decodePagesMessage(msg);
  t.like(got, { msg: 'pages', pages: { runs: [0x1000, 2], rawLength: 8192, encoding: 'RAW' } });
  t.deepEqual(got, proto.requestDeserialize(msg));
});

const MALFORMED: Record<string, number[]> = {
  'length past the end': [0x1a, 0x05, 0x0a, 0xff],
  'truncated varint': [0x1a, 0x02, 0x20, 0x80],
  'varint of 11 bytes': [0x1a, 0x0c, 0x20, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
  'field number 0': [0x1a, 0x02, 0x00, 0x01],
  'group wire type': [0x1a, 0x02, 0x0b, 0x01],
  'packed runs cut inside a varint': [0x1a, 0x03, 0x0a, 0x01, 0x80],
};

for (const [name, bytes] of Object.entries(MALFORMED)) {
  test(`codec: malformed (${name}) is a MalformedMessage, not an exception`, (t) => {
    const got = fast.requestDeserialize(Buffer.from(bytes));
    t.is(got.msg, 'malformed');
    t.regex(got.error, /^malformed /);
  });
}

test('codec: the proto-loader path never throws either', (t) => {
  t.like(proto.requestDeserialize(Buffer.from([0x12, 0x7f, 0x01])), { msg: 'malformed' });
  t.deepEqual(proto.requestDeserialize(Buffer.alloc(0)), {});
});

test('codec: the encoder refuses what the wire cannot carry', (t) => {
  t.throws(() => encodePagesMessage({ ...BATCHES['raw pages'], runs: [-4096, 1] }), { instanceOf: RangeError });
  t.throws(() => encodePagesMessage({ ...BATCHES['raw pages'], runs: [0.5, 1] }), { instanceOf: RangeError });
  t.throws(() => encodePagesMessage({ ...BATCHES['raw pages'], encoding: 'ZSTD' as never }), { instanceOf: RangeError });
});
