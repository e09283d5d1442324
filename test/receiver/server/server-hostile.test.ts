// Hostile and malformed input against a real receiver: each case is one stream of messages (or
// raw bytes) that must end with the right gRPC status and a message naming the problem, fail its
// own session (never anyone else's), and create nothing outside the images directory. Meanwhile
// another session stays open on the same receiver and commits at the end.

import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import * as grpc from '@grpc/grpc-js';
import { MigrationLink } from '../../../sender/transfer/migration-link';
import type { OutgoingSenderMessage, PageBatch, Phase } from '../../../proto/messages';
import { migrationDefinition } from '../../../proto/service';
import { validSessionId } from '../../../image/input-checks';
import type { SessionState } from '../../../image/image-store';
import { startReceiver, type ReceiverHandle } from '../../helpers/receiver';
import { commitOf, exchange, grpcCode, lz4Block, pageBatch, roundEnd, sessionStart, sessionState } from './server-client';
import { Model, PS, pagesOf, vma } from '../../image/store-helpers';

const A = 0x7f3400000000;
const LAYOUT = [vma(A, 16)];
const parent = mkdtempSync(path.join(os.tmpdir(), 'precopy-hostile-'));
const images = path.join(parent, 'images');
let receiver: ReceiverHandle;

// The well-behaved session that runs across every hostile case.
const goodModel = new Model();
let good: MigrationLink;

test.before(async () => {
  receiver = await startReceiver({ images });
  good = await MigrationLink.connect(receiver.address);
  await good.start(sessionStart('good-1'));
  goodModel.setLayout(LAYOUT);
  await good.send({ roundStart: { round: 0, phase: 'PRECOPY', layout: LAYOUT } });
  await good.send({ pages: pageBatch(goodModel, pagesOf(A, 8), 1) });
});

test.after.always(async () => {
  await good?.close();
  await receiver?.stop();
  rmSync(parent, { recursive: true, force: true });
});

/** Bytes of a page batch built with proto-loader's generic encoder (which lets any enum number through). */
function protoLoaderBytes(m: object): Buffer {
  return migrationDefinition('proto-loader').Migrate.requestSerialize(m);
}

const raw = (pages: number, over: Partial<PageBatch> = {}): { pages: PageBatch } => ({
  pages: { runs: [A, pages], zeroMap: Buffer.alloc(0), encoding: 'RAW', rawLength: pages * PS, payload: Buffer.alloc(pages * PS, 7), ...over },
});
const start = (id: string, over = {}): OutgoingSenderMessage => ({ start: sessionStart(id, over) });
const round0: OutgoingSenderMessage = { roundStart: { round: 0, phase: 'PRECOPY', layout: LAYOUT } };
const opened = (id: string): OutgoingSenderMessage[] => [start(id), round0];

interface Case {
  messages: Array<OutgoingSenderMessage | Buffer>;
  code: grpc.status;
  details: RegExp;
  /** The session the case is about, and the state it must be in afterwards (undefined: no session). */
  session?: string;
  state?: SessionState;
}

const { INVALID_ARGUMENT, FAILED_PRECONDITION, RESOURCE_EXHAUSTED, ALREADY_EXISTS, NOT_FOUND } = grpc.status;

async function hostile(t: ExecutionContext, c: Case): Promise<void> {
  const r = await exchange(receiver.address, c.messages);
  t.is(grpcCode(r.code), grpcCode(c.code), r.details);
  t.regex(r.details, c.details);
  if (c.session !== undefined) t.is(await sessionState(images, c.session), c.state);
}

