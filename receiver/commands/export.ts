// `receiver export SESSION --format raw|core --out PATH`: write a committed image as one file per
// VMA (+ manifest.json) or as an ELF core file that readelf and gdb read.

import { parseEnumFlag, usageError } from '../../common/cli';
import { formatBytes } from '../../common/units';
import { exportCore } from '../export/core-export';
import { exportRaw } from '../export/raw-export';
import { COMMON_OPTIONS, IMAGES_HELP, parseSubcommand, existingStore, oneSession, userFacing } from './images-dir';

export const USAGE = `usage: receiver export [--images DIR] SESSION --out PATH [--format raw|core] [options]

Writes what the process read at each page of each VMA at the freeze: the page it sent; zeros for
anonymous pages it never populated; for file-backed pages it never wrote, the file's content at
that offset (read now, from the path in the layout).

  --format raw   (default) PATH is a directory: one START-END.bin per VMA (hex as in
                 /proc/PID/maps) and manifest.json (VMAs, populated ranges, threads, pid)
  --format core  PATH is an ELF core file (PT_LOAD per VMA, NT_PRSTATUS per thread, NT_FILE)
                 for gdb -c PATH and readelf -a PATH
${IMAGES_HELP}
  --out PATH           where to write (required)
  --zero-fill-missing  export never-written pages of a missing backing file as zeros
                       (default: fail, naming the missing files)
  --file-root DIR      look backing files up under DIR (a copy of the source's files)
  --force              write into a non-empty directory / over an existing file
  -h, --help           this text`;

const OPTIONS = {
  ...COMMON_OPTIONS,
  format: { type: 'string' },
  out: { type: 'string', short: 'o' },
  'zero-fill-missing': { type: 'boolean' },
  'file-root': { type: 'string' },
  force: { type: 'boolean' },
} as const;

export async function run(argv: string[]): Promise<number> {
  const parsed = parseSubcommand(argv, OPTIONS, USAGE, true);
  if (!parsed) return 0;
  const { values, positionals } = parsed;
  const id = oneSession(positionals, USAGE);
  const format = parseEnumFlag(values.format, '--format', 'raw', ['raw', 'core'] as const);
  if (!values.out) throw usageError('--out PATH is required', USAGE);
  const store = existingStore(values.images);
  const opts = { zeroFillMissing: values['zero-fill-missing'], fileRoot: values['file-root'], force: values.force };
  try {
    const img = await store.open(id);
    try {
      const s = format === 'raw' ? await exportRaw(img, values.out, opts) : await exportCore(img, values.out, opts);
      process.stdout.write(
        `${id}: exported ${s.vmas} VMAs (${formatBytes(s.bytes)}) as ${format} to ${s.out}: ` +
          `${s.pages.data} pages sent, ${s.pages.zero} zero, ${s.pages.file} from files, ${s.pages.none} never populated\n`,
      );
    } finally {
      await img.close();
    }
  } catch (err) {
    throw userFacing(err);
  }
  return 0;
}
