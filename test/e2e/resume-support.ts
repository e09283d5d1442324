// Support of the resume tests (docs/design.md, Resume): waiting for a phase of the
// migration in a process's log, and the end-of-migration check (committed, resumed, the image
// byte-identical to the stopped target) with the figures printed.

import * as fs from 'node:fs';
import type { ExecutionContext } from 'ava';
import { assertImageEqualsMemory, describeRun, exportRaw, type SenderRun } from '../helpers/migration-cli';

/** Resolves once cond() holds; rejects (naming `what`) when `gave_up()` holds or after timeoutMs. */
export async function waitFor(cond: () => boolean, what: string, gaveUp: () => boolean = () => false, timeoutMs = 90_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (gaveUp()) throw new Error(`gave up waiting for ${what}: the migration ended first`);
    if (Date.now() > until) throw new Error(`${what} did not happen within ${timeoutMs / 1000}s`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The round numbers of "round N (PHASE) started" lines of a receiver's debug log. */
export function roundsStarted(log: string, phase: 'PRECOPY' | 'STOP_AND_COPY'): number[] {
  return [...log.matchAll(new RegExp(`round (\\d+) \\(${phase}\\) started`, 'g'))].map((m) => Number(m[1]));
}

/** The migration committed after `minReconnects` resumes at least, and the image equals the
 *  stopped target's memory; prints the figures. */
export async function assertResumedAndFaithful(
  t: ExecutionContext,
  run: SenderRun,
  images: string,
  session: string,
  pid: number,
  minReconnects: number,
): Promise<void> {
  t.is(run.code, 0, describeRun(run));
  const s = run.summary;
  if (!s) return;
  t.is(s.result, 'committed');
  t.true(s.reconnects >= minReconnects, `reconnects ${s.reconnects}, expected at least ${minReconnects}\n${run.stderr}`);
  t.not(s.verify.mode, 'skipped');
  const phases = s.rounds.map((r) => `${r.round}:${r.phase === 'PRECOPY' ? 'P' : r.phase === 'STOP_AND_COPY' ? 'S' : 'V'}${r.dirtyPages}`).join(' ');
  t.log(
    `total ${s.totalSeconds.toFixed(1)} s, reconnects ${s.reconnects}, ${s.rounds.length} rounds (${phases}), ` +
      `downtime ${(s.downtimeSeconds * 1000).toFixed(0)} ms, ${(s.bytesSent / 2 ** 20).toFixed(0)} MiB on the wire for ${(s.memoryBytes / 2 ** 20).toFixed(0)} MiB, verify ${s.verify.mode}`,
  );
  for (const line of run.stderr.split('\n')) if (/connection to .* lost|resumed session/.test(line)) t.log(line.trim());
  const out = await exportRaw(images, session);
  try {
    assertImageEqualsMemory(t, pid, out);
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
}
