#!/usr/bin/env node
// clang-format over the C++ of native/ (style: .clang-format). Without arguments it checks and
// lists the files that differ; with --fix it rewrites them. clang-format is Debian's package of
// the same name (npm test installs the suite's packages when run as root).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const fix = process.argv.includes('--fix');
const files = fs
  .readdirSync(path.join(root, 'native'))
  .filter((f) => /\.(cc|h)$/.test(f))
  .map((f) => path.join('native', f));

const probe = spawnSync('clang-format', ['--version'], { encoding: 'utf8' });
if (probe.error) {
  console.error('lint-native: clang-format is missing: install Debian package clang-format (apt-get install clang-format)');
  process.exit(2);
}
const args = fix ? ['-i', ...files] : ['--dry-run', '--Werror', ...files];
const r = spawnSync('clang-format', args, { cwd: root, encoding: 'utf8' });
if (r.status !== 0) {
  const bad = [...new Set([...r.stderr.matchAll(/^(\S+?):\d+:\d+: (?:error|warning)/gm)].map((m) => m[1]))];
  console.error(`lint-native: ${bad.length || 'some'} file(s) differ from .clang-format: ${bad.join(' ')}\n  run: npm run format`);
  process.exit(1);
}
console.log(`lint-native: ${files.length} files ${fix ? 'formatted' : 'clean'}`);
