// Security of the link, end to end (docs/design.md, Securing the link): a real receiver process, the real sender CLI and a
// real 16 MiB target, with certificates made by openssl for the test (test/helpers/pki.ts).
//   - TLS with the right CA commits an image equal to the memory; a wrong CA, a wrong server
//     name, TLS against plaintext and plaintext against TLS are refused in one clear line, before
//     the target is touched;
//   - a receiver with --tls-ca refuses senders without a client certificate or with one from
//     another CA, and takes the right one;
//   - --token-file: a missing or wrong token ends the call UNAUTHENTICATED, the right one works,
//     health stays open;
//   - plaintext off loopback needs --insecure, on both sides; contradictory or broken flags and
//     files are refused at start-up.

import test, { type ExecutionContext } from 'ava';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { healthService, type HealthCheckResponse } from '../../proto/health';
import { makePki, type Pki } from '../helpers/pki';
import { startReceiver, type ReceiverHandle } from '../helpers/receiver';
import { Target } from '../helpers/target';
import {
  RECEIVER_CLI,
  SENDER_CLI,
  assertImageEqualsMemory,
  describeRun,
  exportRaw,
  killStopped,
  receiverCli,
  runSender,
  tempDir,
} from '../helpers/migration-cli';
import { assertUnharmed } from './target-health';

let pki: Pki;
let tokens: { right: string; wrong: string };

test.before(() => {
  pki = makePki();
  const file = (name: string, content: string) => {
    const f = path.join(pki.dir, name);
    fs.writeFileSync(f, content, { mode: 0o600 });
    return f;
  };
  tokens = { right: file('token', 'c0rrect-horse-battery-staple\n'), wrong: file('wrong-token', 'guess\n') };
});
test.after.always(() => pki?.remove());

const tlsReceiver = () => ['--tls-cert', pki.receiverCert, '--tls-key', pki.receiverKey];
const clientCert = () => ['--tls-cert', pki.clientCert, '--tls-key', pki.clientKey];

/** A receiver with these flags for the duration of fn; its log must describe the link as `link`. */
async function withReceiver(t: ExecutionContext, args: string[], link: string, fn: (r: ReceiverHandle, images: string) => Promise<void>): Promise<void> {
  const images = tempDir('precopy-e2e-tls-');
  const receiver = await startReceiver({ images, args });
  try {
    await fn(receiver, images);
  } finally {
    await receiver.stop();
    fs.rmSync(images, { recursive: true, force: true });
  }
  t.true(receiver.stderr().includes(`; link: ${link}\n`), receiver.stderr());
  t.log(`receiver ${args.filter((a) => a.startsWith('--')).join(' ') || '(plaintext)'}: link ${link}`);
}

let sessions = 0;

