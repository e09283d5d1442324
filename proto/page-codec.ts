// Hand-written protobuf encoding of SenderMessage{pages: PageBatch}, the one message that carries
// bulk data. Page batches are ~1 MiB and come by the thousand; protobufjs walks a reflected type,
// builds Long objects for every uint64 and grows a writer chain per message, which shows in the
// link benchmark (bench/link-throughput.ts). Every other message goes through proto-loader.
//
// Wire format (proto3, see proto/migration.proto):
//   SenderMessage.pages = field 3, LEN → PageBatch:
//     1 runs       packed uint64 (LEN; a parser must also accept unpacked VARINT entries)
//     2 zero_map   bytes
//     3 encoding   enum (VARINT)
//     4 raw_length uint32 (VARINT)
//     5 payload    bytes
// The decoder never throws: hostile bytes become a MalformedMessage that the server turns into
// INVALID_ARGUMENT (grpc-js would otherwise answer INTERNAL for a throwing deserializer).

import type { Encoding, PageBatch } from './messages';

export interface MalformedMessage {
  msg: 'malformed';
  error: string;
}

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;

const TAG_SENDER_PAGES = (3 << 3) | WIRE_LEN;
const TAG_RUNS = (1 << 3) | WIRE_LEN;
const TAG_ZERO_MAP = (2 << 3) | WIRE_LEN;
const TAG_ENCODING = (3 << 3) | WIRE_VARINT;
const TAG_RAW_LENGTH = (4 << 3) | WIRE_VARINT;
const TAG_PAYLOAD = (5 << 3) | WIRE_LEN;

const ENCODING_NUMBER: Record<Encoding, number> = { RAW: 0, LZ4: 1 };
const ENCODING_NAME: readonly Encoding[] = ['RAW', 'LZ4'];

// ---------------------------------------------------------------- varints over JS numbers
// Values are addresses and counts below 2^53; arithmetic instead of bit operations keeps them
// exact above 2^31.

function varintLength(n: number): number {
  let len = 1;
  while (n >= 128) {
    n = Math.floor(n / 128);
    len++;
  }
  return len;
}

function writeVarint(buf: Buffer, pos: number, n: number): number {
  while (n >= 128) {
    buf[pos++] = (n % 128) | 128;
    n = Math.floor(n / 128);
  }
  buf[pos++] = n;
  return pos;
}

class DecodeError extends Error {}

/** Reads protobuf primitives from buf[pos, end) with bounds checks (throws on bad bytes; the
 *  receiver's message-scan.ts walks wire bytes with it too). */
export class Cursor {
  constructor(
    readonly buf: Buffer,
    public pos: number,
    readonly end: number,
  ) {}

  /** A varint as a JS number; values above 2^53 lose precision (and fail validation later). */
  varint(): number {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new DecodeError('truncated varint');
      const b = this.buf[this.pos++];
      value += (b & 0x7f) * scale;
      if (b < 128) return value;
      scale *= 128;
    }
    throw new DecodeError('varint longer than 10 bytes');
  }

  /** A length-delimited field: returns [start, end) after checking it fits. */
  span(): [number, number] {
    const len = this.varint();
    if (len > this.end - this.pos) throw new DecodeError('length-delimited field runs past the message end');
    const start = this.pos;
    this.pos += len;
    return [start, this.pos];
  }

  skip(wireType: number): void {
    switch (wireType) {
      case WIRE_VARINT:
        this.varint();
        return;
      case WIRE_I64:
        this.advance(8);
        return;
      case WIRE_LEN:
        this.span();
        return;
      case WIRE_I32:
        this.advance(4);
        return;
      default:
        throw new DecodeError(`unsupported wire type ${wireType}`);
    }
  }

  private advance(n: number): void {
    if (n > this.end - this.pos) throw new DecodeError('truncated field');
    this.pos += n;
  }
}

// ---------------------------------------------------------------- encode

function checkedRunValue(v: number): number {
  if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`PageBatch.runs holds ${v}, not an unsigned integer below 2^53`);
  return v;
}

/** Bytes a caller should leave free before a payload for encodePagesMessageBefore: the header of
 *  a batch of up to 1024 runs (20 bytes of varints each at most) and its zero map. */
export const PAGES_HEADER_ROOM = 24 << 10;

interface PagesHeader {
  runsLen: number;
  zeroMap: Buffer;
  payload: Buffer;
  encoding: number;
  rawLength: number;
  /** Length of the PageBatch inside the SenderMessage. */
  inner: number;
  /** Bytes of the message before the payload's bytes. */
  headerLength: number;
  size: number;
}

function pagesHeader(batch: PageBatch): PagesHeader {
  const runs = batch.runs;
  let runsLen = 0;
  for (let i = 0; i < runs.length; i++) runsLen += varintLength(checkedRunValue(runs[i]));
  const zeroMap = batch.zeroMap ?? EMPTY;
  const payload = batch.payload ?? EMPTY;
  const encoding = ENCODING_NUMBER[batch.encoding ?? 'RAW'];
  if (encoding === undefined) throw new RangeError(`PageBatch.encoding '${batch.encoding}' is not RAW or LZ4`);
  const rawLength = batch.rawLength ?? 0;
  if (!Number.isInteger(rawLength) || rawLength < 0 || rawLength > 0xffffffff) {
    throw new RangeError(`PageBatch.rawLength ${rawLength} is not a uint32`);
  }
  let inner = 0;
  if (runs.length) inner += 1 + varintLength(runsLen) + runsLen;
  if (zeroMap.length) inner += 1 + varintLength(zeroMap.length) + zeroMap.length;
  if (encoding) inner += 1 + varintLength(encoding);
  if (rawLength) inner += 1 + varintLength(rawLength);
  if (payload.length) inner += 1 + varintLength(payload.length) + payload.length;
  const size = 1 + varintLength(inner) + inner;
  return { runsLen, zeroMap, payload, encoding, rawLength, inner, headerLength: size - payload.length, size };
}

