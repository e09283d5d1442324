// Page batches leave with no copy of their bytes in grpc-js (docs/design.md, Page path).
//
// grpc-js frames every message it sends — a 5-byte prefix (compressed flag, length) — by
// allocating prefix + message and copying the message after the prefix, in its compression
// filter, identity compression included: 4 MiB per batch, 0.30 s of the sender's JS thread per
// GiB (the largest item of its profile). A page batch is already encoded in the headroom before
// its payload (proto/page-codec.ts encodePagesMessageBefore); frameInPlace() writes the gRPC
// prefix in the 5 bytes before that, and the filter's sendMessage, wrapped here, hands that view
// on instead of making its copy. Any other message, or a channel that compresses, takes grpc-js's
// own path.
//
// Safety: the view is our payload slot, reused once send() returns, and send() returns at the
// write's callback. grpc-js's RetryingCall calls that callback early (next tick) for a message
// that fits its retry buffer, which is what made its copy necessary: FRAMING_CHANNEL_OPTIONS sets
// that buffer to 0, so the callback comes from the HTTP/2 stream's write, which Node completes
// once the bytes are written to the socket (node_http2.cc ClearOutgoing; the DATA frames point
// at our memory until then). If this grpc-js has no such filter method, nothing is wrapped and
// frameInPlace() declines: batches are copied as before.

import type * as grpc from '@grpc/grpc-js';
import { logger } from '../../common/log';

const log = logger('link');

export const GRPC_PREFIX_BYTES = 5;

/** Channel options the in-place framing needs (see above): no message is held for a retry, so
 *  no write is acknowledged before HTTP/2 has written it. */
export const FRAMING_CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.per_rpc_retry_buffer_size': 0,
};

interface FilteredMessage {
  message: Buffer;
  flags?: number;
}

interface CompressionFilterLike {
  currentCompressionAlgorithm: string;
  sendMessage(m: Promise<FilteredMessage>): Promise<FilteredMessage>;
}

/** message -> the same bytes with the gRPC prefix before them (same memory). */
const framed = new WeakMap<Buffer, Buffer>();

const installed = install();

function install(): boolean {
  let proto: CompressionFilterLike | undefined;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    proto = require('@grpc/grpc-js/build/src/compression-filter').CompressionFilter?.prototype;
  } catch {
    proto = undefined;
  }
  if (!proto || typeof proto.sendMessage !== 'function') {
    log.debug('grpc-js has no CompressionFilter.sendMessage: page batches are framed by copy');
    return false;
  }
  const own = proto.sendMessage;
  proto.sendMessage = async function (this: CompressionFilterLike, pending: Promise<FilteredMessage>): Promise<FilteredMessage> {
    const m = await pending;
    const view = framed.get(m.message);
    if (view && this.currentCompressionAlgorithm === 'identity') return { message: view, flags: m.flags };
    return own.call(this, Promise.resolve(m));
  };
  return true;
}

/**
 * Write the gRPC prefix of `message` into the GRPC_PREFIX_BYTES before it (memory the caller
 * owns and leaves alone until the write's callback), so that grpc-js sends it as is. False when
 * the framing is not installed or there is no room.
 */
export function frameInPlace(message: Buffer): boolean {
  if (!installed || message.byteOffset < GRPC_PREFIX_BYTES) return false;
  const view = Buffer.from(message.buffer, message.byteOffset - GRPC_PREFIX_BYTES, message.length + GRPC_PREFIX_BYTES);
  view[0] = 0; // not compressed
  view.writeUInt32BE(message.length, 1);
  framed.set(message, view);
  return true;
}
