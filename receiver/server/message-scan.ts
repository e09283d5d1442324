// Counting the entries of a message's repeated fields on its wire bytes, before a decoder builds
// an object for each. WHY: protobuf makes some entries nearly free to send and costly to decode.
// An empty Vma is 2 bytes on the wire and ~180 bytes of JS heap once protobufjs decoded it (a
// packed run value: 1 byte → a number in an array, ~17 bytes), so one 64 MiB RoundStart of empty
// VMAs would take ~6 GB and crash the receiver, long before the handler could count them. The
// scan reads only tags and lengths (payload bytes are skipped, packed values counted by their
// last bytes), so it costs little even on a 64 MiB page batch.

import type * as grpc from '@grpc/grpc-js';
import { Cursor } from '../../proto/page-codec';
import { migrationDefinition, resolveMethod, type IncomingSenderMessage, type LinkCodec } from '../../proto/service';
import { MAX_VMAS } from '../../image/input-checks';
import { MAX_RUNS, MAX_THREADS } from './limits';

/** A message refused for what decoding it would cost (the stream ends RESOURCE_EXHAUSTED). */
export interface OversizedMessage {
  msg: 'oversized';
  error: string;
}

export type ReceivedMessage = IncomingSenderMessage | OversizedMessage;

interface Repeated {
  what: string;
  max: number;
  /** Packed varints (runs): every value counts. */
  packed?: boolean;
}

const WIRE_VARINT = 0;
const WIRE_LEN = 2;

// SenderMessage oneof field → its repeated fields (proto/migration.proto).
const REPEATED: Record<number, Record<number, Repeated>> = {
  2: { 3: { what: 'RoundStart layout', max: MAX_VMAS } },
  3: { 1: { what: 'PageBatch', max: 2 * MAX_RUNS, packed: true } },
  4: { 1: { what: 'Discard', max: 2 * MAX_RUNS, packed: true } },
  6: { 1: { what: 'Commit layout', max: MAX_VMAS }, 2: { what: 'Commit threads', max: MAX_THREADS } },
};

/**
 * Why decoding `buf` would cost too much, or null. Bytes that are not valid protobuf also give
 * null: the decoder says what is wrong with them. Occurrences are summed over repeated top-level
 * fields, since protobuf merges them.
 */
export function oversized(buf: Buffer): OversizedMessage | null {
  const counts = new Map<Repeated, number>();
  try {
    const top = new Cursor(buf, 0, buf.length);
    while (top.pos < top.end) {
      const tag = top.varint();
      const fields = REPEATED[Math.floor(tag / 8)];
      if (tag % 8 !== WIRE_LEN || !fields) {
        top.skip(tag % 8);
        continue;
      }
      const [start, end] = top.span();
      const inner = new Cursor(buf, start, end);
      while (inner.pos < inner.end) {
        const t = inner.varint();
        const r = fields[Math.floor(t / 8)];
        if (r === undefined) {
          inner.skip(t % 8);
          continue;
        }
        let n = 1;
        if (r.packed && t % 8 === WIRE_LEN) {
          const [s, e] = inner.span();
          n = 0;
          for (let i = s; i < e; i++) if (buf[i] < 128) n++;
        } else if (r.packed && t % 8 === WIRE_VARINT) inner.varint();
        else inner.skip(t % 8);
        counts.set(r, (counts.get(r) ?? 0) + n);
      }
    }
  } catch {
    return null;
  }
  for (const [r, n] of counts) {
    if (n <= r.max) continue;
    const error = r.packed ? `${r.what} has ${Math.ceil(n / 2)} runs, more than ${r.max / 2}` : `${r.what} has ${n} entries, more than ${r.max}`;
    return { msg: 'oversized', error };
  }
  return null;
}

/** The Migration service definition the receiver serves: the codec's, with the scan in front of
 *  its deserializer. */
export function scannedMigrationDefinition(codec?: LinkCodec): grpc.ServiceDefinition {
  const base = migrationDefinition(codec).Migrate;
  const decode = base.requestDeserialize as (b: Buffer) => IncomingSenderMessage;
  return { Migrate: { ...base, requestDeserialize: (b: Buffer): ReceivedMessage => oversized(b) ?? decode(b) }, Resolve: resolveMethod() };
}
