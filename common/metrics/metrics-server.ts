// A tiny HTTP server exposing one prom-client Registry on /metrics (and a link to it on /), for
// `receiver serve --metrics-listen` and `sender migrate --metrics-listen`. node:http only: the
// metrics port must not depend on the gRPC server or pull in a web framework.

import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { formatHostPort, type HostPort } from '../cli';
import { UserError } from '../errors';
import { logger } from '../log';

const log = logger('metrics');

export interface MetricsServer {
  /** The bound address (the real port when 0 was asked for). */
  readonly address: HostPort;
  /** http://HOST:PORT/metrics */
  readonly url: string;
  close(): Promise<void>;
}

const INDEX = '<!doctype html><title>precopy metrics</title><p><a href="/metrics">/metrics</a></p>\n';

/** Listen on `listen` (port 0: any free port); `flag` names the option in error messages. */
export async function startMetricsServer(registry: Registry, listen: HostPort, flag = '--metrics-listen'): Promise<MetricsServer> {
  const server = http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
    } else if (url === '/metrics') {
      registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(req.method === 'HEAD' ? undefined : text),
        (err: Error) => {
          log.error(`collecting metrics failed: ${err.message}`);
          res.writeHead(500, { 'content-type': 'text/plain' }).end('collecting metrics failed\n');
        },
      );
    } else if (url === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(INDEX);
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics\n');
    }
  });
  // Scrapers keep connections alive; do not let an idle one hold close() up.
  server.keepAliveTimeout = 5000;

  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      const where = formatHostPort(listen);
      const why = err.code === 'EADDRINUSE' ? 'address already in use' : err.code === 'EADDRNOTAVAIL' ? 'no such local address' : err.message;
      reject(new UserError(`${flag}: cannot listen on ${where}: ${why}`));
    });
    server.listen(listen.port, listen.host, () => resolve());
  });
  const a = server.address() as AddressInfo;
  const address = { host: listen.host, port: a.port };
  log.info(`serving metrics on http://${formatHostPort(address)}/metrics`);

  return {
    address,
    url: `http://${formatHostPort(address)}/metrics`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
