// What the receiver may have lost: for every round it has not acknowledged as durable yet, the
// runs of pages the tracker handed out (whether or not they reached the receiver) and the runs
// the receiver was told to discard. A receiver that restarts, or a session taken over after a cut,
// holds exactly its last durable round L (image/commit-protocol.ts: presence and discards
// roll back to L; page data written after L may have been overwritten in place). Resuming at L,
// the sender re-sends the discards of rounds > L, then every page of rounds > L (read again from
// the target: current content), and the image is whole again.
//
// Pages are journaled when the scan hands them out, not when they are sent: a scan write-protects
// (consumes the written state of) what it reports, so a batch scanned but not yet staged when the
// link broke exists nowhere else. Run numbers are copied: batch buffers may be reused.
//
// Cost: run lists only, and only for rounds not yet durable (usually one or two).

import type { RunBatch } from '../tracking/run-batch';
import { sumPages, unionRuns } from '../../common/page-runs';

export interface Replay {
  /** (start, pages) runs to discard again: sorted, merged (one Discard, which the receiver
   *  refuses unless its runs are ascending and disjoint). */
  discards: number[];
  /** (start, pages) runs to send again: sorted, merged (a page appears once). */
  pages: number[];
  /** Pages in `pages`. */
  pageCount: number;
}

interface Entry {
  pages: number[];
  discards: number[];
}

export class RoundJournal {
  private readonly rounds = new Map<number, Entry>();

  constructor(readonly pageSize: number) {}

  /** Record pages handed out in `round`. */
  pages(round: number, runs: ArrayLike<number>): void {
    push(this.entry(round).pages, runs);
  }

  /** Record runs dropped from the receiver's image in `round` (sent as Discard, or dropped with a
   *  VMA that left the layout). */
  discards(round: number, runs: ArrayLike<number>): void {
    push(this.entry(round).discards, runs);
  }

  /** Journal every batch of `source` as it is handed out. */
  async *track(round: number, source: AsyncIterable<RunBatch> | Iterable<RunBatch>): AsyncGenerator<RunBatch> {
    for await (const batch of source) {
      this.pages(round, batch.runs);
      yield batch;
    }
  }

  /** The receiver made `round` durable: it and every earlier round need no replay any more. */
  durable(round: number): void {
    for (const r of [...this.rounds.keys()]) if (r <= round) this.rounds.delete(r);
  }

  /** What to send again to a receiver durable at round `last` (-1: none). */
  since(last: number): Replay {
    const discardRuns: ArrayLike<number>[] = [];
    const pageRuns: ArrayLike<number>[] = [];
    for (const r of this.openRounds) {
      if (r <= last) continue;
      const e = this.rounds.get(r)!;
      discardRuns.push(e.discards);
      pageRuns.push(e.pages);
    }
    // A union, not the journal order: a round journals what left the layout and then what was
    // held under VMAs first seen (each sorted, together not: an mremap moves a VMA down), and
    // rounds may discard the same pages again. All are sent before any page of the replay, and
    // a discard only clears, so their order never mattered.
    const pages = unionRuns(pageRuns, this.pageSize);
    return { discards: unionRuns(discardRuns, this.pageSize), pages, pageCount: sumPages(pages) };
  }

  /** Rounds journaled (not yet durable). */
  get openRounds(): number[] {
    return [...this.rounds.keys()].sort((a, b) => a - b);
  }

  private entry(round: number): Entry {
    let e = this.rounds.get(round);
    if (!e) this.rounds.set(round, (e = { pages: [], discards: [] }));
    return e;
  }
}

function push(out: number[], runs: ArrayLike<number>): void {
  for (let i = 0; i < runs.length; i++) out.push(runs[i]);
}
