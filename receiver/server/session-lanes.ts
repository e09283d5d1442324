// The lanes of one session, kept by its control stream (docs/design.md, Lanes): extra Migrate
// streams that carry only page batches, so that a round travels over several connections. Each
// lane presents the control stream's random key; its batches go through the control stream's own
// page path (checks, --max-rate, --max-image-bytes, the store, a handover's prebuilt process).
//
// Ordering. A lane may run ahead of the control stream: its first batch of a round can arrive
// before that round's RoundStart, so it waits for the round to open. The RoundEnd (or a Commit
// ending the round) says how many batches each lane carried; the control stream ends the round
// only once every lane delivered that many, so no batch of a round is left behind it. A lane
// that delivers more than it said breaks the protocol.

import { randomBytes, timingSafeEqual } from 'node:crypto';
import { MAX_LANES, decodeLaneCounts } from '../../proto/lanes';

/** What the control stream needs of a lane stream. */
export interface LaneEnd {
  /** The session's stream is over: end this lane too (with why). */
  ownerGone(why: string): void;
}

export class SessionLanes {
  /** What a LaneStart must present (SessionAccepted.lane_key). */
  readonly key = randomBytes(16);
  private readonly attached = new Map<number, LaneEnd>();
  /** Batches each lane delivered in the open round (index = lane). */
  private delivered: number[] = [];
  private roundOpen = false;
  private closedWhy: string | null = null;
  /** Woken whenever a batch is delivered, a round opens, or the lanes close. */
  private wakers = new Set<() => void>();

  /** Refusal text, or null when the lane is attached. */
  attach(lane: number, key: Buffer, end: LaneEnd): string | null {
    if (this.closedWhy !== null) return `the session's stream is over (${this.closedWhy})`;
    if (!Buffer.isBuffer(key) || key.length !== this.key.length || !timingSafeEqual(key, this.key)) return 'wrong lane key';
    if (!Number.isInteger(lane) || lane < 1 || lane >= MAX_LANES) return `lane ${lane} is not between 1 and ${MAX_LANES - 1}`;
    if (this.attached.has(lane)) return `lane ${lane} is already attached`;
    this.attached.set(lane, end);
    return null;
  }

  detach(lane: number, end: LaneEnd): void {
    if (this.attached.get(lane) === end) this.attached.delete(lane);
  }

  /** Resolves once a round is open (at once if one is); rejects once the lanes are closed. */
  async roundOpened(): Promise<void> {
    while (!this.roundOpen) await this.change();
  }

  opened(): void {
    this.roundOpen = true;
    this.wake();
  }

  /** A batch of `lane` went into the store for the open round. */
  count(lane: number): void {
    this.delivered[lane] = (this.delivered[lane] ?? 0) + 1;
    this.wake();
  }

  /**
   * Wait until each lane delivered the batches `expected` (uint32 LE per lane 1..N-1) says, then
   * close the round: the next batches belong to the next one. Throws a plain Error with the
   * protocol problem (a lane over its count, a malformed count).
   */
  async ended(expected: Buffer | undefined): Promise<void> {
    const want = decodeLaneCounts(expected);
    for (;;) {
      const short = want.findIndex((n, i) => (this.delivered[i + 1] ?? 0) < n);
      const over = this.delivered.findIndex((n, lane) => lane > 0 && n > (want[lane - 1] ?? 0));
      if (over > 0) throw new Error(`lane ${over} delivered ${this.delivered[over]} batches this round, the RoundEnd says ${want[over - 1] ?? 0}`);
      if (short < 0) break;
      await this.change();
    }
    this.delivered = [];
    this.roundOpen = false;
  }

  /** The control stream is over: end every lane, fail every wait. */
  close(why: string): void {
    if (this.closedWhy !== null) return;
    this.closedWhy = why;
    for (const end of this.attached.values()) end.ownerGone(why);
    this.attached.clear();
    this.wake();
  }

  private change(): Promise<void> {
    if (this.closedWhy !== null) return Promise.reject(new LanesClosed(this.closedWhy));
    return new Promise((resolve) => {
      const w = () => {
        this.wakers.delete(w);
        resolve();
      };
      this.wakers.add(w);
    });
  }

  private wake(): void {
    const ws = [...this.wakers];
    this.wakers.clear();
    for (const w of ws) w();
  }
}

/** The control stream ended while a lane or a round end waited. */
export class LanesClosed extends Error {}
