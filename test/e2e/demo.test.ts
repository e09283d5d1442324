// `npm run demo` (test/demo/demo.ts, run as scripts/demo.mjs runs it once built): it shows a
// migration checked against memory and a handover whose workload passes its self-check at the
// destination; when something does not hold it says so in one line and exits 1; either way it
// leaves no namespace behind. A smaller first workload (--mib 32) keeps it short.

import test from 'ava';
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { collect, describeRun } from '../helpers/migration-cli';
import { listNamespaces } from '../helpers/netns';

const DEMO = path.resolve(__dirname, '..', 'demo', 'demo.js');

function runDemo(env: NodeJS.ProcessEnv = {}) {
  const child = spawn(process.execPath, [DEMO, '--mib', '32'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  const left = (): string[] => listNamespaces().filter((n) => n.startsWith(`precopy-${child.pid}-`));
  return { run: collect(child), left };
}

test.serial('the demo shows a migration and a handover: same pid at the destination, source gone, self-check passed there', async (t) => {
  t.timeout(180_000);
  const demo = runDemo();
  const run = await demo.run;
  const why = describeRun(run);
  t.is(run.code, 0, why);
  t.regex(run.stdout, /image equals memory: \d+ pages in \d+ mappings/, why);
  const pid = /workload restore_target pid (\d+):/.exec(run.stdout)?.[1];
  t.truthy(pid, why);
  t.regex(run.stdout, /downtime \S+ \S+ = freeze to commit .*, verify .*, restore .*, the rest /, why);
  t.regex(run.stdout, new RegExp(`source: pid ${pid} is gone`), why);
  t.regex(run.stdout, new RegExp(`destination: pid ${pid} in its PID namespace \\(pid \\d+ in this machine's\\), running restore_target`), why);
  t.regex(run.stdout, /check passed at the destination: rounds \d+ -> \d+, 0 errors in /, why);
  t.deepEqual(demo.left(), [], 'no namespace left');
});

test.serial('a demo whose handover fails says so in one line, exits 1 and leaves nothing behind', async (t) => {
  t.timeout(180_000);
  // The sender dies before asking for the start: the handover cannot complete.
  const demo = runDemo({ PRECOPY_FAULT_HANDOVER_DIE: 'before-ask' });
  const run = await demo.run;
  t.is(run.code, 1, describeRun(run));
  // Its last line, and its only line but the first sender's info line ("migrate: session ...").
  const said = run.stderr
    .trim()
    .split('\n')
    .filter((l) => !l.startsWith('migrate: '));
  t.deepEqual(said, ['demo failed: the handover failed: the sender was killed (SIGKILL)'], describeRun(run));
  t.deepEqual(demo.left(), [], 'no namespace left');
});
