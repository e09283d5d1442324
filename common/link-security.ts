// Security of the sender-receiver link (docs/design.md, Securing the link): the TLS files, the shared token, and the rule
// that plaintext is for loopback only. Both CLIs turn the same flags into a LinkSecurity here, so
// that every file problem is found at start-up with one plain line (not as a handshake failure
// minutes later); the gRPC credentials are made from it on each side (proto/client.ts,
// receiver/server/receiver-server.ts), the token is checked by receiver/server/auth.ts.
//
//   receiver: --tls-cert + --tls-key turn TLS on; --tls-ca then REQUIRES client certificates
//             signed by that CA (mutual TLS).
//   sender:   --tls-ca (the CA that signed the receiver's certificate) turns TLS on;
//             --tls-cert + --tls-key are its client certificate; --tls-server-name overrides the
//             name the receiver's certificate must carry.
//   both:     --token-file FILE: a shared secret, sent as `authorization: Bearer TOKEN`.
//             --insecure: allow plaintext on a non-loopback address.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import { formatHostPort, type HostPort } from './cli';
import { UserError } from './errors';

/** PEM material of one side. */
export interface TlsMaterial {
  /** This side's certificate chain (receiver: always; sender: only for mutual TLS). */
  cert: Buffer | null;
  key: Buffer | null;
  /** CA bundle: the sender verifies the receiver with it; a receiver given one requires client certificates signed by it. */
  ca: Buffer | null;
}

export interface LinkSecurity {
  /** null: plaintext. */
  tls: TlsMaterial | null;
  /** The shared token, null: none. */
  token: string | null;
  /** Sender: the name the receiver's certificate must carry when it is not the host dialled. */
  serverName: string | null;
}

export const PLAINTEXT: LinkSecurity = { tls: null, token: null, serverName: null };

/** The call metadata carrying the token, and its value. */
export const TOKEN_METADATA_KEY = 'authorization';
export const bearer = (token: string) => `Bearer ${token}`;

/** parseArgs options of the flags both commands take. */
export const SECURITY_FLAGS = {
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  'tls-ca': { type: 'string' },
  'token-file': { type: 'string' },
  insecure: { type: 'boolean' },
} as const;

/** The sender's: the common ones and --tls-server-name. */
export const SENDER_SECURITY_FLAGS = { ...SECURITY_FLAGS, 'tls-server-name': { type: 'string' } } as const;

export interface SecurityFlagValues {
  'tls-cert'?: string;
  'tls-key'?: string;
  'tls-ca'?: string;
  'token-file'?: string;
  insecure?: boolean;
  'tls-server-name'?: string;
}

const LOOPBACK = new net.BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6'); // also matches ::ffff:127.x.y.z (BlockList maps IPv4-in-IPv6)

/** A loopback address as written: 127.0.0.0/8, ::1 or localhost. Names are not resolved, and
 *  0.0.0.0 / :: (every interface) are not loopback. */
export function isLoopback(host: string): boolean {
  if (/^localhost\.?$/i.test(host)) return true;
  const family = net.isIP(host);
  return family !== 0 && LOOPBACK.check(host, family === 6 ? 'ipv6' : 'ipv4');
}

/** The receiver's flags (listening on `listen`). */
export function receiverSecurity(v: SecurityFlagValues, listen: HostPort): LinkSecurity {
  checkCommon(v);
  if (v['tls-ca'] !== undefined && v['tls-cert'] === undefined) {
    throw new UserError('--tls-ca makes the receiver require client certificates, over TLS: give --tls-cert and --tls-key too');
  }
  const tls = v['tls-cert'] !== undefined ? loadTls(v) : null;
  if (!tls && !v.insecure && !isLoopback(listen.host)) {
    throw new UserError(`refusing to serve plaintext on ${formatHostPort(listen)}: give --tls-cert and --tls-key, or --insecure`);
  }
  return { tls, token: loadToken(v), serverName: null };
}

/** The sender's flags (dialling `to`). */
export function senderSecurity(v: SecurityFlagValues, to: HostPort): LinkSecurity {
  checkCommon(v);
  if (v['tls-ca'] === undefined) {
    if (v['tls-cert'] !== undefined) throw new UserError("--tls-cert/--tls-key need --tls-ca (the CA that signed the receiver's certificate)");
    if (v['tls-server-name'] !== undefined) throw new UserError("--tls-server-name needs --tls-ca (the CA that signed the receiver's certificate)");
  }
  const tls = v['tls-ca'] !== undefined ? loadTls(v) : null;
  if (!tls && !v.insecure && !isLoopback(to.host)) {
    throw new UserError(`refusing to send plaintext to ${formatHostPort(to)}: give --tls-ca (the CA of the receiver's certificate), or --insecure`);
  }
  const serverName = v['tls-server-name'] ?? null;
  if (serverName !== null && !/^[A-Za-z0-9.:_-]{1,253}$/.test(serverName)) throw new UserError(`--tls-server-name expects a host name, got '${serverName}'`);
  return { tls, token: loadToken(v), serverName };
}

