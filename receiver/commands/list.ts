// `receiver list`: the sessions of an images directory as a table (or JSON).

import { formatBytes } from '../../common/units';
import type { SessionSummary } from '../../image/image-store';
import { COMMON_OPTIONS, IMAGES_HELP, parseSubcommand, existingStore, userFacing } from './images-dir';

export const USAGE = `usage: receiver list [--images DIR] [--json]

Lists every session: id, source pid and command, state (receiving, committed, failed, aborted),
image size (memory the image describes), durable rounds, and when it last changed.

${IMAGES_HELP}
  --json         one JSON array instead of the table
  -h, --help     this text`;

const OPTIONS = {
  ...COMMON_OPTIONS,
  json: { type: 'boolean' },
} as const;

export async function run(argv: string[]): Promise<number> {
  const parsed = parseSubcommand(argv, OPTIONS, USAGE);
  if (!parsed) return 0;
  const { values } = parsed;
  const store = existingStore(values.images);
  let sessions: SessionSummary[];
  try {
    sessions = await store.list();
  } catch (err) {
    throw userFacing(err);
  }
  if (values.json) process.stdout.write(`${JSON.stringify(sessions, null, 2)}\n`);
  else process.stdout.write(sessions.length === 0 ? `no sessions in ${store.dir}\n` : `${sessionTable(sessions)}\n`);
  return 0;
}

/** Local time as "YYYY-MM-DD HH:MM:SS". */
function when(iso: string): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

export function sessionTable(sessions: SessionSummary[]): string {
  const rows = [
    ['SESSION', 'PID', 'COMMAND', 'STATE', 'SIZE', 'ROUNDS', 'WHEN', 'NOTE'],
    ...sessions.map((s) => [
      s.meta.sessionId,
      String(s.meta.pid),
      s.meta.command,
      s.state,
      formatBytes(s.imageBytes),
      String(s.rounds),
      when(s.updatedAt),
      (s.reason ?? '').replace(/\s+/g, ' ').slice(0, 60),
    ]),
  ];
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows
    .map((r) =>
      r
        .map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c])))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}
