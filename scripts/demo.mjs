#!/usr/bin/env node
// `npm run demo`: build what is missing or stale, then run the demo (dist/test/demo/demo.js).
// "Stale" = a source file (TypeScript, the addon's C++, the workload's C) newer than the oldest
// build output, so a fresh clone after `npm ci` builds once and later runs start at once.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const outputs = [
  'build/Release/precopy.node',
  'build/Release/precopy-restore-stub',
  'dist/test/demo/demo.js',
  'dist/sender/cli.js',
  'dist/receiver/cli.js',
  'test/workloads/bin/target',
  'test/workloads/bin/restore_target',
];
const sourceDirs = ['common', 'native', 'proto', 'image', 'sender', 'receiver', 'test'];

function newestSource() {
  let newest = 0;
  const walk = (dir) => {
    for (const ent of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, ent.name);
      if (ent.isDirectory()) {
        if (ent.name !== 'bin' && ent.name !== 'node_modules') walk(p);
      } else if (/\.(ts|cc|h|c)$/.test(ent.name) && !ent.name.endsWith('.d.ts')) {
        newest = Math.max(newest, fs.statSync(p).mtimeMs);
      }
    }
  };
  for (const d of sourceDirs) if (fs.existsSync(path.join(root, d))) walk(path.join(root, d));
  return newest;
}

function oldestOutput() {
  let oldest = Infinity;
  for (const o of outputs) {
    const p = path.join(root, o);
    if (!fs.existsSync(p)) return 0;
    oldest = Math.min(oldest, fs.statSync(p).mtimeMs);
  }
  return oldest;
}

if (oldestOutput() < newestSource()) {
  process.stderr.write('demo: building (npm run build)...\n');
  const b = spawnSync('npm', ['run', '-s', 'build'], { cwd: root, stdio: 'inherit' });
  if (b.status !== 0) {
    process.stderr.write(`demo: build failed (exit ${b.status})\n`);
    process.exit(1);
  }
}
const r = spawnSync(process.execPath, [path.join(root, 'dist/test/demo/demo.js'), ...process.argv.slice(2)], { cwd: root, stdio: 'inherit' });
process.exit(r.status ?? 1);
