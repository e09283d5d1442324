// What the reading subcommands (list, verify, export, gc) share: flag parsing with --help, the
// --images option, opening an existing images directory (a typo gets an error, not a new empty
// directory), and turning store and export errors into user errors (one line, no stack).

import * as fs from 'node:fs';
import { parseFlags, type Options, usageError } from '../../common/cli';
import { UserError } from '../../common/errors';
import { ExportError } from '../export/export-error';
import { ImageStore, StoreError } from '../../image/image-store';

export const DEFAULT_IMAGES = 'precopy-images';

export const IMAGES_HELP = `  --images DIR   the receiver's images directory (default ./${DEFAULT_IMAGES})`;

/** The options every reading subcommand takes. */
export const COMMON_OPTIONS = {
  images: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** Parse argv; prints the usage and returns undefined for --help. */
export function parseSubcommand<O extends Options>(argv: string[], options: O, usage: string, allowPositionals = false) {
  const parsed = parseFlags(argv, options, usage, allowPositionals);
  if ((parsed.values as { help?: boolean }).help) {
    process.stdout.write(`${usage}\n`);
    return undefined;
  }
  return parsed;
}

export function existingStore(dir: string | undefined): ImageStore {
  const d = dir ?? DEFAULT_IMAGES;
  if (!fs.statSync(d, { throwIfNoEntry: false })?.isDirectory()) throw new UserError(`--images: ${d} is not a directory`);
  return new ImageStore(d);
}

/** Store and export errors are the user's to fix (wrong id, not committed, missing file...). */
export function userFacing(err: unknown): unknown {
  if (err instanceof StoreError || err instanceof ExportError) return new UserError(err.message);
  return err;
}

/** Exactly one SESSION positional. */
export function oneSession(positionals: string[], usage: string): string {
  if (positionals.length !== 1) throw usageError(`expected one SESSION, got ${positionals.length}`, usage);
  return positionals[0];
}