/** Write the message's bytes before the payload into out[0, h.headerLength). */
function writeHeader(out: Buffer, batch: PageBatch, h: PagesHeader): number {
  const runs = batch.runs;
  let pos = 0;
  out[pos++] = TAG_SENDER_PAGES;
  pos = writeVarint(out, pos, h.inner);
  if (runs.length) {
    out[pos++] = TAG_RUNS;
    pos = writeVarint(out, pos, h.runsLen);
    for (let i = 0; i < runs.length; i++) pos = writeVarint(out, pos, runs[i]);
  }
  if (h.zeroMap.length) {
    out[pos++] = TAG_ZERO_MAP;
    pos = writeVarint(out, pos, h.zeroMap.length);
    out.set(h.zeroMap, pos);
    pos += h.zeroMap.length;
  }
  if (h.encoding) {
    out[pos++] = TAG_ENCODING;
    pos = writeVarint(out, pos, h.encoding);
  }
  if (h.rawLength) {
    out[pos++] = TAG_RAW_LENGTH;
    pos = writeVarint(out, pos, h.rawLength);
  }
  if (h.payload.length) {
    out[pos++] = TAG_PAYLOAD;
    pos = writeVarint(out, pos, h.payload.length);
  }
  return pos;
}

/** Serialized SenderMessage{pages: batch}: one allocation (by `alloc`, which must return at least
 *  `size` bytes), the payload copied once. */
export function encodePagesMessage(batch: PageBatch, alloc: (size: number) => Buffer = Buffer.allocUnsafe): Buffer {
  const h = pagesHeader(batch);
  const out = alloc(h.size).subarray(0, h.size);
  const pos = writeHeader(out, batch, h);
  out.set(h.payload, pos);
  return out;
}

/**
 * The same message with no copy of the payload: its header is written into the
 * `batch.payloadHeadroom` bytes just before the payload (same memory), and the message is a view
 * ending with the payload. `spare`: bytes of the headroom to leave free before the message (the
 * transport's own framing). Null when the header does not fit there (use encodePagesMessage).
 */
export function encodePagesMessageBefore(batch: PageBatch, spare = 0): Buffer | null {
  const room = batch.payloadHeadroom ?? 0;
  const payload = batch.payload;
  if (room <= 0 || !payload || payload.length === 0 || payload.byteOffset < room) return null;
  const h = pagesHeader(batch);
  if (h.headerLength + spare > room) return null;
  const out = Buffer.from(payload.buffer, payload.byteOffset - h.headerLength, h.size);
  writeHeader(out, batch, h);
  return out;
}

const EMPTY = Buffer.alloc(0);

// ---------------------------------------------------------------- decode

/**
 * If `buf` is exactly one SenderMessage whose only field is `pages`, decode it (payload and zero
 * map are views into `buf`, not copies). Returns null for any other message (the caller uses
 * proto-loader), or a MalformedMessage when the page batch bytes are not valid protobuf.
 */
export function decodePagesMessage(buf: Buffer): { msg: 'pages'; pages: PageBatch } | MalformedMessage | null {
  if (buf.length === 0 || buf[0] !== TAG_SENDER_PAGES) return null;
  try {
    const top = new Cursor(buf, 1, buf.length);
    const [start, end] = top.span();
    if (end !== buf.length) return null; // more top-level fields follow: let proto-loader merge them
    return { msg: 'pages', pages: decodePageBatch(new Cursor(buf, start, end)) };
  } catch (err) {
    if (err instanceof DecodeError) return { msg: 'malformed', error: `malformed PageBatch: ${err.message}` };
    throw err;
  }
}

function decodePageBatch(c: Cursor): PageBatch {
  const runs: number[] = [];
  let zeroMap: Buffer = EMPTY;
  let encoding = 0;
  let rawLength = 0;
  let payload: Buffer = EMPTY;
  while (c.pos < c.end) {
    const tag = c.varint();
    switch (tag) {
      case TAG_RUNS: {
        const [start, end] = c.span();
        const packed = new Cursor(c.buf, start, end);
        while (packed.pos < end) runs.push(packed.varint());
        break;
      }
      case (1 << 3) | WIRE_VARINT: // unpacked repeated entry: valid protobuf, accepted
        runs.push(c.varint());
        break;
      case TAG_ZERO_MAP: {
        const [start, end] = c.span();
        zeroMap = c.buf.subarray(start, end);
        break;
      }
      case TAG_ENCODING:
        encoding = c.varint();
        break;
      case TAG_RAW_LENGTH:
        rawLength = c.varint();
        break;
      case TAG_PAYLOAD: {
        const [start, end] = c.span();
        payload = c.buf.subarray(start, end);
        break;
      }
      default:
        if (tag > 0xffffffff || tag >>> 3 === 0) throw new DecodeError(`invalid field tag ${tag}`);
        c.skip(tag & 7); // unknown field from a newer sender: skip, as protobuf does
    }
  }
  return { runs, zeroMap, encoding: encodingName(encoding), rawLength, payload };
}

function encodingName(n: number): Encoding {
  // Unknown enum values stay numbers, as proto-loader leaves them; validation rejects them.
  return ENCODING_NAME[n] ?? (n as unknown as Encoding);
}
