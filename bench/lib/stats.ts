// Every figure of the bench is a Stat: the median of several runs, with their min and max.

export interface Stat {
  median: number;
  min: number;
  max: number;
  /** Every run's value, in run order. */
  values: number[];
}

export function stat(values: number[]): Stat {
  const finite = values.filter((v) => Number.isFinite(v));
  if (finite.length === 0) return { median: NaN, min: NaN, max: NaN, values };
  const s = [...finite].sort((a, b) => a - b);
  const mid = s.length >> 1;
  const median = s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
  return { median, min: s[0], max: s[s.length - 1], values };
}

/** Ratio of two medians (NaN when either is missing). */
export function ratio(a: Stat, b: Stat): number {
  return b.median > 0 ? a.median / b.median : NaN;
}

/** Scale every figure of a Stat (units: seconds → ms, bytes → MiB, ...). */
export function scaled(s: Stat, k: number): Stat {
  return { median: s.median * k, min: s.min * k, max: s.max * k, values: s.values.map((v) => v * k) };
}
