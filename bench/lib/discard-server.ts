// The discarding sink of bench/link-throughput.ts, run as its own process (forked with an IPC
// channel): a grpc-js server with the receiver's server options and, with --window raised, the
// receiver's HTTP/2 window, that acknowledges rounds and keeps nothing. A module of its own so
// that the benchmark's client process loads no receiver code: every module loaded makes V8's
// major collections (driven by the link's Buffer churn) dearer and more frequent, which showed as
// 1.3-1.6 instead of 0.75-0.9 client CPU-s/GiB.
//   node dist/bench/lib/discard-server.js --window default|raised --codec fast|proto-loader

import * as grpc from '@grpc/grpc-js';
import { parseEnumFlag, parseFlags } from '../../common/cli';
import { runMain } from '../../common/errors';
import { tuneGcForPageBuffers } from '../../common/gc-tuning';
import type { OutgoingReceiverMessage } from '../../proto/messages';
import { LINK_CODECS, migrationDefinition, type IncomingSenderMessage } from '../../proto/service';
import { raiseReceiveWindows } from '../../receiver/server/http2-window';
import { RECEIVER_SERVER_OPTIONS } from '../../receiver/server/receiver-server';

const PS = 4096;
const USAGE = 'usage: node dist/bench/lib/discard-server.js --window default|raised --codec fast|proto-loader (forked by link-throughput.js)';

runMain('discard-server', async () => {
  const { values } = parseFlags(process.argv.slice(2), { window: { type: 'string' }, codec: { type: 'string' } } as const, USAGE);
  const window = parseEnumFlag(values.window, '--window', 'raised', ['default', 'raised'] as const);
  const codec = parseEnumFlag(values.codec, '--codec', 'fast', LINK_CODECS);
  tuneGcForPageBuffers(); // as the receiver's image store does: the sink stands in for it
  const server = new grpc.Server(RECEIVER_SERVER_OPTIONS);
  server.addService(migrationDefinition(codec), {
    Migrate(call: grpc.ServerDuplexStream<IncomingSenderMessage, OutgoingReceiverMessage>) {
      let bytes = 0;
      call.on('data', (m: IncomingSenderMessage) => {
        if (m.msg === 'pages') bytes += m.pages.rawLength;
        else if (m.msg === 'start') call.write({ accepted: { sessionId: m.start.sessionId, resumed: false, lastDurableRound: -1 } });
        else if (m.msg === 'roundEnd') call.write({ roundAck: { round: m.roundEnd.round, pagesStored: bytes / PS, durableBytes: bytes } });
      });
      call.on('end', () => call.end());
      call.on('error', () => undefined);
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  if (window === 'raised') raiseReceiveWindows(server);
  process.send!(port);
  // Until the benchmark stops it, or goes away without doing so (the IPC channel closes).
  await new Promise((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('disconnect', resolve);
  });
  server.forceShutdown();
  // A 'disconnect' listener keeps the IPC channel (and so this process) alive: let go of it.
  if (process.connected) process.disconnect();
  return 0;
});
