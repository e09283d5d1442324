// `receiver gc`: remove old failed and aborted sessions (and leftovers of interrupted creations).
// Committed sessions are removed only when --state committed is given explicitly.

import { UserError } from '../../common/errors';
import { SESSION_STATES, type SessionState } from '../../image/image-store';
import { COMMON_OPTIONS, IMAGES_HELP, parseSubcommand, existingStore, userFacing } from './images-dir';

export const USAGE = `usage: receiver gc [--images DIR] [--older-than DURATION] [--state STATE]... [--dry-run]

Removes sessions in the given states that have not changed for DURATION. Sessions a live process
is writing are never removed.

${IMAGES_HELP}
  --older-than D   minimum age, like 30s, 10m, 1h, 2d, or 0 (default 1h)
  --state STATE    failed, aborted, receiving or committed; repeatable or comma-separated
                   (default: failed,aborted). Committed images go only when named here.
  --dry-run        print what would be removed, remove nothing
  -h, --help       this text`;

const OPTIONS = {
  ...COMMON_OPTIONS,
  'older-than': { type: 'string' },
  state: { type: 'string', multiple: true },
  'dry-run': { type: 'boolean' },
} as const;

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "90s", "10m", "1h", "2d", "500ms", "0" → milliseconds. */
export function parseDuration(value: string | undefined, flag: string, def: number): number {
  if (value === undefined) return def;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(value.trim());
  if (!m || (m[2] === undefined && Number(m[1]) !== 0)) throw new UserError(`${flag} expects a duration like 30s, 10m, 1h, 2d or 0; got '${value}'`);
  return Math.round(Number(m[1]) * UNIT_MS[m[2] ?? 'ms']);
}

export async function run(argv: string[]): Promise<number> {
  const parsed = parseSubcommand(argv, OPTIONS, USAGE);
  if (!parsed) return 0;
  const { values } = parsed;
  const olderThanMs = parseDuration(values['older-than'], '--older-than', 3_600_000);
  const states = (values.state ?? ['failed,aborted'])
    .flatMap((s) => s.split(','))
    .map((s) => s.trim())
    .filter(Boolean);
  for (const s of states) {
    if (!(SESSION_STATES as readonly string[]).includes(s)) throw new UserError(`--state must be one of ${SESSION_STATES.join(', ')}; got '${s}'`);
  }
  const store = existingStore(values.images);
  let removed: string[];
  try {
    removed = await store.gc({ olderThanMs, states: states as SessionState[], dryRun: values['dry-run'] });
  } catch (err) {
    throw userFacing(err);
  }
  const verb = values['dry-run'] ? 'would remove' : 'removed';
  process.stdout.write(removed.length === 0 ? 'nothing to remove\n' : `${verb} ${removed.length} session(s): ${removed.join(' ')}\n`);
  return 0;
}
