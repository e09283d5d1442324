#!/usr/bin/env node
// Runs ava over the compiled tests (config: package.json "ava", plus the exit guard of
// test/ava.config.mjs) with the TAP reporter, streams its output, and ends with exactly one
// summary line: `tests: N passed, M failed`.
//   --unit   only the fast, unprivileged files listed in test/unit-files.json (`npm run test:unit`)
// Other arguments (file filters, --match ...) go to ava unchanged.
//
// WHY count ourselves: ava can fail outside any test (compile error in a test file, uncaught
// exception, unhandled rejection, timeout, a worker crash); those must show up as failures, and a
// run where nothing ran must not pass. Skipped or todo tests count as failures too: a test that
// does not run on this machine proves nothing.
//
// WHY a watchdog: ava 7's inactivity timeout is not re-armed when it fires while a test's own
// t.timeout() is in force (test/e2e/sender-kill sets 10 min), so a worker that never exits hung
// the run silently for good. If no test finishes for PRECOPY_TEST_SILENCE_MIN minutes (default
// 12, more than any t.timeout of the suite), ava and everything it started are killed and the run
// fails, saying so.

import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { createInterface } from 'node:readline';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ava = path.join(root, 'node_modules', '.bin', 'ava');

let args = process.argv.slice(2);
const unit = args.includes('--unit');
args = args.filter((a) => a !== '--unit');
const setupProblems = [];
if (unit) {
  // Paths relative to test/ (the .ts sources), run from dist/test/ (the compiled files).
  const listFile = path.join(root, 'test', 'unit-files.json');
  const files = [];
  for (const f of JSON.parse(fs.readFileSync(listFile, 'utf8')).files) {
    const js = path.join('dist', 'test', f.replace(/\.ts$/, '.js'));
    if (fs.existsSync(path.join(root, js))) files.push(js);
    else setupProblems.push(`test/unit-files.json lists ${f}, but ${js} does not exist (run npm run build; moved or renamed? update the list)`);
  }
  args = [...files, `--concurrency=${Math.min(4, os.availableParallelism())}`, ...args];
}
if (!args.some((a) => a === '--config' || a.startsWith('--config='))) args = ['--config', path.join(root, 'test', 'ava.config.mjs'), ...args];

// A reader that went away (`| head`) must not crash us and orphan ava: the run goes on unseen.
for (const s of [process.stdout, process.stderr]) s.on('error', () => {});

const silenceMs = Number(process.env.PRECOPY_TEST_SILENCE_MIN ?? 12) * 60_000;

// Its own process group: the watchdog can kill ava, its workers and what they started at once.
const child = spawn(ava, ['--tap', ...args], {
  cwd: root,
  stdio: ['ignore', 'pipe', 'pipe'],
  env: { ...process.env, FORCE_COLOR: '0' },
  detached: true,
});
const killGroup = (sig) => {
  try {
    process.kill(-child.pid, sig);
  } catch {
    /* gone already */
  }
};

let passed = 0;
let failed = 0;
let reportedFail = 0; // ava's own "# fail N" summary
let sawPlan = false; // "1..N": ava got to the end of its run
let timedOut = false;
const problems = [...setupProblems];
let watchdogFired = false;
let lastTest = '(none yet)';
let watchdog;
const armWatchdog = () => {
  clearTimeout(watchdog);
  watchdog = setTimeout(() => {
    watchdogFired = true;
    process.stdout.write(`# run-tests: no test finished for ${silenceMs / 60_000} min (last: ${lastTest}): killing ava and what it started\n`);
    killGroup('SIGTERM');
    setTimeout(() => killGroup('SIGKILL'), 10_000).unref();
  }, silenceMs);
};
if (child.pid) armWatchdog();

const out = createInterface({ input: child.stdout });
out.on('line', (line) => {
  if (/Using configuration from .*ava\.config\.mjs$/.test(line)) return; // ours, on purpose
  process.stdout.write(line + '\n');
  let m;
  if ((m = /^(?:not )?ok \d+\s*-?\s*(.*)$/.exec(line))) {
    lastTest = m[1];
    armWatchdog();
  }
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

// ava's pipes close when it exits, unless something it started (and did not stop) holds them.
const closed = Promise.all([new Promise((r) => out.once('close', r)), new Promise((r) => err.once('close', r))]);
const closedOrLate = () => Promise.race([closed, new Promise((r) => setTimeout(r, 5000).unref())]);

let finished = false;
child.on('error', (e) => {
  process.stderr.write(`run-tests: cannot start ava (${ava}): ${e.message}\n`);
  if (!child.pid) void finish(null, null);
});
child.on('exit', (code, signal) => void finish(code, signal));

async function finish(code, signal) {
  if (finished) return;
  finished = true;
  await closedOrLate();
  clearTimeout(watchdog);
  failed += setupProblems.length;
  if (reportedFail > failed) {
    problems.push(`ava reported ${reportedFail} failures, only ${failed} seen as "not ok" lines`);
    failed = reportedFail;
  }
  if (timedOut) problems.push('a test timed out (ava "timeout" in package.json); the run was aborted there');
  if (watchdogFired) problems.push(`the run was killed after ${silenceMs / 60_000} min without a finished test (last: ${lastTest})`);
  if (code !== 0 || !sawPlan) {
    problems.push(`ava exited with ${signal ? `signal ${signal}` : `code ${code}`}${sawPlan ? '' : ' before finishing its run (see its stderr above)'}`);
    // a failure outside any test line (crash, timeout): make it count
    if (failed === 0 || !sawPlan) failed++;
  }
  if (passed + failed === 0) problems.push('no tests ran');
  for (const p of problems) process.stdout.write(`# run-tests: ${p}\n`);
  process.stdout.write(`tests: ${passed} passed, ${failed} failed\n`);
  process.exitCode = failed > 0 || code !== 0 || passed + failed === 0 ? 1 : 0;
  // Nothing of ava's may outlive the run (its workers are gone once ava exits; this is for what
  // they started and left behind).
  if (child.pid) killGroup('SIGKILL');
  process.exit();
}

// Pass ^C / termination to ava's whole group, so its workers (and their targets) go too.
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => killGroup(sig));
