// Pure logic of the link's security (proto/link-security.ts, receiver/server/auth.ts): what counts
// as loopback, which flag sets each side accepts, and the token comparison. The processes, the
// handshakes and the refusals on the wire are tested end to end in test/e2e/tls.test.ts.

import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { UserError } from '../../common/errors';
import { PLAINTEXT, isLoopback, receiverSecurity, senderSecurity, type SecurityFlagValues } from '../../common/link-security';
import { TokenCheck } from '../../receiver/server/auth';
import { makePki, type Pki } from '../helpers/pki';

let pki: Pki;
test.before(() => {
  pki = makePki();
});
test.after.always(() => pki?.remove());

test('loopback: 127.0.0.0/8, ::1 and localhost; every-interface and other addresses are not', (t) => {
  for (const h of ['127.0.0.1', '127.1.2.3', '::1', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1', 'localhost', 'LOCALHOST', 'localhost.']) t.true(isLoopback(h), h);
  for (const h of ['0.0.0.0', '::', '10.1.2.3', '192.168.0.1', '128.0.0.1', '::2', 'fe80::1', 'example.com', 'localhost.example.com', 'mylocalhost'])
    t.false(isLoopback(h), h);
});

const LOOP = { host: '127.0.0.1', port: 7070 };
const FAR = { host: '10.1.2.3', port: 7070 };

test('receiver: plaintext on loopback, TLS or --insecure elsewhere; --tls-ca means mutual TLS', (t) => {
  t.deepEqual(receiverSecurity({}, LOOP), PLAINTEXT);
  t.throws(() => receiverSecurity({}, FAR), { instanceOf: UserError, message: /^refusing to serve plaintext on 10\.1\.2\.3:7070/ });
  t.deepEqual(receiverSecurity({ insecure: true }, FAR), PLAINTEXT);
  const tls = receiverSecurity({ 'tls-cert': pki.receiverCert, 'tls-key': pki.receiverKey }, FAR).tls!;
  t.deepEqual([tls.cert, tls.key, tls.ca], [fs.readFileSync(pki.receiverCert), fs.readFileSync(pki.receiverKey), null]);
  const mutual = receiverSecurity({ 'tls-cert': pki.receiverCert, 'tls-key': pki.receiverKey, 'tls-ca': pki.ca }, FAR).tls!;
  t.deepEqual(mutual.ca, fs.readFileSync(pki.ca));
});

test('sender: --tls-ca turns TLS on; a client certificate needs it; the server name is kept', (t) => {
  t.deepEqual(senderSecurity({}, LOOP), PLAINTEXT);
  t.throws(() => senderSecurity({}, FAR), { message: /^refusing to send plaintext to 10\.1\.2\.3:7070/ });
  const s = senderSecurity({ 'tls-ca': pki.ca, 'tls-cert': pki.clientCert, 'tls-key': pki.clientKey, 'tls-server-name': 'receiver-1' }, FAR);
  t.deepEqual(s.tls?.ca, fs.readFileSync(pki.ca));
  t.is(s.serverName, 'receiver-1');
  t.is(senderSecurity({ 'tls-ca': pki.ca }, FAR).tls?.cert, null);
  const refused: [SecurityFlagValues, RegExp][] = [
    [{ 'tls-server-name': 'x' }, /--tls-server-name needs --tls-ca/],
    [{ 'tls-cert': pki.clientCert, 'tls-key': pki.clientKey }, /--tls-cert\/--tls-key need --tls-ca/],
    [{ 'tls-ca': pki.ca, 'tls-cert': pki.clientCert }, /--tls-cert and --tls-key go together/],
    [{ 'tls-ca': pki.ca, 'tls-key': pki.clientKey }, /--tls-cert and --tls-key go together/],
    [{ 'tls-ca': pki.ca, insecure: true }, /--insecure contradicts --tls-ca/],
    [{ 'tls-ca': pki.ca, 'tls-cert': pki.clientCert, 'tls-key': pki.receiverKey }, /is not the key of the certificate/],
  ];
  for (const [flags, message] of refused) t.throws(() => senderSecurity(flags, LOOP), { instanceOf: UserError, message }, JSON.stringify(flags));
});

test('token file: trailing newline dropped; empty, multi-line or group/world-readable files refused', (t) => {
  const file = (name: string, content: string, mode = 0o600) => {
    const f = path.join(pki.dir, name);
    fs.writeFileSync(f, content);
    fs.chmodSync(f, mode);
    return f;
  };
  t.is(senderSecurity({ 'token-file': file('t1', 's3cret\r\n') }, LOOP).token, 's3cret');
  t.is(receiverSecurity({ 'token-file': file('t2', 's3cret') }, LOOP).token, 's3cret');
  t.throws(() => senderSecurity({ 'token-file': file('t3', '\n') }, LOOP), { message: /is empty$/ });
  t.throws(() => senderSecurity({ 'token-file': file('t4', 'two\nlines\n') }, LOOP), { message: /one line of printable ASCII/ });
  t.throws(() => senderSecurity({ 'token-file': file('t5', 's3cret', 0o640) }, LOOP), { message: /can be read by other users \(mode 0640\): chmod 600/ });
  t.throws(() => senderSecurity({ 'token-file': path.join(pki.dir, 'missing') }, LOOP), { message: /cannot read .*missing: no such file$/ });
  // A token over plaintext still obeys the loopback rule.
  t.throws(() => senderSecurity({ 'token-file': file('t6', 's3cret') }, FAR), { message: /^refusing to send plaintext/ });
});

test('token check: exactly one `authorization: Bearer TOKEN` passes', (t) => {
  const check = new TokenCheck('s3cret');
  const md = (...values: string[]) => {
    const m = new grpc.Metadata();
    for (const v of values) m.add('authorization', v);
    return m;
  };
  t.true(check.accepts(md('Bearer s3cret')));
  for (const values of [[], ['Bearer s3cre'], ['Bearer s3cret2'], ['bearer s3cret'], ['s3cret'], ['Bearer s3cret', 'Bearer s3cret']]) {
    t.false(check.accepts(md(...values)), JSON.stringify(values));
  }
});