/** A migration that must commit, with the image equal to the stopped target's memory. */
async function migrateOk(t: ExecutionContext, r: ReceiverHandle, images: string, senderArgs: string[], to = r.address): Promise<void> {
  const target = await Target.start({ mib: 16, seed: 60 + sessions });
  const session = `tls-${process.pid}-${sessions++}`;
  try {
    await target.writers(1, 5_000_000);
    const run = await runSender(['--pid', String(target.pid), '--to', to, '--session', session, '--after', 'stop', ...senderArgs]);
    t.is(run.code, 0, describeRun(run));
    t.is(run.summary?.result, 'committed');
    t.log(`${senderArgs.filter((a) => a.startsWith('--')).join(' ')}: committed, ${run.summary!.rounds.length} rounds, ${run.summary!.memoryBytes} bytes`);
    const out = await exportRaw(images, session);
    try {
      assertImageEqualsMemory(t, target.pid, out);
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  } finally {
    killStopped(target.pid);
  }
}

/** A migration that must be refused with `message`, before the target is touched. */
async function migrateRefused(t: ExecutionContext, r: ReceiverHandle, images: string, senderArgs: string[], message: RegExp, to = r.address): Promise<void> {
  const target = await Target.start({ mib: 16, seed: 80 + sessions });
  const session = `tls-refused-${process.pid}-${sessions++}`;
  try {
    await target.writers(1, 5_000_000);
    const run = await runSender(['--pid', String(target.pid), '--to', to, '--session', session, ...senderArgs], { json: false });
    t.not(run.code, 0, describeRun(run));
    t.regex(run.stderr, message, describeRun(run));
    t.notRegex(run.stderr, /\n\s+at /, 'no stack trace');
    t.is(run.stderr.trim().split('\n').length, 1, `one line: ${run.stderr}`);
    t.log(`refused: ${run.stderr.trim()}`);
    await assertUnharmed(t, target, { writers: true });
    const list = await receiverCli(['list', '--images', images]);
    t.false(list.stdout.includes(session), `no session ${session} on the receiver:\n${list.stdout}`);
  } finally {
    await target.kill();
  }
}

const where = (r: ReceiverHandle) => r.address.replace(/\./g, '\\.');

test.serial('TLS: the right CA commits a correct image; --tls-server-name picks the name checked', async (t) => {
  await withReceiver(t, tlsReceiver(), 'TLS', async (r, images) => {
    await migrateOk(t, r, images, ['--tls-ca', pki.ca]);
    await migrateOk(t, r, images, ['--tls-ca', pki.ca, '--tls-server-name', 'localhost']);
  });
});

test.serial('TLS: a wrong CA, a wrong server name and plaintext are refused clearly; the target is unharmed', async (t) => {
  await withReceiver(t, tlsReceiver(), 'TLS', async (r, images) => {
    const failed = `^sender: TLS handshake with receiver at ${where(r)} failed: `;
    await migrateRefused(t, r, images, ['--tls-ca', pki.otherCa], new RegExp(`${failed}certificate signed by an unknown CA \\(check --tls-ca\\)$`, 'm'));
    await migrateRefused(
      t,
      r,
      images,
      ['--tls-ca', pki.ca, '--tls-server-name', 'receiver.example'],
      new RegExp(`${failed}the receiver's certificate is not for receiver\\.example \\(it names IP Address:127\\.0\\.0\\.1, DNS:localhost\\)`),
    );
    await migrateRefused(t, r, images, [], new RegExp(`^sender: receiver at ${where(r)} uses TLS: give --tls-ca`, 'm'));
  });
  await withReceiver(t, [], 'plaintext', async (r, images) => {
    await migrateRefused(t, r, images, ['--tls-ca', pki.ca], new RegExp(`TLS handshake with receiver at ${where(r)} failed: the receiver does not speak TLS`));
  });
});

test.serial('mutual TLS: no client certificate or one from another CA is refused, the right one works', async (t) => {
  await withReceiver(t, [...tlsReceiver(), '--tls-ca', pki.ca], 'TLS, client certificates required', async (r, images) => {
    const failed = `^sender: TLS handshake with receiver at ${where(r)} failed: `;
    await migrateRefused(
      t,
      r,
      images,
      ['--tls-ca', pki.ca],
      new RegExp(`${failed}the receiver requires a client certificate \\(give --tls-cert and --tls-key\\)`, 'm'),
    );
    await migrateRefused(
      t,
      r,
      images,
      ['--tls-ca', pki.ca, '--tls-cert', pki.otherClientCert, '--tls-key', pki.otherClientKey],
      new RegExp(`${failed}the receiver refused this sender's client certificate`, 'm'),
    );
    await migrateOk(t, r, images, ['--tls-ca', pki.ca, ...clientCert()]);
  });
});

function healthCheck(address: string, credentials: grpc.ChannelCredentials): Promise<string> {
  const Health = healthService();
  const client = new Health(address, credentials) as unknown as grpc.Client & {
    Check(req: { service: string }, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: HealthCheckResponse) => void): void;
  };
  return new Promise<string>((resolve) =>
    client.Check({ service: 'precopy.v1.Migration' }, { deadline: Date.now() + 10_000 }, (err, res) => {
      client.close();
      resolve(err ? `error ${grpc.status[err.code]}` : res!.status);
    }),
  );
}

