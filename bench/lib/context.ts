// What every section of the bench gets.

import type { Programs } from './baselines';

export interface BenchContext {
  /** The built C programs. */
  bins: Programs;
  /** Runs per figure (median, min, max). */
  runs: number;
  /** One progress line on stderr. */
  progress(msg: string): void;
}

export const GiB = 2 ** 30;
export const MiB = 2 ** 20;
