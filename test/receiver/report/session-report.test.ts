// `receiver report`: a session kept by the real image store (rounds made durable on disk, the
// sender's report recorded) becomes one self-contained HTML page that headless Chromium renders
// with its charts, without a console message; hostile strings from the sender stay text.

import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ImageStore, type RoundEnd, type SessionMeta } from '../../../image/image-store';
import { run, USAGE } from '../../../receiver/commands/report';
import { renderSessionReport } from '../../../receiver/report/session-report';
import { UserError } from '../../../common/errors';
import { renderPage } from '../../helpers/chromium';
import { PS, meta as sessionMeta, tempDir, vma } from '../../image/store-helpers';

const BASE = 0x7f0000000000;
const LAYOUT = [vma(BASE, 64)];
const tmpdir = (t: Parameters<typeof tempDir>[0]) => tempDir(t, 'precopy-report-');

/** Rounds shrinking like a converging migration, then the stop-and-copy round. */
function figures(round: number, last: boolean): RoundEnd {
  const dirtyPages = last ? 3 : Math.max(4, 64 >> round);
  return {
    round,
    dirtyPages,
    zeroPages: 1,
    rawBytes: (dirtyPages - 1) * PS,
    wireBytes: (dirtyPages - 1) * 1500,
    durationSeconds: 0.01 + dirtyPages / 1000,
    dirtyRateBytesPerSecond: 2e6,
    transferRateBytesPerSecond: 1e8 + round * 1e7,
    expectedDowntimeSeconds: last ? 0 : (dirtyPages * PS) / 1e8,
    remainingBytes: last ? 0 : (dirtyPages >> 1) * PS,
    throttlePercent: 0,
    batches: 1,
  };
}

/** A session in a real image store: `rounds` durable rounds with pages, and the sender's report. */
async function makeSession(dir: string, id: string, meta: Partial<SessionMeta> = {}, rounds = 5): Promise<void> {
  const store = new ImageStore(dir);
  const img = await store.create(sessionMeta(id, { memoryBytes: 64 * PS, ...meta }));
  try {
    for (let r = 0; r < rounds; r++) {
      const last = r === rounds - 1;
      const f = figures(r, last);
      await img.beginRound(r, last ? 'STOP_AND_COPY' : 'PRECOPY', LAYOUT);
      const zeroMap = Buffer.alloc(Math.ceil(f.dirtyPages / 8));
      zeroMap[0] = 1; // the first page of each round is a zero page
      await img.writePages([BASE, f.dirtyPages], zeroMap, Buffer.alloc((f.dirtyPages - 1) * PS, r + 1));
      await img.endRound(f);
    }
    await img.recordReport({
      stopReason: 'converged',
      downtimeSeconds: 0.012,
      frozenSeconds: 0.02,
      totalSeconds: 1.5,
      bytesSent: 123456,
      memoryBytes: 64 * PS,
      verify: 'ok',
      verifyMismatches: 0,
      result: 'committed',
      error: '',
      downtimeTargetSeconds: 0.3,
    });
  } finally {
    await img.close();
  }
}

const count = (s: string, re: RegExp) => (s.match(re) ?? []).length;

