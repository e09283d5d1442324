#!/usr/bin/env node
// Makes sure the Debian packages of scripts/test-deps.txt are installed: `npm test` runs it before
// the build, .ci/run before `npm ci`.
//   - every package installed (dpkg-query): one line, exit 0;
//   - some missing, running as root: `apt-get update` and ONE `apt-get install` of the missing
//     ones, saying what it installs and how long it took;
//   - some missing, not root: one line naming them and the command that installs them, exit 1.
// Options: --build   only the packages marked `build` (what `npm ci` and `npm run build` need)
//          --check   never install, only report (exit 1 if something is missing)
// PRECOPY_TEST_DEPS=skip skips the whole check (programs installed some other way; the tests'
// helpers still say which program is missing).

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const LIST = path.join(path.dirname(fileURLToPath(import.meta.url)), 'test-deps.txt');
const BIN_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];
const say = (line) => process.stdout.write(`test-deps: ${line}\n`);

/** [{name, build, bins}] from the list file. */
export function readDeps(file = LIST) {
  const deps = [];
  for (const raw of fs.readFileSync(file, 'utf8').split('\n')) {
    const words = raw.replace(/#.*/, '').trim().split(/\s+/).filter(Boolean);
    if (words.length === 0) continue;
    const [name, ...rest] = words;
    const dep = { name, build: false, bins: [] };
    for (const w of rest) {
      if (w === 'build') dep.build = true;
      else if (w.startsWith('bin=')) dep.bins.push(...w.slice(4).split(',').filter(Boolean));
      else throw new Error(`${file}: unknown word "${w}" in: ${raw.trim()}`);
    }
    deps.push(dep);
  }
  return deps;
}

/** Names of the packages dpkg does not list as installed; null when there is no dpkg-query. */
function missingByDpkg(names) {
  const r = spawnSync('dpkg-query', ['-W', '-f=${Package}\t${Status}\n', ...names], { encoding: 'utf8' });
  if (r.error) return null;
  const installed = new Set(
    r.stdout
      .split('\n')
      .map((l) => l.split('\t'))
      .filter(([, status]) => status === 'install ok installed')
      .map(([pkg]) => pkg.replace(/:.*$/, '')),
  );
  return names.filter((n) => !installed.has(n));
}

const hasProgram = (p) =>
  BIN_DIRS.some((d) => {
    try {
      fs.accessSync(path.join(d, p), fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });

function main(argv) {
  const unknown = argv.filter((a) => !['--build', '--check'].includes(a));
  if (unknown.length > 0) {
    process.stderr.write(`usage: node scripts/ensure-test-deps.mjs [--build] [--check] (unknown: ${unknown.join(' ')})\n`);
    return 2;
  }
  if (process.env.PRECOPY_TEST_DEPS === 'skip') {
    say('check skipped (PRECOPY_TEST_DEPS=skip)');
    return 0;
  }
  const deps = readDeps().filter((d) => d.build || !argv.includes('--build'));
  const names = deps.map((d) => d.name);
  const installCmd = (pkgs) => `apt-get install -y --no-install-recommends ${pkgs.join(' ')}`;

  const missing = missingByDpkg(names);
  if (missing === null) {
    // Not Debian: all we can check is the programs.
    const gone = deps.filter((d) => d.bins.some((b) => !hasProgram(b)));
    if (gone.length === 0) {
      say(
        `no dpkg-query here: the programs of ${names.length} packages are present (not checked: ${
          deps
            .filter((d) => d.bins.length === 0)
            .map((d) => d.name)
            .join(', ') || 'none'
        })`,
      );
      return 0;
    }
    say(
      `no dpkg-query here, and programs are missing: ${gone.map((d) => `${d.bins.filter((b) => !hasProgram(b)).join(',')} (Debian package ${d.name})`).join('; ')}`,
    );
    return 1;
  }
  if (missing.length === 0) {
    say(`all ${names.length} Debian packages installed`);
    return 0;
  }

  const isRoot = process.getuid?.() === 0;
  if (argv.includes('--check') || !isRoot) {
    say(
      `missing Debian packages: ${missing.join(' ')}; install them with: ${isRoot ? '' : 'sudo '}${installCmd(missing)}` +
        (isRoot ? '' : ' (npm test installs them itself when run as root; npm run test:unit needs none of them)'),
    );
    return 1;
  }

  say(`installing ${missing.length} Debian packages: ${missing.join(' ')}`);
  const t0 = process.hrtime.bigint();
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const apt = (args) => spawnSync('apt-get', ['-o', 'DPkg::Lock::Timeout=300', ...args], { stdio: 'inherit', env });
  const seconds = () => (Number(process.hrtime.bigint() - t0) / 1e9).toFixed(1);
  for (const args of [
    ['update', '-qq'],
    ['install', '-y', '-qq', '--no-install-recommends', ...missing],
  ]) {
    const r = apt(args);
    if (r.error || r.status !== 0) {
      say(`apt-get ${args[0]} failed (${r.error ? r.error.message : `exit ${r.status}`}) after ${seconds()} s; install by hand: ${installCmd(missing)}`);
      return 1;
    }
  }
  const still = missingByDpkg(names) ?? [];
  if (still.length > 0) {
    say(`still missing after apt-get install: ${still.join(' ')}`);
    return 1;
  }
  say(`installed ${missing.join(' ')} in ${seconds()} s`);
  return 0;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = main(process.argv.slice(2));
}
