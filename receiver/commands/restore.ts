// `receiver restore SESSION`: start the process of a committed, restorable image on this host.
// It runs on from the instruction where it was frozen, with its pid and thread ids, registers,
// signal state, credentials and file descriptors (docs/design.md, Restore). Prints the pid.

import { UserError } from '../../common/errors';
import { logger } from '../../common/log';
import { imageMemory } from '../../image/image-memory';
import { RestoreError, restoreProcess } from '../restore/restore-process';
import { COMMON_OPTIONS, IMAGES_HELP, parseSubcommand, existingStore, oneSession, userFacing } from './images-dir';

const log = logger('restore');

export const USAGE = `usage: receiver restore [--images DIR] SESSION [options]

Starts the process of a committed image made with 'sender migrate --restorable', on this host,
and prints its pid. It runs on from the instruction where it was frozen. Refused, with nothing
left running: a pid or thread id already taken here, a kernel other than the source's, a mapped
or open file that is missing or changed since the migration.

${IMAGES_HELP}
  --any-pid              take whatever pid and thread ids the kernel gives when the image's are
                         taken (the program sees getpid() change)
  --allow-changed-files  map and open files even when they differ from the ones the source had
  --stdio FILE           what fds 0, 1 and 2 become (default /dev/null; the source's terminal is
                         not here); opened for appending, created if missing
  --json                 print {pid, tids, steps} as JSON
  -h, --help             this text`;

const OPTIONS = {
  ...COMMON_OPTIONS,
  'any-pid': { type: 'boolean' },
  'allow-changed-files': { type: 'boolean' },
  stdio: { type: 'string' },
  json: { type: 'boolean' },
} as const;

export async function run(argv: string[]): Promise<number> {
  const parsed = parseSubcommand(argv, OPTIONS, USAGE, true);
  if (!parsed) return 0;
  const { values, positionals } = parsed;
  const id = oneSession(positionals, USAGE);
  if (process.getuid?.() !== 0) throw new UserError("restore needs root (it creates a process with the image's pid and credentials)");
  const store = existingStore(values.images);
  const img = await store.open(id).catch((err: unknown) => {
    throw userFacing(err);
  });
  try {
    const manifest = await img.committedManifest().catch((err: unknown) => {
      throw userFacing(err);
    });
    const state = manifest.processState;
    if (!state) throw new UserError(`session ${id} holds memory only: migrate with 'sender migrate --restorable' to make a restorable image`);
    const memory = imageMemory(img, manifest.layout, state);
    const restored = await restoreProcess(state, memory, {
      anyPid: values['any-pid'] ?? false,
      allowChangedFiles: values['allow-changed-files'] ?? false,
      stdio: values.stdio ?? '/dev/null',
      onStep: (s) => log.debug(`step: ${s}`),
    });
    for (const w of restored.warnings) log.warn(w);
    if (values.json) process.stdout.write(`${JSON.stringify({ session: id, pid: restored.pid, tids: restored.tids, steps: restored.steps })}\n`);
    else process.stdout.write(`${restored.pid}\n`);
    return 0;
  } catch (err) {
    if (err instanceof RestoreError) throw new UserError(err.message, 1);
    throw err;
  } finally {
    await img.close();
  }
}