const cases: Record<string, Case> = {
  'malformed PageBatch bytes': {
    messages: [...opened('h-bytes'), Buffer.from([0x1a, 0x05, 0x0a, 0xff])],
    code: INVALID_ARGUMENT,
    details: /malformed PageBatch/,
    session: 'h-bytes',
    state: 'failed',
  },
  'malformed message bytes': {
    messages: [start('h-bytes2'), Buffer.from([0x12, 0x7f, 0x01])],
    code: INVALID_ARGUMENT,
    details: /malformed message/,
    session: 'h-bytes2',
    state: 'failed',
  },
  'empty message': {
    messages: [start('h-empty'), Buffer.alloc(0)],
    code: INVALID_ARGUMENT,
    details: /empty SenderMessage/,
    session: 'h-empty',
    state: 'failed',
  },
  'pages before SessionStart': { messages: [raw(1)], code: FAILED_PRECONDITION, details: /must begin with SessionStart/ },
  "session id '../x'": { messages: [start('../x')], code: INVALID_ARGUMENT, details: /bad session id '\.\.\/x'/ },
  "session id ''": { messages: [start('')], code: INVALID_ARGUMENT, details: /bad session id ''/ },
  "session id '.x'": { messages: [start('.x')], code: INVALID_ARGUMENT, details: /bad session id '\.x'/ },
  "session id 'a/b'": { messages: [start('a/b')], code: INVALID_ARGUMENT, details: /bad session id/ },
  'session id of 65 characters': { messages: [start('x'.repeat(65))], code: INVALID_ARGUMENT, details: /bad session id/ },
  'page size 1000': { messages: [start('h-ps', { pageSize: 1000 })], code: INVALID_ARGUMENT, details: /page size/, session: 'h-ps' },
  'two SessionStarts': {
    messages: [start('h-two'), start('h-two')],
    code: FAILED_PRECONDITION,
    details: /second SessionStart/,
    session: 'h-two',
    state: 'failed',
  },
  'pages before RoundStart': {
    messages: [start('h-noround'), raw(1)],
    code: FAILED_PRECONDITION,
    details: /outside a round/,
    session: 'h-noround',
    state: 'failed',
  },
  'Discard before RoundStart': {
    messages: [start('h-nodiscard'), { discard: { runs: [A, 1] } }],
    code: FAILED_PRECONDITION,
    details: /outside a round/,
    session: 'h-nodiscard',
    state: 'failed',
  },
  'RoundEnd without RoundStart': {
    messages: [start('h-noend'), { roundEnd: roundEnd(0) }],
    code: FAILED_PRECONDITION,
    details: /outside a round/,
    session: 'h-noend',
    state: 'failed',
  },
  'Commit before any round': {
    messages: [start('h-commit0'), { commit: commitOf(new Model()) }],
    code: FAILED_PRECONDITION,
    details: /before any round/,
    session: 'h-commit0',
    state: 'failed',
  },
  'Commit inside a round': {
    messages: [...opened('h-commitin'), { commit: commitOf(new Model()) }],
    code: FAILED_PRECONDITION,
    details: /round 0 is still open/,
    session: 'h-commitin',
    state: 'failed',
  },
  "Report 'committed' before the commit": {
    messages: [start('h-report'), { report: { result: 'committed' } }],
    code: FAILED_PRECONDITION,
    details: /before the commit/,
    session: 'h-report',
    state: 'failed',
  },
  'RoundEnd of another round': {
    messages: [...opened('h-otherend'), { roundEnd: roundEnd(3) }],
    code: INVALID_ARGUMENT,
    details: /round 0 is open/,
    session: 'h-otherend',
    state: 'failed',
  },
  'a round number going backwards': {
    messages: [...opened('h-back'), { roundEnd: roundEnd(0) }, round0],
    code: FAILED_PRECONDITION,
    details: /does not follow round 0/,
    session: 'h-back',
    state: 'failed',
  },
  'unknown phase': {
    messages: [start('h-phase'), { roundStart: { round: 0, phase: 7 as unknown as Phase, layout: LAYOUT } }],
    code: INVALID_ARGUMENT,
    details: /phase 7/,
    session: 'h-phase',
    state: 'failed',
  },
  'overlapping layout': {
    messages: [start('h-overlap'), { roundStart: { round: 0, phase: 'PRECOPY', layout: [vma(A, 16), vma(A + 8 * PS, 16)] } }],
    code: INVALID_ARGUMENT,
    details: /overlaps/,
    session: 'h-overlap',
    state: 'failed',
  },
  'misaligned layout': {
    messages: [start('h-vmalign'), { roundStart: { round: 0, phase: 'PRECOPY', layout: [{ ...vma(A, 4), end: A + 4 * PS + 1 }] } }],
    code: INVALID_ARGUMENT,
    details: /not aligned/,
    session: 'h-vmalign',
    state: 'failed',
  },
  'misaligned run address': {
    messages: [...opened('h-align'), raw(1, { runs: [A + 100, 1] })],
    code: INVALID_ARGUMENT,
    details: /not aligned/,
    session: 'h-align',
    state: 'failed',
  },
  'run outside the layout': {
    messages: [...opened('h-outside'), raw(1, { runs: [A + 100 * PS, 1] })],
    code: INVALID_ARGUMENT,
    details: /not inside one VMA/,
    session: 'h-outside',
    state: 'failed',
  },
  'run spilling past the end of its VMA': {
    messages: [...opened('h-spill'), raw(2, { runs: [A + 15 * PS, 2] })],
    code: INVALID_ARGUMENT,
    details: /not inside one VMA/,
    session: 'h-spill',
    state: 'failed',
  },
  'raw_length that does not match the pages': {
    messages: [...opened('h-rawlen'), raw(2, { runs: [A, 3] })],
    code: INVALID_ARGUMENT,
    details: /3 non-zero pages/,
    session: 'h-rawlen',
    state: 'failed',
  },
  'raw payload shorter than raw_length': {
    messages: [...opened('h-short'), raw(2, { payload: Buffer.alloc(PS) })],
    code: INVALID_ARGUMENT,
    details: /raw payload is 4096 bytes, raw_length says 8192/,
    session: 'h-short',
    state: 'failed',
  },
  'bad lz4 payload': {
    messages: [...opened('h-lz4'), raw(2, { encoding: 'LZ4', payload: Buffer.from('definitely not lz4 at all') })],
    code: INVALID_ARGUMENT,
    details: /not a valid lz4 block/,
    session: 'h-lz4',
    state: 'failed',
  },
  'lz4 payload decompressing to fewer bytes than raw_length': {
    messages: [...opened('h-lz4short'), raw(2, { encoding: 'LZ4', payload: lz4Block(Buffer.alloc(PS, 3)) })],
    code: INVALID_ARGUMENT,
    details: /decompresses to 4096 bytes, raw_length says 8192/,
    session: 'h-lz4short',
    state: 'failed',
  },
  'unknown encoding': {
    messages: [...opened('h-enc'), protoLoaderBytes({ pages: { ...raw(1).pages, encoding: 5 } })],
    code: INVALID_ARGUMENT,
    details: /encoding 5/,
    session: 'h-enc',
    state: 'failed',
  },
  'zero_map of the wrong length': {
    messages: [...opened('h-zmlen'), raw(1, { runs: [A, 2], zeroMap: Buffer.from([1, 0]) })],
    code: INVALID_ARGUMENT,
    details: /zero map has 2 bytes for 2 pages/,
    session: 'h-zmlen',
    state: 'failed',
  },
  'zero_map bits past the last page': {
    messages: [...opened('h-zmbits'), raw(2, { zeroMap: Buffer.from([0x80]) })],
    code: INVALID_ARGUMENT,
    details: /beyond the last page/,
    session: 'h-zmbits',
    state: 'failed',
  },
  'raw_length beyond the batch limit': {
    messages: [...opened('h-huge-raw'), raw(1, { runs: [A, 16], encoding: 'LZ4', rawLength: 65 << 20, payload: Buffer.alloc(16) })],
    code: RESOURCE_EXHAUSTED,
    details: /raw_length 68157440 is more than/,
    session: 'h-huge-raw',
    state: 'failed',
  },
  'too many runs': {
    messages: [...opened('h-runs'), raw(1, { runs: Array.from({ length: 2 * 65537 }, (_, i) => (i % 2 ? 1 : A + (i / 2) * PS)) })],
    code: RESOURCE_EXHAUSTED,
    details: /65537 runs, more than 65536/,
    session: 'h-runs',
    state: 'failed',
  },
  'commit digest of 4 bytes': {
    messages: [...opened('h-digest'), { roundEnd: roundEnd(0) }, { commit: { ...commitOf(new Model()), imageDigest: Buffer.alloc(4) } }],
    code: INVALID_ARGUMENT,
    details: /image_digest is 4 bytes/,
    session: 'h-digest',
    state: 'failed',
  },
  'thread registers beyond the limit': {
    messages: [
      ...opened('h-regs'),
      { roundEnd: roundEnd(0) },
      { commit: { ...commitOf(new Model()), threads: [{ tid: 1, regs: Buffer.alloc(65 << 10), fpregs: Buffer.alloc(0) }] } },
    ],
    code: RESOURCE_EXHAUSTED,
    details: /registers of thread 1/,
    session: 'h-regs',
    state: 'failed',
  },
  'resume of an unknown session': { messages: [start('h-nobody', { resume: true })], code: NOT_FOUND, details: /no session h-nobody/ },
};

