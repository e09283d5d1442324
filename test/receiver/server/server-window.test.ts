// The receiver's HTTP/2 receive window (receiver/server/http2-window.ts): a client connecting to a
// real receiver must see the raised per-stream window, frame size and connection window. Without
// them a migration stream crawls at ~0.4 GB/s; this test fails if a grpc-js upgrade breaks the way
// the window is raised, instead of the product silently slowing down.

import * as fs from 'node:fs';
import * as http2 from 'node:http2';
import * as path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { CONNECTION_WINDOW_BYTES, MAX_FRAME_BYTES, STREAM_WINDOW_BYTES } from '../../../receiver/server/http2-window';
import { makePki } from '../../helpers/pki';
import { startReceiver } from '../../helpers/receiver';
import { tempDir } from '../../image/store-helpers';

/** Connect to the receiver and wait until it announced the raised windows; then check the frame size. */
async function assertWindows(t: ExecutionContext, session: http2.ClientHttp2Session): Promise<void> {
  t.teardown(() => session.destroy());
  session.on('error', () => undefined);

  // The server sends its SETTINGS (Node's defaults), then the raised ones and a WINDOW_UPDATE.
  const seen = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), 10_000);
    const look = () => {
      if (session.remoteSettings?.initialWindowSize === STREAM_WINDOW_BYTES && session.state.remoteWindowSize === CONNECTION_WINDOW_BYTES) {
        clearTimeout(timer);
        resolve(true);
      }
    };
    session.on('remoteSettings', look);
    session.on('connect', look);
    // The connection window arrives as a WINDOW_UPDATE, which raises no event: look again shortly.
    const poll = setInterval(look, 20);
    timer.unref();
    void new Promise((r) => setTimeout(r, 10_000)).finally(() => clearInterval(poll));
  });
  t.true(seen, `remote settings ${JSON.stringify(session.remoteSettings)}, connection window ${session.state.remoteWindowSize}`);
  t.is(session.remoteSettings.maxFrameSize, MAX_FRAME_BYTES);
}

test('a client sees the large stream window, frame size and connection window', async (t) => {
  const receiver = await startReceiver({ images: path.join(tempDir(t, 'precopy-window-'), 'images') });
  t.teardown(() => receiver.stop());
  await assertWindows(t, http2.connect(`http://${receiver.address}`));
});

test('the same over TLS (the HTTP/2 server is then a secure one)', async (t) => {
  const pki = makePki();
  t.teardown(() => pki.remove());
  const receiver = await startReceiver({
    images: path.join(tempDir(t, 'precopy-window-'), 'images'),
    args: ['--tls-cert', pki.receiverCert, '--tls-key', pki.receiverKey],
  });
  t.teardown(() => receiver.stop());
  await assertWindows(t, http2.connect(`https://${receiver.address}`, { ca: fs.readFileSync(pki.ca) }));
});
