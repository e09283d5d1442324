// Headless Chromium (Debian's chromium package, which `npm test` installs) for tests of pages we
// generate: load a local file, return the DOM after load and every console message the page
// produced (errors, uncaught exceptions, CSP violations), optionally a screenshot.

import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { requireProgram } from './system-deps';

export interface RenderedPage {
  /** document.documentElement.outerHTML after load (--dump-dom). */
  dom: string;
  /** Console messages the page logged, as Chromium reports them on stderr. */
  console: string[];
}

const FLAGS = [
  '--headless',
  '--no-sandbox', // we run as root
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--enable-logging=stderr',
  '--v=0',
];

function chromium(bin: string, args: string[], userDataDir: string): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(bin, [...FLAGS, `--user-data-dir=${userDataDir}`, ...args], { timeout: 60_000, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`chromium failed: ${err.message}\n${stderr.slice(-4000)}`));
      else resolve({ stdout, stderr });
    });
  });
}

/** Load `file` in headless Chromium; with `screenshot`, also write a PNG of it there. */
export async function renderPage(file: string, opts: { screenshot?: string; width?: number; height?: number } = {}): Promise<RenderedPage> {
  const bin = requireProgram('chromium', process.env.CHROMIUM_BIN); // fails at once, naming the package
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'precopy-chromium-'));
  const url = pathToFileURL(path.resolve(file)).href;
  try {
    const { stdout, stderr } = await chromium(bin, ['--dump-dom', url], userDataDir);
    if (opts.screenshot) {
      await chromium(
        bin,
        [`--screenshot=${path.resolve(opts.screenshot)}`, `--window-size=${opts.width ?? 1200},${opts.height ?? 1600}`, '--hide-scrollbars', url],
        userDataDir,
      );
    }
    // e.g. [123:123:1125/185139.620769:INFO:CONSOLE:1] "Uncaught ReferenceError: ...", source: file:///... (1)
    const consoleLines = stderr.split('\n').filter((l) => /:CONSOLE[:(]/.test(l));
    return { dom: stdout, console: consoleLines };
  } finally {
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
}
