// Disk full, end to end: the receiver's images directory on a small tmpfs made by the test. A small
// image is committed first; then a migration of a target bigger than the space left: the sender
// fails with one clear line naming the receiver's problem (no space left on device), the target is
// thawed and runs on unharmed, the earlier image is untouched and still verifies (`receiver
// verify`), and the failed session is recorded failed. (The store alone: store-nospace.test.ts.)

import test from 'ava';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ImageStore } from '../../image/image-store';
import { startReceiver } from '../helpers/receiver';
import { Target } from '../helpers/target';
import { describeRun, receiverCli, runSender, tempDir } from '../helpers/migration-cli';
import { assertUnharmed } from './target-health';

const TMPFS_MIB = 48;

/** Used and free bytes of the file system holding dir. */
function usage(dir: string): { used: number; free: number } {
  const s = fs.statfsSync(dir);
  return { used: (s.blocks - s.bfree) * s.bsize, free: s.bavail * s.bsize };
}

const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;

test('disk full on the receiver: clear error, target thawed, the earlier image untouched', async (t) => {
  const mnt = tempDir('precopy-e2e-full-');
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${TMPFS_MIB}m`, 'precopy-e2e-full', mnt]);
  const images = path.join(mnt, 'images');
  const receiver = await startReceiver({ images });
  const targets: Target[] = [];
  try {
    // 1. A small image, committed.
    const small = await Target.start({ mib: 8, seed: 91 });
    targets.push(small);
    const first = await runSender(['--pid', String(small.pid), '--to', receiver.address, '--session', 'small']);
    t.is(first.code, 0, describeRun(first));
    t.is((await receiverCli(['verify', '--images', images, 'small'])).code, 0);
    const smallFiles = snapshot(path.join(images, 'small'));
    const before = usage(mnt);
    t.log(`tmpfs ${TMPFS_MIB} MiB: ${mib(before.used)} used after the small image, ${mib(before.free)} free`);

    // 2. A migration that needs more than what is left.
    const big = await Target.start({ mib: 64, seed: 92 });
    targets.push(big);
    await big.writers(2, 8 << 20);
    t.true(big.pages * 4096 > before.free, 'the target is bigger than the free space');
    const started = performance.now();
    const run = await runSender(['--pid', String(big.pid), '--to', receiver.address, '--session', 'big'], { json: false });
    t.log(`the sender failed after ${((performance.now() - started) / 1000).toFixed(2)} s: ${run.stderr.trim().split('\n').pop()}`);
    t.not(run.code, 0, describeRun(run));
    t.regex(run.stderr, /^sender: .*no space left on device/m, describeRun(run));
    t.regex(run.stderr, new RegExp(images.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')), 'names the images directory');
    t.notRegex(run.stderr, /\n\s+at /, 'no stack trace');

    // 3. The target runs on as before.
    await assertUnharmed(t, big, { writers: true });

    // 4. The receiver: the big session failed (reason: no space), the small image as it was.
    const sessions = new Map((await new ImageStore(images).list()).map((s) => [s.meta.sessionId, s]));
    t.is(sessions.get('big')?.state, 'failed');
    t.regex(sessions.get('big')?.reason ?? '', /no space/);
    t.is(sessions.get('small')?.state, 'committed');
    t.deepEqual(snapshot(path.join(images, 'small')), smallFiles, 'no file of the small image changed');
    const verify = await receiverCli(['verify', '--images', images, 'small']);
    t.is(verify.code, 0, verify.stdout + verify.stderr);
    t.log(`after: ${mib(usage(mnt).used)} used; ${verify.stdout.trim()}`);
  } finally {
    for (const target of targets) await target.kill();
    await receiver.stop();
    execFileSync('umount', ['-l', mnt]);
    fs.rmSync(mnt, { recursive: true, force: true });
  }
});

/** Every file under dir: size and modification time (a changed file changes one or the other). */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of fs.readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue;
    const p = path.join(e.parentPath, e.name);
    const s = fs.statSync(p);
    out[path.relative(dir, p)] = `${s.size} ${s.mtimeMs}`;
  }
  return out;
}
