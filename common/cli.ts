// Small helpers over node:util parseArgs that turn every parsing problem into a UserError with a
// hint, and parse the value kinds our commands take (HOST:PORT, integers, enums).

import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UserError } from './errors';
import { formatBytes } from './units';

export type Options = NonNullable<ParseArgsConfig['options']>;

/** A user mistake on the command line: the problem, the usage line, and where to find the rest
 *  (the full option list is one --help away; repeating it after every typo buries the error). */
export function usageError(problem: string, usage: string): UserError {
  const synopsis = usage.split('\n').find((l) => l.startsWith('usage:')) ?? usage.split('\n')[0];
  return new UserError(`${problem}\n${synopsis}\n(--help lists every option)`);
}

/** Parse argv against options; unknown flags and missing values become UserErrors. */
export function parseFlags<O extends Options>(argv: string[], options: O, usage: string, allowPositionals = false) {
  try {
    return parseArgs({ args: argv, options, allowPositionals, strict: true });
  } catch (err) {
    const msg = (err as Error).message.replace(/\. To specify a positional argument.*$/s, '');
    throw usageError(msg, usage);
  }
}

export interface HostPort {
  host: string;
  port: number;
}

/** "HOST:PORT", "[v6]:PORT" or ":PORT"/"PORT" (host defaults to defaultHost). */
export function parseHostPort(value: string, flag: string, defaultHost = '127.0.0.1'): HostPort {
  const m = /^(?:\[([^\]]+)\]|([^:]*))?:?(\d{1,5})$/.exec(value.trim());
  if (!m) throw new UserError(`${flag} expects HOST:PORT, got '${value}'`);
  const port = Number(m[3]);
  if (port > 65535) throw new UserError(`${flag}: port ${port} is out of range (0-65535)`);
  const host = m[1] ?? (m[2] || defaultHost);
  return { host, port };
}

export function formatHostPort({ host, port }: HostPort): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** An integer flag within [min, max]. */
export function parseIntFlag(value: string | undefined, flag: string, def: number, min: number, max: number): number {
  if (value === undefined) return def;
  if (!/^-?\d+$/.test(value.trim())) throw new UserError(`${flag} expects a whole number, got '${value}'`);
  const n = Number(value);
  if (n < min || n > max) throw new UserError(`${flag} must be between ${min} and ${max}, got ${n}`);
  return n;
}

/** Binary multipliers of size suffixes (K = KiB ...); an optional trailing "iB"/"B" is accepted. */
const SIZE_SUFFIXES: Record<string, number> = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };

/** A size flag: plain bytes or a number with a binary K/M/G/T suffix ("512K", "1.5G", "2GiB"), within [min, max]. */
export function parseSizeFlag(value: string | undefined, flag: string, def: number, min: number, max: number): number {
  if (value === undefined) return def;
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?$/i.exec(value.trim());
  if (!m) throw new UserError(`${flag} expects a size in bytes, optionally with a K, M, G or T suffix (binary), got '${value}'`);
  const n = Math.floor(Number(m[1]) * SIZE_SUFFIXES[m[2].toUpperCase()]);
  if (!Number.isSafeInteger(n) || n < min || n > max)
    throw new UserError(`${flag} must be between ${formatBytes(min)} and ${formatBytes(max)}, got '${value}'`);
  return n;
}

/** One of a fixed set of words. */
export function parseEnumFlag<T extends string>(value: string | undefined, flag: string, def: T, allowed: readonly T[]): T {
  if (value === undefined) return def;
  if (!(allowed as readonly string[]).includes(value)) {
    throw new UserError(`${flag} must be one of ${allowed.join(', ')}; got '${value}'`);
  }
  return value as T;
}
