// `receiver report --images DIR SESSION --out FILE.html`: write a session's report page (see
// receiver/report/session-report.ts) from what the receiver keeps on disk. Reads only.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseFlags } from '../../common/cli';
import { UserError } from '../../common/errors';
import { logger } from '../../common/log';
import { renderSessionReport, reportFromRecord, type ReportRound } from '../report/session-report';
import { IMAGES_HELP, existingStore, oneSession, userFacing } from './images-dir';

const log = logger('report');

export const USAGE = `usage: receiver report [--images DIR] SESSION [--out FILE.html]

Writes one self-contained HTML page (no external files, no script) with the session's figures
and per-round charts: dirty bytes, bytes sent, round duration, expected downtime against the
target, dirty rate against transfer rate; the final downtime and the verify result.

${IMAGES_HELP}
  --out FILE     where to write the page (default: SESSION.html here; - writes to stdout)
  -h, --help     this text`;

const OPTIONS = {
  images: { type: 'string' },
  out: { type: 'string', short: 'o' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** The downtime target, wherever the receiver kept it (session metadata or the report record). */
function downtimeTarget(...sources: Array<Record<string, unknown> | undefined>): number | undefined {
  for (const s of sources) {
    const v = s?.downtimeTargetSeconds;
    if (typeof v === 'number' && Number.isFinite(v) && v > 0) return v;
  }
  return undefined;
}

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, OPTIONS, USAGE, true);
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const id = oneSession(positionals, USAGE);
  const store = existingStore(values.images);
  const out = values.out ?? `${id}.html`;

  let html: string;
  try {
    const img = await store.open(id);
    try {
      const record = img.report();
      const rounds: ReportRound[] = img.roundRecords().map((r) => ({ ...r.figures, phase: r.phase, endedAt: r.endedAt }));
      html = renderSessionReport({
        meta: img.meta,
        state: img.state,
        reason: img.reason,
        imagePages: img.imagePages,
        rounds,
        report: reportFromRecord(record),
        downtimeTargetSeconds: downtimeTarget(img.meta as unknown as Record<string, unknown>, record),
      });
    } finally {
      await img.close();
    }
  } catch (err) {
    throw userFacing(err);
  }

  if (out === '-') {
    process.stdout.write(html);
    return 0;
  }
  try {
    fs.writeFileSync(out, html);
  } catch (err) {
    throw new UserError(`--out: cannot write ${out}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  log.info(`session ${id}: report written to ${path.resolve(out)}`);
  return 0;
}