/** In words, for logs: "TLS, client certificates required, token required". */
export function describeSecurity({ tls, token }: LinkSecurity): string {
  const parts = [tls ? 'TLS' : 'plaintext'];
  if (tls?.cert && tls.ca) parts.push('client certificates required');
  if (token !== null) parts.push('token required');
  return parts.join(', ');
}

/** The flags that only make sense for a network link, when there is none (--to dir:PATH). */
export function refuseSecurityFlags(v: SecurityFlagValues, why: string): void {
  const given = Object.keys(SENDER_SECURITY_FLAGS).filter((k) => v[k as keyof SecurityFlagValues] !== undefined);
  if (given.length > 0) throw new UserError(`${given.map((k) => `--${k}`).join(', ')}: ${why}`);
}

function checkCommon(v: SecurityFlagValues): void {
  if (v.insecure) {
    const tlsFlag = (['tls-cert', 'tls-key', 'tls-ca', 'tls-server-name'] as const).find((k) => v[k] !== undefined);
    if (tlsFlag) throw new UserError(`--insecure contradicts --${tlsFlag}: give TLS flags or --insecure, not both`);
  }
  if ((v['tls-cert'] === undefined) !== (v['tls-key'] === undefined)) throw new UserError('--tls-cert and --tls-key go together: give both or neither');
}

function loadTls(v: SecurityFlagValues): TlsMaterial {
  const cert = v['tls-cert'] === undefined ? null : readCertificates(v['tls-cert'], '--tls-cert');
  const ca = v['tls-ca'] === undefined ? null : readCertificates(v['tls-ca'], '--tls-ca');
  let key: Buffer | null = null;
  if (v['tls-key'] !== undefined) {
    key = readFlagFile(v['tls-key'], '--tls-key');
    let keyObject: crypto.KeyObject;
    try {
      keyObject = crypto.createPrivateKey(key);
    } catch {
      throw new UserError(`--tls-key: ${v['tls-key']} is not a PEM private key (or it is encrypted: give an unencrypted key)`);
    }
    if (cert && !cert.first.checkPrivateKey(keyObject)) {
      throw new UserError(`--tls-key: ${v['tls-key']} is not the key of the certificate in ${v['tls-cert']}`);
    }
  }
  return { cert: cert?.pem ?? null, key, ca: ca?.pem ?? null };
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** A PEM file of one or more certificates, each parsed and within its validity period. */
function readCertificates(file: string, flag: string): { pem: Buffer; first: crypto.X509Certificate } {
  const pem = readFlagFile(file, flag);
  const blocks = pem.toString('latin1').match(PEM_CERT);
  if (!blocks) throw new UserError(`${flag}: ${file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  const certs = blocks.map((b, i) => {
    try {
      return new crypto.X509Certificate(b);
    } catch (err) {
      throw new UserError(`${flag}: certificate ${i + 1} in ${file} is not valid: ${(err as Error).message}`);
    }
  });
  const now = Date.now();
  for (const c of certs) {
    const subject = c.subject.replace(/\n/g, ', ');
    if (Date.parse(c.validTo) < now) throw new UserError(`${flag}: the certificate '${subject}' in ${file} expired on ${c.validTo}`);
    if (Date.parse(c.validFrom) > now) throw new UserError(`${flag}: the certificate '${subject}' in ${file} is not valid before ${c.validFrom}`);
  }
  return { pem, first: certs[0] };
}

/** The token: one line of printable ASCII, from a file only its owner can read. */
function loadToken(v: SecurityFlagValues): string | null {
  const file = v['token-file'];
  if (file === undefined) return null;
  const content = readFlagFile(file, '--token-file');
  const mode = fs.statSync(file).mode & 0o777;
  if (mode & 0o077) {
    throw new UserError(`--token-file: ${file} can be read by other users (mode ${mode.toString(8).padStart(4, '0')}): chmod 600 ${file}`);
  }
  const token = content.toString('utf8').replace(/[\r\n]+$/, '');
  if (token === '') throw new UserError(`--token-file: ${file} is empty`);
  if (!/^[\x21-\x7e]+$/.test(token)) throw new UserError(`--token-file: the token in ${file} must be one line of printable ASCII without spaces`);
  return token;
}

/** A file named by a flag, or a UserError saying why it cannot be read. */
function readFlagFile(file: string, flag: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why: Record<string, string> = { ENOENT: 'no such file', EACCES: 'permission denied', EISDIR: 'is a directory' };
    throw new UserError(`${flag}: cannot read ${file}: ${why[e.code ?? ''] ?? e.message}`);
  }
}
