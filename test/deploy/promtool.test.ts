// promtool accepts the shipped Prometheus configuration and alert rules, and the rules' own unit
// tests (deploy/prometheus/alerts.test.yml) pass: the alerts fire on the situations they describe.

import test from 'ava';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { PROMTOOL_BIN } from '../helpers/prometheus';
import { REPO_ROOT } from '../helpers/target';

const run = promisify(execFile);
const PROM_DIR = path.join(REPO_ROOT, 'deploy', 'prometheus');

async function promtool(...args: string[]): Promise<{ code: number; out: string }> {
  try {
    const { stdout, stderr } = await run(PROMTOOL_BIN, args, { cwd: PROM_DIR });
    return { code: 0, out: stdout + stderr };
  } catch (err) {
    const e = err as { code?: number | string; stdout?: string; stderr?: string };
    if (e.code === 'ENOENT') throw new Error(`${PROMTOOL_BIN} not found: install Debian's prometheus package`);
    return { code: Number(e.code), out: (e.stdout ?? '') + (e.stderr ?? '') };
  }
}

test('promtool check config accepts deploy/prometheus/prometheus.yml (and its rule file)', async (t) => {
  const r = await promtool('check', 'config', 'prometheus.yml');
  t.is(r.code, 0, r.out);
  t.regex(r.out, /SUCCESS: prometheus\.yml is valid/);
  t.regex(r.out, /SUCCESS: 1 rule files found/);
});

test('promtool check rules accepts deploy/prometheus/alerts.yml', async (t) => {
  const r = await promtool('check', 'rules', 'alerts.yml');
  t.is(r.code, 0, r.out);
  t.regex(r.out, /SUCCESS: [1-9]\d* rules found/);
});

test('promtool test rules: the alerts fire when they should and only then', async (t) => {
  const r = await promtool('test', 'rules', 'alerts.test.yml');
  t.is(r.code, 0, r.out);
  t.regex(r.out, /SUCCESS/);
});

test('promtool check rules rejects a broken rule (the check can fail)', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'precopy-rules-'));
  try {
    const bad = path.join(dir, 'bad.yml');
    fs.writeFileSync(
      bad,
      fs.readFileSync(path.join(PROM_DIR, 'alerts.yml'), 'utf8').replace('increase(precopy_rounds_total[5m])', 'increase(precopy_rounds_total[5m)'),
    );
    const r = await promtool('check', 'rules', bad);
    t.not(r.code, 0);
    t.regex(r.out, /FAILED/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
