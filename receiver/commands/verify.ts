// `receiver verify SESSION`: exit 0 only if the session is committed, complete, and the digest
// recomputed from the pages on disk equals the manifest's; otherwise exit 1 with the reasons.

import { digestHex } from '../../common/image-digest';
import { formatBytes } from '../../common/units';
import { StoreError } from '../../image/image-store';
import { COMMON_OPTIONS, IMAGES_HELP, parseSubcommand, existingStore, oneSession, userFacing } from './images-dir';

export const USAGE = `usage: receiver verify [--images DIR] SESSION [--json]

Checks a session's image: committed, manifest consistent with the durable state, every page
readable, and the digest recomputed from disk equal to the one the sender computed from the
frozen process. Exit status 0 when all holds, 1 when not (reasons printed), 2 on usage errors.

${IMAGES_HELP}
  --json         print the result as JSON
  -h, --help     this text`;

const OPTIONS = {
  ...COMMON_OPTIONS,
  json: { type: 'boolean' },
} as const;

export async function run(argv: string[]): Promise<number> {
  const parsed = parseSubcommand(argv, OPTIONS, USAGE, true);
  if (!parsed) return 0;
  const { values, positionals } = parsed;
  const id = oneSession(positionals, USAGE);
  const store = existingStore(values.images);
  let img;
  try {
    img = await store.open(id);
  } catch (err) {
    // An image whose files cannot even be read is a verify failure, not a usage error.
    if (err instanceof StoreError && (err.code === 'INVALID' || err.code === 'IO')) {
      process.stdout.write(`${id}: NOT OK\n  - ${err.message}\n`);
      return 1;
    }
    throw userFacing(err);
  }
  try {
    const v = await img.verify();
    if (values.json) {
      process.stdout.write(
        `${JSON.stringify({ session: id, ok: v.ok, problems: v.problems, state: img.state, pages: v.pages, digest: v.digest === undefined ? undefined : digestHex(v.digest) }, null, 2)}\n`,
      );
    } else if (v.ok) {
      const pages = v.pages ?? 0;
      process.stdout.write(
        `${id}: ok: committed, ${pages} pages (${formatBytes(pages * img.pageSize)}) in ${v.manifest?.layout.length ?? 0} VMAs, ` +
          `${img.rounds().length} rounds, digest ${digestHex(v.digest ?? 0n)}\n`,
      );
    } else {
      process.stdout.write(`${id}: NOT OK\n${v.problems.map((p) => `  - ${p}\n`).join('')}`);
    }
    return v.ok ? 0 : 1;
  } catch (err) {
    throw userFacing(err);
  } finally {
    await img.close();
  }
}