test.serial('token: missing or wrong token refused UNAUTHENTICATED, the right one works, health stays open', async (t) => {
  await withReceiver(t, ['--token-file', tokens.right], 'plaintext, token required', async (r, images) => {
    const refused = new RegExp(`^sender: receiver at ${where(r)} refused the sender: wrong or missing token \\(UNAUTHENTICATED; check --token-file\\)$`, 'm');
    await migrateRefused(t, r, images, [], refused);
    await migrateRefused(t, r, images, ['--token-file', tokens.wrong], refused);
    t.is([...r.stderr().matchAll(/refused a migration from \S+: wrong or missing token/g)].length, 2, 'the receiver logged both refusals');
    t.is(await healthCheck(r.address, grpc.credentials.createInsecure()), 'SERVING', 'health needs no token');
    await migrateOk(t, r, images, ['--token-file', tokens.right]);
  });
  // Token and mutual TLS together.
  await withReceiver(
    t,
    [...tlsReceiver(), '--tls-ca', pki.ca, '--token-file', tokens.right],
    'TLS, client certificates required, token required',
    async (r, images) => {
      await migrateRefused(t, r, images, ['--tls-ca', pki.ca, ...clientCert()], /wrong or missing token \(UNAUTHENTICATED/);
      await migrateOk(t, r, images, ['--tls-ca', pki.ca, ...clientCert(), '--token-file', tokens.right]);
      // Lanes are Migrate streams of their own: each carries the client certificate and the token.
      await migrateOk(t, r, images, ['--tls-ca', pki.ca, ...clientCert(), '--token-file', tokens.right, '--streams', '3']);
    },
  );
});

/** A CLI run that must end by itself (a refused start), with a time limit in case it does not. */
function cli(script: string, args: string[]): { code: number | null; stderr: string } {
  const r = spawnSync(process.execPath, [script, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stderr: r.stderr };
}

test.serial('plaintext off loopback needs --insecure; contradictions and bad files are refused at start-up', async (t) => {
  const images = tempDir('precopy-e2e-tls-rule-');
  t.teardown(() => fs.rmSync(images, { recursive: true, force: true }));
  const serve = (...args: string[]) => cli(RECEIVER_CLI, ['serve', '--images', images, ...args]);
  const migrate = (...args: string[]) => cli(SENDER_CLI, ['migrate', '--pid', '1', ...args]);
  const cases: [string, { code: number | null; stderr: string }, string][] = [
    [
      'receiver on 0.0.0.0',
      serve('--listen', '0.0.0.0:7070'),
      'receiver: refusing to serve plaintext on 0.0.0.0:7070: give --tls-cert and --tls-key, or --insecure',
    ],
    ['receiver on ::', serve('--listen', '[::]:7070'), 'receiver: refusing to serve plaintext on [::]:7070: give --tls-cert and --tls-key, or --insecure'],
    [
      'sender to 10.1.2.3',
      migrate('--to', '10.1.2.3:7070'),
      "sender: refusing to send plaintext to 10.1.2.3:7070: give --tls-ca (the CA of the receiver's certificate), or --insecure",
    ],
    [
      'receiver --insecure with TLS',
      serve('--insecure', ...tlsReceiver()),
      'receiver: --insecure contradicts --tls-cert: give TLS flags or --insecure, not both',
    ],
    [
      'sender --insecure with TLS',
      migrate('--to', '10.1.2.3:7070', '--insecure', '--tls-ca', pki.ca),
      'sender: --insecure contradicts --tls-ca: give TLS flags or --insecure, not both',
    ],
    ['receiver cert without key', serve('--tls-cert', pki.receiverCert), 'receiver: --tls-cert and --tls-key go together: give both or neither'],
    [
      'receiver --tls-ca alone',
      serve('--tls-ca', pki.ca),
      'receiver: --tls-ca makes the receiver require client certificates, over TLS: give --tls-cert and --tls-key too',
    ],
    [
      'sender client cert without CA',
      migrate('--to', '127.0.0.1:7070', ...clientCert()),
      "sender: --tls-cert/--tls-key need --tls-ca (the CA that signed the receiver's certificate)",
    ],
    [
      'missing certificate file',
      serve('--tls-cert', '/nonexistent.crt', '--tls-key', pki.receiverKey),
      'receiver: --tls-cert: cannot read /nonexistent.crt: no such file',
    ],
    [
      'key of another certificate',
      serve('--tls-cert', pki.receiverCert, '--tls-key', pki.clientKey),
      `receiver: --tls-key: ${pki.clientKey} is not the key of the certificate in ${pki.receiverCert}`,
    ],
    [
      'a key as the CA',
      migrate('--to', '127.0.0.1:7070', '--tls-ca', pki.clientKey),
      `sender: --tls-ca: ${pki.clientKey} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`,
    ],
    [
      'a certificate as the key',
      serve('--tls-cert', pki.receiverCert, '--tls-key', pki.receiverCert),
      `receiver: --tls-key: ${pki.receiverCert} is not a PEM private key (or it is encrypted: give an unencrypted key)`,
    ],
  ];
  const emptyToken = path.join(pki.dir, 'empty-token');
  fs.writeFileSync(emptyToken, '\n', { mode: 0o600 });
  cases.push(['empty token file', serve('--token-file', emptyToken), `receiver: --token-file: ${emptyToken} is empty`]);
  const openToken = path.join(pki.dir, 'open-token');
  fs.writeFileSync(openToken, 'secret\n', { mode: 0o644 });
  fs.chmodSync(openToken, 0o644);
  cases.push([
    'token readable by others',
    migrate('--to', '127.0.0.1:7070', '--token-file', openToken),
    `sender: --token-file: ${openToken} can be read by other users (mode 0644): chmod 600 ${openToken}`,
  ]);
  cases.push([
    'TLS flags with --to dir:',
    migrate('--to', `dir:${images}`, '--tls-ca', pki.ca),
    'sender: --tls-ca: apply to a receiver address, not to --to dir:',
  ]);

  for (const [name, run, message] of cases) {
    t.is(run.code, 2, `${name}: ${run.stderr}`);
    t.is(run.stderr, `${message}\n`, name);
  }
  t.log(
    `${cases.length} refusals, e.g.\n${cases
      .slice(0, 3)
      .map((c) => c[2])
      .join('\n')}`,
  );

  // With --insecure the receiver serves plaintext on every interface.
  const open = await startReceiver({ images, listen: '0.0.0.0:0', args: ['--insecure'] });
  t.teardown(() => open.stop());
  t.regex(open.address, /^0\.0\.0\.0:\d+$/);
  t.is(await healthCheck(`127.0.0.1:${open.port}`, grpc.credentials.createInsecure()), 'SERVING');
});
