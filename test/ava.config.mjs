// The ava configuration test/run-tests.mjs runs with: package.json's "ava" section (what a plain
// `npx ava` uses too) plus the exit guard in every worker (test/ava-exit-guard.mjs).
// PRECOPY_TEST_EXIT_GRACE_MS changes the guard's grace period (default 15 s).

import * as fs from 'node:fs';

const pkg = JSON.parse(fs.readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
const graceMs = Number(process.env.PRECOPY_TEST_EXIT_GRACE_MS ?? 15_000);

export default {
  ...pkg.ava,
  require: [...(pkg.ava.require ?? []), ['./test/ava-exit-guard.mjs', graceMs]],
};
