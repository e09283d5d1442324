// A test client for the receiver's gRPC server (no sender needed): PageBatch messages built from
// the store tests' Model (store-helpers.ts), a raw stream that sends any bytes, and checks of what
// the receiver stored, read back through the real raw export.

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { ExecutionContext } from 'ava';
import * as grpc from '@grpc/grpc-js';
import { digestToBuffer } from '../../../common/image-digest';
import type { Commit, Encoding, OutgoingSenderMessage, PageBatch, ReceiverMessage, RoundEnd, SessionStart, Vma } from '../../../proto/messages';
import { MigrationLink } from '../../../sender/transfer/migration-link';
import { migrationClientConstructor } from '../../../proto/service';
import { rawFileName } from '../../../receiver/export/export-manifest';
import { exportRaw } from '../../../receiver/export/raw-export';
import { lz4Compress } from '../../../common/lz4-block';
import { ImageStore, type SessionState } from '../../../image/image-store';
import { Model, PS, batchOf, figures, pagesOf } from '../../image/store-helpers';

export const lz4Block = lz4Compress;

/** A PageBatch message of pages `addrs` at generation `gen` (zero pages as bits); updates model. */
export function pageBatch(model: Model, addrs: number[], gen: number, opts: { zeros?: Set<number>; encoding?: Encoding } = {}): PageBatch {
  const b = batchOf(model, addrs, gen, opts.zeros);
  const encoding = opts.encoding ?? 'RAW';
  return {
    runs: b.runs,
    zeroMap: b.zeroMap ?? Buffer.alloc(0),
    encoding,
    rawLength: b.data.length,
    payload: encoding === 'LZ4' && b.data.length > 0 ? lz4Block(b.data) : b.data,
  };
}

export function sessionStart(sessionId: string, over: Partial<SessionStart> = {}): Partial<SessionStart> {
  return { sessionId, sourceHost: 'test-host', pid: 4242, pageSize: PS, kernel: '6.18.0-test', command: 'target', memoryBytes: 1 << 20, ...over };
}

export function roundEnd(round: number): RoundEnd {
  return figures(round);
}

/** The Commit a sender would send for the model's pages. */
export function commitOf(model: Model): Partial<Commit> {
  const d = model.digest();
  return { layout: model.layout, threads: [], imageDigest: digestToBuffer(d.digest), imagePages: d.pages };
}

/**
 * Connect, start session `id` and make round 0 durable with every page of `layout` (generation 1).
 * Returns the open link and the model of what the receiver now holds.
 */
export async function sessionWithRoundZero(address: string, id: string, layout: Vma[]): Promise<{ link: MigrationLink; model: Model }> {
  const model = new Model();
  model.setLayout(layout);
  const link = await MigrationLink.connect(address);
  await link.start(sessionStart(id));
  await link.send({ roundStart: { round: 0, phase: 'PRECOPY', layout } });
  await link.send({
    pages: pageBatch(
      model,
      layout.flatMap((v) => pagesOf(v.start, (v.end - v.start) / PS)),
      1,
    ),
  });
  await link.endRound(roundEnd(0));
  return { link, model };
}

/** Start `round` and send `addrs` at generation `gen` without ending it: a round under way when
 *  the stream is cut. (A resuming sender sends these pages again, so no model records them.) */
export async function roundUnderWay(link: MigrationLink, round: number, layout: Vma[], addrs: number[], gen: number): Promise<void> {
  await link.send({ roundStart: { round, phase: 'PRECOPY', layout } });
  await link.send({ pages: pageBatch(new Model(), addrs, gen) });
}

export interface Exchange {
  code: grpc.status;
  details: string;
  replies: ReceiverMessage[];
}

/**
 * One raw Migrate stream: write every message (objects, or Buffers sent as they are: any bytes),
 * half-close, and collect the replies and the final status.
 */
export type MigrateClient = grpc.Client & {
  Migrate(o: grpc.CallOptions): grpc.ClientDuplexStream<OutgoingSenderMessage | Buffer, ReceiverMessage>;
};

/** A raw Migration client with a connection of its own. */
export function migrateClient(address: string): MigrateClient {
  const Client = migrationClientConstructor();
  return new Client(address, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 }) as unknown as MigrateClient;
}

/** `reuse`: run the stream on this client (left open) instead of a new one. */
export async function exchange(address: string, messages: Array<OutgoingSenderMessage | Buffer>, reuse?: MigrateClient): Promise<Exchange> {
  const client = reuse ?? migrateClient(address);
  try {
    const call = client.Migrate({ deadline: Date.now() + 60_000 });
    const replies: ReceiverMessage[] = [];
    const status = new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
    call.on('data', (m: ReceiverMessage) => replies.push(m));
    call.on('error', () => undefined); // the status says it
    for (const m of messages) call.write(m);
    call.end();
    const s = await status;
    return { code: s.code, details: s.details, replies };
  } finally {
    if (!reuse) client.close();
  }
}

export async function sessionState(images: string, id: string): Promise<SessionState | undefined> {
  const s = (await new ImageStore(images).list()).find((x) => x.meta.sessionId === id);
  return s?.state;
}

/** Export the committed session with the real raw export and compare every VMA with the model. */
export async function assertImageEquals(t: ExecutionContext, images: string, id: string, model: Model, outDir: string): Promise<void> {
  const img = await new ImageStore(images).open(id);
  try {
    const v = await img.verify();
    t.true(v.ok, `verify: ${v.problems.join('; ')}`);
    await exportRaw(img, outDir);
  } finally {
    await img.close();
  }
  for (const v of model.layout) {
    const got = await fsp.readFile(path.join(outDir, rawFileName(v)));
    const want = model.vmaBytes(v);
    t.is(got.length, want.length, `size of ${rawFileName(v)}`);
    t.true(got.equals(want), `content of ${rawFileName(v)}`);
  }
}

export function grpcCode(code: grpc.status | undefined): string {
  return code === undefined ? 'none' : (grpc.status[code] ?? String(code));
}
