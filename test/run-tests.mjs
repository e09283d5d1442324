#!/usr/bin/env node
// Runs ava over the compiled tests (config: package.json "ava") with the TAP reporter, streams its
// output, and ends with exactly one summary line: `tests: N passed, M failed`.
// Extra arguments (file filters, --match ...) go to ava unchanged.
//
// WHY count ourselves: ava can fail outside any test (compile error in a test file, uncaught
// exception, unhandled rejection, timeout, a worker crash); those must show up as failures, and a
// run where nothing ran must not pass. Skipped or todo tests count as failures too: a test that
// does not run on this machine proves nothing.

import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ava = path.join(root, 'node_modules', '.bin', 'ava');

const child = spawn(ava, ['--tap', ...process.argv.slice(2)], {
  cwd: root,
  stdio: ['ignore', 'pipe', 'pipe'],
  env: { ...process.env, FORCE_COLOR: '0' },
});

let passed = 0;
let failed = 0;
let reportedFail = 0; // ava's own "# fail N" summary
let sawPlan = false; // "1..N": ava got to the end of its run
let timedOut = false;
const problems = [];

const out = createInterface({ input: child.stdout });
out.on('line', (line) => {
  process.stdout.write(line + '\n');
  let m;
  if ((m = /^not ok \d+\s*-?\s*(.*)$/.exec(line))) {
    failed++;
    problems.push(`not ok: ${m[1]}`);
  } else if ((m = /^ok \d+\s*-?\s*(.*)$/.exec(line))) {
    if (/#\s*(SKIP|TODO)\b/i.test(m[1])) {
      failed++;
      problems.push(`skipped/todo counts as failed: ${m[1]}`);
    } else passed++;
  } else if (/^1\.\.\d+/.test(line)) {
    sawPlan = true;
  } else if ((m = /^# fail (\d+)/.exec(line))) {
    reportedFail = Number(m[1]);
  }
});

// ava's non-TAP complaints (and anything the tests print to stderr) stay visible
const err = createInterface({ input: child.stderr });
err.on('line', (line) => {
  process.stderr.write(line + '\n');
  // ava 7.0's TAP reporter crashes while reporting its inactivity timeout (writeTimeout)
  if (/writeTimeout|no new tests completed/.test(line)) timedOut = true;
});

const closed = Promise.all([new Promise((r) => out.once('close', r)), new Promise((r) => err.once('close', r))]);

child.on('error', (e) => {
  process.stderr.write(`run-tests: cannot start ava (${ava}): ${e.message}\n`);
});

child.on('close', async (code, signal) => {
  await closed;
  if (reportedFail > failed) {
    problems.push(`ava reported ${reportedFail} failures, only ${failed} seen as "not ok" lines`);
    failed = reportedFail;
  }
  if (timedOut) problems.push('a test timed out (ava "timeout" in package.json); the run was aborted there');
  if (code !== 0 || !sawPlan) {
    problems.push(`ava exited with ${signal ? `signal ${signal}` : `code ${code}`}${sawPlan ? '' : ' before finishing its run (see its stderr above)'}`);
    // a failure outside any test line (crash, timeout): make it count
    if (failed === 0 || !sawPlan) failed++;
  }
  if (passed + failed === 0) problems.push('no tests ran');
  for (const p of problems) process.stdout.write(`# run-tests: ${p}\n`);
  process.stdout.write(`tests: ${passed} passed, ${failed} failed\n`);
  process.exitCode = failed > 0 || code !== 0 || passed + failed === 0 ? 1 : 0;
});

// Pass ^C / termination to ava so its workers (and their targets) go too.
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => child.kill(sig));
