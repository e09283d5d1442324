// The ProcessState wire format: a real capture round-trips exactly; hostile documents are refused
// with one ProcessStateError naming the field.

import test from 'ava';
import { freezeForRestore } from '../../native';
import { decodeProcessState, encodeProcessState, LIMITS, PROCESS_STATE_VERSION, type ProcessState, ProcessStateError, REG } from '../../image/process-state';
import { captureProcessState } from '../../sender/capture/capture-process-state';
import { startWorkload } from '../receiver/restore/helpers/workload';

let captured: ProcessState | undefined;

async function realState(): Promise<ProcessState> {
  if (captured) return captured;
  const w = await startWorkload(['--workers', '2']);
  const f = freezeForRestore(w.pid);
  try {
    captured = captureProcessState(f, w.pid);
  } finally {
    f.thaw();
    w.child.kill('SIGKILL');
    await w.exited;
  }
  return captured;
}

/** The encoded document as a plain object, to be spoiled. */
async function doc(): Promise<any> {
  return JSON.parse(encodeProcessState(await realState()).toString('utf8'));
}

const enc = (o: unknown): Buffer => Buffer.from(JSON.stringify(o));

test.serial('a captured state round-trips through encode/decode exactly', async (t) => {
  const s = await realState();
  t.is(s.version, PROCESS_STATE_VERSION);
  t.is(s.threads[0].tid, s.pid);
  t.true(s.threads.length >= 6, 'workers, avx, sleeper, joinee, main');
  t.true(
    s.threads.every((x) => x.rseq !== null && x.robustList.len === 24n && x.clearChildTid !== 0n),
    'glibc registered rseq, robust list, tid address in every thread',
  );
  t.true(
    s.threads.every((x) => x.regs.readBigInt64LE(REG.orig_rax * 8) === -1n),
    'orig_rax = -1 in stored regs',
  );
  t.true(s.sigactions[9].flags !== 0n || s.sigactions[9].handler !== 0n, 'SIGUSR1 (10) has a handler');
  t.true(
    s.threads.some((x) => x.syscallRestart.decision !== 'none'),
    'some thread was caught in a sleep',
  );
  t.true(s.mm.auxv.length > 0 && s.mm.auxv.length % 16 === 0);
  t.is(s.rlimits.length, 16);
  const back = decodeProcessState(encodeProcessState(s));
  t.deepEqual(back, s);
});

const spoilers: Array<[string, (d: any) => void, RegExp]> = [
  ['wrong version', (d) => (d.version = 2), /version 2 is not supported/],
  ['no threads', (d) => (d.threads = []), /threads has 0 entries/],
  ['too many threads', (d) => (d.threads = new Array(LIMITS.threads + 1).fill(0)), /threads has 32769 entries/],
  ['regs of the wrong size', (d) => (d.threads[0].regs = Buffer.alloc(200).toString('base64')), /threads\[0\]\.regs has 200 bytes/],
  ['xstate too large', (d) => (d.threads[0].xstate = Buffer.alloc(LIMITS.xstateBytes + 64).toString('base64')), /threads\[0\]\.xstate is larger/],
  ['xstate not an XSAVE area', (d) => (d.threads[0].xstate = Buffer.alloc(100).toString('base64')), /not an XSAVE area/],
  ['a u64 beyond 64 bits', (d) => (d.threads[0].sigmask = '18446744073709551616'), /threads\[0\]\.sigmask .* does not fit in 64 bits/],
  ['a u64 as a number', (d) => (d.threads[0].sigmask = 5), /threads\[0\]\.sigmask must be a decimal u64 string/],
  ['a negative tid', (d) => (d.threads[1].tid = -3), /threads\[1\]\.tid must be an integer/],
  ['a duplicated tid', (d) => (d.threads[1].tid = d.threads[2].tid), /appears twice/],
  ['leader not first', (d) => d.threads.reverse(), /threads\[0\] must be the group leader/],
  ['63 sigactions', (d) => d.sigactions.pop(), /sigactions has 63 entries, expected 64/],
  ['a kernel address in mm', (d) => (d.mm.brk = String(0xffff800000000000n)), /mm\.brk .* is not a user-space address/],
  ['relative cwd', (d) => (d.cwd = 'tmp'), /cwd must be an absolute path/],
  ['NUL in a path', (d) => (d.mm.exePath = '/bin/\u0000x'), /NUL/],
  ['comm too long', (d) => (d.comm = 'x'.repeat(16)), /comm is longer than 15 bytes/],
  ['bad base64', (d) => (d.mm.auxv = '@@@@'), /mm\.auxv must be a base64 string/],
  ['rlimit cur > max', (d) => (d.rlimits[0] = { cur: '10', max: '5' }), /cur > max/],
  ['a restart decision unknown', (d) => (d.threads[0].syscallRestart.decision = 'maybe'), /decision must be one of/],
  ['an unknown fd kind', (d) => (d.files = [{ kind: 'inotify', fd: 3, flags: 0 }]), /files\[0\]\.kind: "inotify" is not one of/],
  ['creds with 3 uids', (d) => d.creds.uid.pop(), /creds\.uid has 3 entries/],
  ['array instead of object', (d) => (d.mm = []), /mm must be an object/],
];

for (const [name, spoil, message] of spoilers) {
  test.serial(`decode refuses ${name}`, async (t) => {
    const d = await doc();
    spoil(d);
    const e = t.throws(() => decodeProcessState(enc(d)), { instanceOf: ProcessStateError, message });
    t.true(e?.message.startsWith('process state: '));
  });
}

test('decode refuses what is not JSON, or not an object', (t) => {
  t.throws(() => decodeProcessState(Buffer.from('{"version":1,')), { instanceOf: ProcessStateError, message: /not JSON/ });
  t.throws(() => decodeProcessState(Buffer.from('[1,2]')), { instanceOf: ProcessStateError, message: /state must be an object/ });
  t.throws(() => decodeProcessState(Buffer.from('null')), { instanceOf: ProcessStateError, message: /state must be an object/ });
  t.throws(() => decodeProcessState('x' as unknown as Buffer), { instanceOf: ProcessStateError, message: /not a Buffer/ });
});