for (const [name, c] of Object.entries(cases)) test.serial(name, hostile, c);

// grpc-js itself refuses an oversized message, from its length prefix, before buffering it or
// showing it to the service: like a dropped stream, the session stays receiving (resumable at its
// last durable round) until --abandon-after.
test.serial('message beyond the size limit', async (t) => {
  const link = await MigrationLink.connect(receiver.address);
  t.teardown(() => link.close());
  await link.start(sessionStart('h-huge'));
  await link.send(round0);
  await link.send(raw(1, { payload: Buffer.alloc(70 << 20) })).catch(() => undefined);
  const err = await link.whenEnded();
  t.is(grpcCode(err?.code), 'RESOURCE_EXHAUSTED', err?.message);
  t.regex(err!.message, /larger than max/);
  t.is(await sessionState(images, 'h-huge'), 'receiving');
});

test.serial('create of an existing id, resume of a finished session: refused, the session untouched', async (t) => {
  await hostile(t, { messages: [start('h-bytes')], code: ALREADY_EXISTS, details: /already exists/, session: 'h-bytes', state: 'failed' });
  await hostile(t, { messages: [start('h-bytes', { resume: true })], code: FAILED_PRECONDITION, details: /is failed/, session: 'h-bytes', state: 'failed' });
});

// (A resume of a live session takes it over from its stream: test/receiver/takeover.test.ts.)
test.serial('a second stream cannot create a live session again; its owner carries on and commits', async (t) => {
  const model = new Model();
  model.setLayout(LAYOUT);
  const owner = await MigrationLink.connect(receiver.address);
  t.teardown(() => owner.close());
  await owner.start(sessionStart('h-owned'));
  await owner.send(round0);
  await owner.send({ pages: pageBatch(model, pagesOf(A, 4), 1) });

  await hostile(t, { messages: [start('h-owned'), raw(1)], code: ALREADY_EXISTS, details: /already exists/, session: 'h-owned', state: 'receiving' });

  await owner.send({ pages: pageBatch(model, pagesOf(A + 4 * PS, 4), 1, { encoding: 'LZ4' }) });
  await owner.endRound(roundEnd(0));
  const result = await owner.commit(commitOf(model));
  t.true(result.ok, result.message);
});

test.serial('after all that: the other session commits, nothing was created outside the images directory', async (t) => {
  await good.send({ pages: pageBatch(goodModel, pagesOf(A + 8 * PS, 8), 1, { encoding: 'LZ4' }) });
  await good.endRound(roundEnd(0));
  const result = await good.commit(commitOf(goodModel));
  t.true(result.ok, result.message);
  t.is(await sessionState(images, 'good-1'), 'committed');

  t.deepEqual(readdirSync(parent), ['images']);
  for (const name of readdirSync(images)) t.true(validSessionId(name), `unexpected entry ${name} in the images directory`);
  t.false(readdirSync(images).includes('x'));
  t.is(receiver.child.exitCode, null, 'the receiver is still running');
});
