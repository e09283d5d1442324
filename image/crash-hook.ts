// Test-only crash points (common/fault-injection.ts, PRECOPY_FAULT_STORE_CRASH_AT=NAME, or NAME@N
// for the N-th time the point is reached): the store SIGKILLs its own process there, so tests can
// prove that a crash at that moment leaves the previous durable state or a committed image.
//
// Points: write-pages (after a batch's writes were issued, before they complete),
// round-data-synced (chunk files fsynced), round-bitmaps-written (new bitmap generation durable,
// state.json not yet replaced), round-durable (state.json replaced), commit-digest-checked,
// commit-data-synced (a commit ending the final round: its chunk files fsynced),
// commit-manifest-tmp (temp manifest durable, not renamed), commit-manifest-renamed (manifest in
// place, state.json not yet committed), commit-done, journal-retired (after a commit: chunk files
// synced, state.json no longer names the final-round journal, its file not yet removed),
// journal-replayed (a writer opening a session wrote a journal's pages again, state.json still
// names it). For a journaled round (page-journal.ts) the *-data-synced points mean its journal.

import { faultVariable, storeCrashPoint } from '../common/fault-injection';

const hits = new Map<string, number>();

export function crashPoint(name: string): void {
  const at = storeCrashPoint();
  if (!at || at.point !== name) return;
  const n = (hits.get(name) ?? 0) + 1;
  hits.set(name, n);
  if (n < at.nth) return;
  process.stderr.write(`store: crash point ${name} reached (${faultVariable('STORE_CRASH_AT')}): SIGKILL\n`);
  process.kill(process.pid, 'SIGKILL');
}
