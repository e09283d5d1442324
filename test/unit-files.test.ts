// The list of the fast inner loop (test/unit-files.json, run by `npm run test:unit`): every entry
// is a test file that exists, and neither it nor the test code it imports starts processes, runs
// system programs or needs root: what would make the loop slow, privileged or dependent on the
// Debian packages `npm test` installs.

import test from 'ava';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const TEST_DIR = path.resolve(__dirname, '..', '..', 'test'); // from dist/test to the sources
const LIST = path.join(TEST_DIR, 'unit-files.json');

/** Why a module may only be used by the full suite, or undefined. `name`: its path under test/ (no .ts). */
function forbidden(spec: string, name: string): string | undefined {
  if (spec === 'child_process' || spec === 'node:child_process') return 'starts child processes';
  if (/(^|\/)helpers\/(target|receiver|netns|prometheus|chromium|pki|procmem|system-deps|fdloop|migration-cli)$/.test(name))
    return `uses ${spec}, which starts processes or runs system programs`;
  if (/(^|\/)(receiver\/server\/server-client|native\/native-helpers|receiver\/restore\/helpers\/workload)$/.test(name))
    return `uses ${spec}, end-to-end support code`;
  return undefined;
}

/** Module specifiers of the import statements of a TypeScript source (one at a line start). */
const imports = (src: string) => [...src.matchAll(/^(?:import|export)\s(?:[^;]*?\sfrom\s)?\s*'([^']+)'/gms)].map((m) => m[1]);

/** "FILE reason" for each forbidden import in `file` and the test code it imports, transitively. */
function problems(file: string, seen = new Set<string>()): string[] {
  if (seen.has(file)) return [];
  seen.add(file);
  const out: string[] = [];
  for (const spec of imports(fs.readFileSync(file, 'utf8'))) {
    const local = spec.startsWith('.') ? path.resolve(path.dirname(file), spec) : undefined;
    const resolved = local && [`${local}.ts`, path.join(local, 'index.ts')].find((c) => c.startsWith(TEST_DIR + path.sep) && fs.existsSync(c));
    const why = forbidden(spec, local ? path.relative(TEST_DIR, local) : spec);
    if (why) out.push(`${path.basename(file)} ${why}`);
    else if (resolved) out.push(...problems(resolved, seen));
  }
  return out;
}

const listed = (): string[] => JSON.parse(fs.readFileSync(LIST, 'utf8')).files;

test('every listed unit test file exists, once', (t) => {
  const files = listed();
  t.true(files.length > 0);
  t.is(new Set(files).size, files.length, 'no duplicates');
  for (const f of files) {
    t.regex(f, /^[\w./-]+\.test\.ts$/, `${f}: a test file path relative to test/`);
    t.true(fs.existsSync(path.join(TEST_DIR, f)), `${f} exists (moved or renamed? update test/unit-files.json)`);
  }
});

test("no listed file starts processes or needs the full suite's helpers", (t) => {
  for (const f of listed()) t.deepEqual(problems(path.join(TEST_DIR, f)), [], f);
});

test('the check finds what it must', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'precopy-unit-files-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const check = (src: string) => {
    const f = path.join(dir, 'x.test.ts');
    fs.writeFileSync(f, src);
    return problems(f);
  };
  t.deepEqual(check("import test from 'ava';\nimport { RunBatcher } from '../../sender/tracking/run-batch';\n"), []);
  t.regex(check("import { spawn } from 'node:child_process';\n").join(), /starts child processes/);
  t.regex(check("import { Target } from '../helpers/target';\n").join(), /which starts processes/);
  t.regex(check("import { startSender } from '../helpers/migration-cli';\n").join(), /which starts processes/);
  t.regex(check("import { exchange } from '../receiver/server/server-client';\n").join(), /end-to-end support/);
});
