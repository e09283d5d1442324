// Why a connection to the receiver fails at the TLS level, in words the user can act on.
//
// WHY a probe of our own: grpc-js keeps the reason of a failed connection attempt to itself (the
// channel reports TRANSIENT_FAILURE and retries until the deadline). A wrong CA or a refused client
// certificate will not heal by waiting, so when the link's channel fails, the sender makes one TLS
// handshake of its own with the same files and names the problem at once. Network errors
// (refused, unreachable) are not judged here: they may heal, and the link keeps waiting for them.

import * as tls from 'node:tls';
import { formatHostPort, type HostPort } from '../../common/cli';
import type { LinkSecurity } from '../../common/link-security';

/** The HTTP/2 client preface and an empty SETTINGS frame: a receiver that accepted us answers with its SETTINGS. */
const H2_PREFACE = Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]);

/** OpenSSL's verification results for a chain that does not lead to the CA we trust. */
const UNKNOWN_CA = new Set([
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
]);

/** TLS alerts by which a receiver refuses the certificate we presented. */
const CLIENT_CERT_REFUSED =
  /ALERT_(UNKNOWN_CA|BAD_CERTIFICATE|CERTIFICATE_UNKNOWN|UNSUPPORTED_CERTIFICATE|CERTIFICATE_EXPIRED|CERTIFICATE_REVOKED|DECRYPT_ERROR|ACCESS_DENIED)$/;

/** Node's TLS errors; ERR_TLS_CERT_ALTNAME_INVALID carries the certificate it judged. */
type TlsError = NodeJS.ErrnoException & { reason?: string; cert?: tls.PeerCertificate };

type Outcome = { kind: 'answered' } | { kind: 'closed'; secured: boolean } | { kind: 'error'; err: TlsError } | { kind: 'timeout' };

/** One TLS handshake to hp, then the HTTP/2 preface: how far it got. */
function handshake(hp: HostPort, options: tls.ConnectionOptions, timeoutMs: number): Promise<Outcome> {
  return new Promise((resolve) => {
    const sock = tls.connect({ host: hp.host, port: hp.port, ALPNProtocols: ['h2'], ...options });
    const done = (o: Outcome) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(o);
    };
    const timer = setTimeout(() => done({ kind: 'timeout' }), timeoutMs);
    sock.once('secureConnect', () => {
      // TLS 1.3: the receiver judges our certificate after the handshake completed on our side;
      // a refusal arrives as an alert (an error here) or as a plain close.
      sock.write(H2_PREFACE);
      sock.once('data', () => done({ kind: 'answered' }));
      sock.once('end', () => done({ kind: 'closed', secured: true }));
    });
    // A reset right after the handshake is the same refusal as a close (it depends on timing
    // whether our preface met a closed socket).
    sock.on('error', (err) => done(sock.authorized && isNetworkError(err) ? { kind: 'closed', secured: true } : { kind: 'error', err }));
    sock.once('close', () => done({ kind: 'closed', secured: sock.authorized }));
  });
}

/** A network error (refused, reset, unreachable: a syscall's or an errno code), not a TLS one. */
function isNetworkError(err: NodeJS.ErrnoException): boolean {
  return err.syscall !== undefined || /^E[A-Z]+$/.test(err.code ?? '');
}

/**
 * The definite TLS problem of a link to hp with `security`, as the sender's one-line message; null
 * when the handshake works or the failure is not a TLS one (it may heal: keep waiting).
 */
export async function tlsProblem(hp: HostPort, security: LinkSecurity, timeoutMs: number): Promise<string | null> {
  const where = formatHostPort(hp);
  const wait = Math.min(timeoutMs, 5000);
  const t = security.tls;
  if (!t) {
    // Plaintext: a receiver that completes a TLS handshake (any certificate) runs with TLS.
    const o = await handshake(hp, { rejectUnauthorized: false }, wait);
    const spoke = o.kind === 'answered' || (o.kind === 'error' && !isNetworkError(o.err) && /ALERT/.test(o.err.code ?? ''));
    return spoke ? `receiver at ${where} uses TLS: give --tls-ca (the CA that signed its certificate)` : null;
  }
  const name = security.serverName;
  const o = await handshake(
    hp,
    {
      ca: t.ca ?? undefined,
      cert: t.cert ?? undefined,
      key: t.key ?? undefined,
      // As grpc-js does: SNI only for a name (never an IP address), the name checked against the certificate.
      ...(name ? { servername: name, checkServerIdentity: (_h: string, c: tls.PeerCertificate) => tls.checkServerIdentity(name, c) } : {}),
    },
    wait,
  );
  const failed = (why: string) => `TLS handshake with receiver at ${where} failed: ${why}`;
  if (o.kind === 'closed' && o.secured) {
    // Right after a handshake that went well on our side, before any HTTP/2 answer: the receiver
    // dropped the connection, which is what Node does with a client certificate it rejects.
    return t.cert ? failed("the receiver refused this sender's client certificate (check --tls-cert: the receiver's --tls-ca must have signed it)") : null;
  }
  if (o.kind !== 'error' || isNetworkError(o.err)) return null;
  const code = o.err.code ?? '';
  if (UNKNOWN_CA.has(code)) return failed('certificate signed by an unknown CA (check --tls-ca)');
  if (code === 'CERT_HAS_EXPIRED') return failed("the receiver's certificate has expired");
  if (code === 'CERT_NOT_YET_VALID') return failed("the receiver's certificate is not valid yet (check the clocks)");
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    const names = o.err.cert?.subjectaltname ?? o.err.cert?.subject?.CN ?? '?';
    return failed(`the receiver's certificate is not for ${name ?? hp.host} (it names ${names}): dial one of those names, or give --tls-server-name`);
  }
  if (code === 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED') return failed('the receiver requires a client certificate (give --tls-cert and --tls-key)');
  if (CLIENT_CERT_REFUSED.test(code))
    return failed("the receiver refused this sender's client certificate (check --tls-cert: the receiver's --tls-ca must have signed it)");
  if (code === 'ERR_SSL_WRONG_VERSION_NUMBER' || code === 'ERR_SSL_PACKET_LENGTH_TOO_LONG') {
    return failed('the receiver does not speak TLS (it runs without --tls-cert/--tls-key)');
  }
  return failed(o.err.message.split('\n')[0]);
}
