// Lanes on the wire (proto/migration.proto LaneStart, RoundEnd.lane_batches; docs/design.md,
// Lanes): how many, how pages are spread over them, and the per-lane batch counts of a round.

/** Streams per session at most, the control stream (lane 0) included. */
export const MAX_LANES = 16;

/** Pages are spread over the lanes by address: lane = floor(address / LANE_SPAN_BYTES) mod lanes,
 *  so a page always travels on the same lane and its batches stay in order. */
export const LANE_SPAN_BYTES = 4 << 20;

export function laneOf(address: number, lanes: number): number {
  return lanes <= 1 ? 0 : Math.floor(address / LANE_SPAN_BYTES) % lanes;
}

/** RoundEnd.lane_batches: a uint32 LE per lane 1..N-1 (empty: no lanes). Throws a plain Error. */
export function decodeLaneCounts(b: Buffer | undefined): number[] {
  if (!b || b.length === 0) return [];
  if (b.length % 4 !== 0 || b.length / 4 >= MAX_LANES) {
    throw new Error(`lane_batches has ${b.length} bytes: not a uint32 per lane for at most ${MAX_LANES - 1} lanes`);
  }
  const out: number[] = [];
  for (let i = 0; i < b.length; i += 4) out.push(b.readUInt32LE(i));
  return out;
}

/** The wire form of per-lane batch counts (index 0 = lane 1). */
export function encodeLaneCounts(counts: number[]): Buffer {
  const b = Buffer.alloc(4 * counts.length);
  counts.forEach((n, i) => b.writeUInt32LE(n, 4 * i));
  return b;
}
