// --max-image-bytes under the real sender CLI: the migration of a process larger than the limit
// fails with the receiver's reason on the sender's stderr (no stack trace, no retry), the target
// runs on unharmed, and the refused session is marked failed on the receiver.

import test from 'ava';
import { describeRun, runSender, tempDir } from '../../helpers/migration-cli';
import { isAlive, threadStates, tracerPid } from '../../helpers/procmem';
import { startReceiver } from '../../helpers/receiver';
import { Target } from '../../helpers/target';
import { sessionState } from './server-client';

test('--max-image-bytes 8M and a 32 MiB target: the sender stops with the reason, the target is unharmed', async (t) => {
  const images = tempDir('precopy-limits-sender-');
  const receiver = await startReceiver({ images, args: ['--max-image-bytes', '8M'] });
  t.teardown(() => receiver.stop());
  const target = await Target.start({ mib: 32, seed: 301 });
  t.teardown(() => target.kill());
  await target.writers(1, 1_000_000);

  const run = await runSender(['--pid', String(target.pid), '--to', receiver.address, '--session', 'too-big', '--after', 'stop']);
  t.not(run.code, 0, describeRun(run));
  t.regex(
    run.stderr,
    new RegExp(
      `receiver at ${receiver.address}: session too-big: image would exceed 8\\.00 MiB \\(--max-image-bytes\\): it holds \\d+ pages, the batch adds \\d+, the limit is 2048 \\(RESOURCE_EXHAUSTED\\)`,
    ),
    describeRun(run),
  );
  t.false(/\n\s+at .*\(/.test(run.stderr), 'no stack trace');
  t.log(run.stderr.trim().split('\n').slice(-1)[0]);
  t.is(await sessionState(images, 'too-big'), 'failed');

  t.true(isAlive(target.pid));
  t.is(tracerPid(target.pid), 0);
  t.false(
    threadStates(target.pid).some((s) => s.state === 'T' || s.state === 't'),
    'no thread left stopped',
  );
  t.deepEqual(await target.check(), { bad: 0 });
  t.true((await target.stopWriters()) > 0, 'its writers kept writing');
});
