// The system programs tests run (prometheus, chromium, ip, nft, openssl, ...): found by absolute
// path before anything is started, so that a missing one fails its test at once with the Debian
// package to install (from scripts/test-deps.txt, the list `npm test` installs) instead of a
// timeout or a half-made fixture.
//
// Absolute paths, not PATH: under `npm test` PATH starts with node_modules/.bin, which holds an
// unrelated npm command named `nft`.
// PRECOPY_TEST_HIDE=prog,prog... makes those programs count as missing: how to see what a test
// does on a machine without them, without uninstalling anything.

import * as fs from 'node:fs';
import * as path from 'node:path';

const REPO_ROOT = path.resolve(__dirname, '..', '..', '..');
export const DEPS_LIST = path.join(REPO_ROOT, 'scripts', 'test-deps.txt');
const DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

export class MissingProgram extends Error {
  constructor(
    readonly program: string,
    readonly debianPackage: string | undefined,
    detail = '',
  ) {
    super(
      `${program} is missing${detail}: install ${debianPackage ? `Debian package ${debianPackage}` : `the Debian package that provides ${program}`}` +
        ' (npm test installs it when run as root)',
    );
    this.name = 'MissingProgram';
  }
}

/** The package of scripts/test-deps.txt whose `bin=` lists `program`. */
export function debianPackageOf(program: string): string | undefined {
  let text: string;
  try {
    text = fs.readFileSync(DEPS_LIST, 'utf8');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n')) {
    const [pkg, ...words] = line.replace(/#.*/, '').trim().split(/\s+/);
    if (words.some((w) => w.startsWith('bin=') && w.slice(4).split(',').includes(program))) return pkg;
  }
  return undefined;
}

const hidden = () => (process.env.PRECOPY_TEST_HIDE ?? '').split(',').map((s) => s.trim());
const executable = (file: string) => {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
};

/**
 * Absolute path of `program` (or of `override`, e.g. process.env.PROMETHEUS_BIN, when given);
 * throws MissingProgram naming its Debian package when it is not there.
 */
export function requireProgram(program: string, override?: string): string {
  if (hidden().includes(program)) throw new MissingProgram(program, debianPackageOf(program), ' (hidden by PRECOPY_TEST_HIDE)');
  if (override) {
    if (executable(override)) return override;
    throw new MissingProgram(program, debianPackageOf(program), ` (no executable ${override})`);
  }
  for (const d of DIRS) {
    const file = path.join(d, program);
    if (executable(file)) return file;
  }
  throw new MissingProgram(program, debianPackageOf(program));
}
