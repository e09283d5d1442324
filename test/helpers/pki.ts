// A throw-away PKI for TLS tests, made with the openssl CLI in a temporary directory: a CA, a
// receiver certificate for 127.0.0.1 and localhost, a client certificate, and an unrelated second CA
// with a client certificate of its own (what a wrong CA looks like). EC P-256 keys: fast to make.

import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { requireProgram } from './system-deps';

export interface Pki {
  dir: string;
  /** The CA that signed receiver and client. */
  ca: string;
  receiverCert: string;
  receiverKey: string;
  clientCert: string;
  clientKey: string;
  /** An unrelated CA, and a client certificate it signed. */
  otherCa: string;
  otherClientCert: string;
  otherClientKey: string;
  remove(): void;
}

const openssl = (dir: string, args: string[]) => execFileSync(requireProgram('openssl'), args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];

function makeCa(dir: string, name: string): void {
  openssl(dir, [
    'req',
    '-x509',
    ...EC,
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.crt`,
    '-days',
    '2',
    '-subj',
    `/CN=precopy test ${name}`,
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
}

function makeCert(dir: string, name: string, ca: string, san: string, usage: 'serverAuth' | 'clientAuth'): void {
  openssl(dir, ['req', ...EC, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=precopy test ${name}`]);
  fs.writeFileSync(path.join(dir, `${name}.ext`), `subjectAltName=${san}\nextendedKeyUsage=${usage}\n`);
  openssl(dir, [
    'x509',
    '-req',
    '-in',
    `${name}.csr`,
    '-CA',
    `${ca}.crt`,
    '-CAkey',
    `${ca}.key`,
    '-CAcreateserial',
    '-out',
    `${name}.crt`,
    '-days',
    '2',
    '-extfile',
    `${name}.ext`,
  ]);
  fs.chmodSync(path.join(dir, `${name}.key`), 0o600);
}

export function makePki(): Pki {
  requireProgram('openssl'); // before the directory is made
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'precopy-pki-'));
  makeCa(dir, 'ca');
  makeCa(dir, 'other');
  makeCert(dir, 'receiver', 'ca', 'IP:127.0.0.1,DNS:localhost', 'serverAuth');
  makeCert(dir, 'client', 'ca', 'DNS:precopy-sender', 'clientAuth');
  makeCert(dir, 'other-client', 'other', 'DNS:precopy-sender', 'clientAuth');
  const f = (name: string) => path.join(dir, name);
  return {
    dir,
    ca: f('ca.crt'),
    receiverCert: f('receiver.crt'),
    receiverKey: f('receiver.key'),
    clientCert: f('client.crt'),
    clientKey: f('client.key'),
    otherCa: f('other.crt'),
    otherClientCert: f('other-client.crt'),
    otherClientKey: f('other-client.key'),
    remove: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}
