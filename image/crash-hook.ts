// Test-only crash points. PRECOPY_STORE_CRASH_AT=NAME (or NAME@N for the N-th time the point is
// reached) makes the store SIGKILL its own process there, so tests can prove that a crash at that
// moment leaves the previous durable state or a committed image. Unset in production: one
// environment lookup per call.
//
// Points: write-pages (after a batch's writes were issued, before they complete),
// round-data-synced (chunk files fsynced), round-bitmaps-written (new bitmap generation durable,
// state.json not yet replaced), round-durable (state.json replaced), commit-digest-checked,
// commit-manifest-tmp (temp manifest durable, not renamed), commit-manifest-renamed (manifest in
// place, state.json not yet committed), commit-done.

const hits = new Map<string, number>();

export function crashPoint(name: string): void {
  const spec = process.env.PRECOPY_STORE_CRASH_AT;
  if (!spec) return;
  const [point, nth] = spec.split('@');
  if (point !== name) return;
  const n = (hits.get(name) ?? 0) + 1;
  hits.set(name, n);
  if (n < Number(nth ?? 1)) return;
  process.stderr.write(`store: crash point ${name} reached (${spec}): SIGKILL\n`);
  process.kill(process.pid, 'SIGKILL');
}