test('receiver report writes a page that Chromium renders with its charts and no console message', async (t) => {
  const dir = tmpdir(t);
  await makeSession(path.join(dir, 'images'), 'rep-1');
  const out = path.join(dir, 'rep-1.html');
  t.is(await run(['--images', path.join(dir, 'images'), 'rep-1', '--out', out]), 0);
  const html = fs.readFileSync(out, 'utf8');
  // Self-contained: no script, no external reference.
  t.notRegex(html, /<script/i);
  t.notRegex(html, /\b(src|href)=/i);
  t.notRegex(html, /url\(/i);

  const page = await renderPage(out, { screenshot: path.join(dir, 'rep-1.png') });
  t.deepEqual(page.console, [], 'no console messages (errors, exceptions, CSP violations)');
  const dom = page.dom;
  t.is(count(dom, /<svg class="chart"/g), 5, 'five charts');
  t.is(count(dom, /<rect class="bar"/g), 5 + 2 * 5 + 5, 'a bar per round: dirty, page bytes + wire bytes, duration');
  t.is(count(dom, /<path class="line"/g), 3, 'expected downtime, dirty rate, transfer rate');
  t.is(count(dom, /<path class="target"/g), 1, 'the downtime target line');
  t.regex(dom, /<title>precopy session rep-1<\/title>/);
  t.regex(dom, /COMMITTED|committed/);
  t.regex(dom, /downtime 12 ms \(target 300 ms: met\)/);
  t.regex(dom, /<dt>Verify<\/dt><dd>ok<\/dd>/);
  t.regex(dom, /<dt>Stop reason<\/dt><dd>converged<\/dd>/);
  t.is(count(dom, /<tr><td>/g), 5, 'a table row per round');
  t.regex(dom, /<td>STOP_AND_COPY<\/td>/);
  // Round 0's dirty bytes (64 pages) as the sender reported them.
  t.regex(dom, /round 0: dirty 256 KiB/);
  const png = fs.readFileSync(path.join(dir, 'rep-1.png'));
  t.is(png.subarray(1, 4).toString(), 'PNG');
});

test('strings from the sender are escaped: a hostile command or error cannot inject markup', async (t) => {
  const dir = tmpdir(t);
  const evil = '<script>document.title="pwned"</script><img src=x onerror=alert(1)>';
  const html = renderSessionReport({
    meta: { sessionId: 'evil', sourceHost: evil, pid: 1, pageSize: PS, kernel: evil, command: evil, memoryBytes: 0, createdAt: evil },
    state: 'failed',
    reason: evil,
    rounds: [{ ...figures(0, false), phase: evil }],
    report: { result: 'failed', error: evil, verify: evil, stopReason: evil },
  });
  const file = path.join(dir, 'evil.html');
  fs.writeFileSync(file, html);
  const page = await renderPage(file);
  t.deepEqual(page.console, []);
  t.notRegex(page.dom, /<script|<img/i);
  t.regex(page.dom, /<title>precopy session evil<\/title>/);
  t.true(page.dom.includes('&lt;script&gt;document.title="pwned"&lt;/script&gt;'));
  t.is(count(page.dom, /<svg class="chart"/g), 5);
});

test('a session without rounds or report still renders, saying so', async (t) => {
  const dir = tmpdir(t);
  const html = renderSessionReport({
    meta: { sessionId: 'bare', sourceHost: '', pid: 7, pageSize: PS, kernel: '', command: '', memoryBytes: 0, createdAt: '2025-01-01T00:00:00Z' },
    state: 'aborted',
    reason: 'sender went away',
    rounds: [],
  });
  const file = path.join(dir, 'bare.html');
  fs.writeFileSync(file, html);
  const page = await renderPage(file);
  t.deepEqual(page.console, []);
  t.regex(page.dom, /No round was recorded/);
  t.regex(page.dom, /the sender sent no final report/);
  t.regex(page.dom, /aborted: sender went away/);
});

test('receiver report: clear errors for bad use, stdout with --out -', async (t) => {
  const dir = tmpdir(t);
  const images = path.join(dir, 'images');
  await makeSession(images, 'rep-2', {}, 2);
  const err = (argv: string[]) => t.throwsAsync(run(argv), { instanceOf: UserError });
  const aFile = path.join(dir, 'a-file');
  fs.writeFileSync(aFile, '');
  t.regex((await err(['--images', aFile, 'rep-2']))!.message, /--images: .*a-file is not a directory/);
  t.regex((await err(['--images', images]))!.message, /expected one SESSION/);
  t.regex((await err(['--images', path.join(dir, 'nope'), 'rep-2']))!.message, /is not a directory/);
  t.false(fs.existsSync(path.join(dir, 'nope')), 'a mistyped --images is not created');
  t.regex((await err(['--images', images, 'missing']))!.message, /missing/);
  t.regex((await err(['--images', images, '../etc']))!.message, /session/i);
  t.regex((await err(['--images', images, 'rep-2', '--out', path.join(dir, 'no', 'such', 'dir.html')]))!.message, /--out: cannot write .*ENOENT/);
  t.regex((await err(['--images', images, 'rep-2', '--bogus']))!.message, /bogus/);
  t.true(USAGE.startsWith('usage: receiver report'));

  const chunks: string[] = [];
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = ((s: string) => (chunks.push(String(s)), true)) as typeof process.stdout.write;
  try {
    t.is(await run(['--images', images, 'rep-2', '--out', '-']), 0);
    t.is(await run(['--help']), 0);
  } finally {
    process.stdout.write = write;
  }
  t.regex(chunks[0], /^<!doctype html>/);
  t.regex(chunks[1], /^usage: receiver report/);
});
