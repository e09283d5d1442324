// The receiver's HTTP/2 receive window.
//
// WHY: a sender-to-receiver stream can only have as many bytes in flight as the receiver's HTTP/2
// window allows. grpc-js 1.14 servers keep Node's default of 65,535 bytes per stream and per
// connection, which caps a migration stream at about 0.37 GB/s on loopback, whatever the message
// size (the link becomes a chain of round trips). grpc-js has the option for this,
// 'grpc-node.flow_control_window', but in 1.14 only its client applies it; the server side is
// grpc/grpc-node PR #3058 (open). So:
//   1. the server is constructed with 'grpc-node.flow_control_window' (what that PR reads, so a
//      grpc-js that supports it needs nothing else), and
//   2. until then, each new HTTP/2 session gets its window raised with Node's documented
//      Http2Session.settings() / setLocalWindowSize(). The sessions are reached through the
//      grpc-js server's private `http2Servers` map, the one place it keeps them. This is checked
//      at run time (a grpc-js without that map logs a warning and runs at the default window),
//      and test/receiver/server/server-window.test.ts fails if a client no longer sees the window.
// Measured (bench/link-throughput.ts): 0.37 GB/s → 1.4-1.7 GB/s for one stream.

import type * as http2 from 'node:http2';
import type * as grpc from '@grpc/grpc-js';
import { logger } from '../../common/log';

const log = logger('server');

/** Per-stream receive window: bytes a sender may have in flight on one migration stream. */
export const STREAM_WINDOW_BYTES = 16 << 20;
/** Connection-level window: room for a few streams sharing one connection. */
export const CONNECTION_WINDOW_BYTES = 64 << 20;
/** Largest DATA frame the sender may send: fewer, larger frames for 1 MiB page batches. */
export const MAX_FRAME_BYTES = 1 << 20;

/** Server options that ask grpc-js itself for the window (honoured once grpc-js supports it). */
export const WINDOW_SERVER_OPTIONS: grpc.ServerOptions = {
  'grpc-node.flow_control_window': STREAM_WINDOW_BYTES,
};

/** Raise the windows of one server-side HTTP/2 session (Node's public Http2Session API). */
export function raiseSessionWindow(session: http2.ServerHttp2Session): void {
  try {
    session.settings({ initialWindowSize: STREAM_WINDOW_BYTES, maxFrameSize: MAX_FRAME_BYTES });
    session.setLocalWindowSize(CONNECTION_WINDOW_BYTES);
  } catch (err) {
    // A session closing while we configure it: nothing to raise.
    log.debug(`could not raise an HTTP/2 window: ${(err as Error).message}`);
  }
}

/**
 * Hook every HTTP/2 server the grpc-js server listens with, so that new sessions get the large
 * window. Call after bindAsync succeeded and before announcing the address. Returns false (after
 * a warning) when the grpc-js internals are not as expected.
 */
export function raiseReceiveWindows(server: grpc.Server): boolean {
  const servers = (server as unknown as { http2Servers?: unknown }).http2Servers;
  if (!(servers instanceof Map) || servers.size === 0) {
    log.warn('cannot raise the HTTP/2 receive window with this grpc-js version; transfers will be slow (~0.4 GB/s)');
    return false;
  }
  for (const h2 of servers.keys() as IterableIterator<http2.Http2Server>) {
    // prependListener: configure the window before grpc-js's own session handler runs.
    h2.prependListener('session', raiseSessionWindow);
  }
  return true;
}
