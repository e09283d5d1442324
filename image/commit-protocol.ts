// How a writer's changes to a session become durable, and what it drops once they are
// (docs/design.md, On-disk format). SessionWriter decides what the next state is; this module
// decides in which order the files reach the disk, so that a crash at any moment leaves the
// previous durable state or the next one.
//
// A round (round): once the round's page writes are done, in parallel: fdatasync the chunk
// files touched, write the changed presence bitmaps as a new generation file (fsync), and write
// the next state.json (last durable round, layout, window index naming that generation) under a
// temporary name (fsync); once all three are durable, rename it over state.json: the round's
// commit point. A crash before that rename leaves the previous round's state; pages overwritten
// in place meanwhile were dirtied after that round, so a resuming sender sends them again and the
// commit digest proves the result.
//
// A stop-and-copy or verify fix-up round's pages are also appended to a journal (page-journal.ts):
// for such a round, "the chunk files touched" above is the journal alone, and the state names it
// until the chunk files are synced (SessionWriter retires it after the commit).
//
// A commit (commit): manifest.json and the committed state.json are written and fsynced in
// parallel with the bitmaps and the chunk files touched since the last sync (a commit that ends
// the final round: its pages), then renamed in that order; the state.json rename is the commit
// point (a manifest.json is the committed image only while state.json names its commit number).
//
// Any other state change (failed, aborted, a committed image reopened for a fix-up round) is one
// atomic replacement of state.json (replaceState).

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { logger } from '../common/log';
import { isEmpty } from './bitmap';
import { encodeGeneration } from './bitmap-generations';
import type { ChunkFiles } from './chunk-files';
import { crashPoint } from './crash-hook';
import { atomicWrite, fsyncDir, replaceInOrder, writeFileSynced } from './durable-file';
import { generationOf, type ManifestFile, type SessionFiles, type StateFile, type WindowIndex } from './on-disk';
import type { PageWindows } from './page-windows';

const log = logger('store');

/** Makes the page data the next state counts on durable (chunk files, or a final-round journal). */
export type PagesSync = () => Promise<void>;

/** The next bitmap generation, planned: the window index naming it, and the write of its file. */
export interface BitmapPlan {
  index: WindowIndex;
  write: () => Promise<void>;
}

export class CommitProtocol {
  private nextGen: number;
  /** Unlinks of bitmap generations nothing refers to any more, not waited for by the round. */
  private readonly unlinking = new Set<Promise<void>>();

  constructor(
    private readonly id: string,
    private readonly files: SessionFiles,
    private readonly windows: PageWindows,
    private readonly chunks: ChunkFiles,
    /** The highest generation the durable state may refer to (state.json's gen). */
    gen: number,
  ) {
    this.nextGen = gen + 1;
  }

  /** The highest generation numbered so far: what the next state.json records as gen. */
  get gen(): number {
    return this.nextGen - 1;
  }

  /**
   * The next bitmap generation: the windows changed since they were last persisted, numbered and
   * slotted now, so that the window index naming them (returned) can go into state.json while
   * write() makes the generation file durable. Nothing to write when no changed window holds pages.
   */
  planBitmaps(): BitmapPlan {
    const changed = this.windows.changed();
    const keep = changed.filter((w) => !isEmpty(w.data) || !isEmpty(w.zero));
    for (const w of changed) {
      w.changed = false;
      w.persisted = null;
    }
    let write = () => Promise.resolve();
    if (keep.length > 0) {
      const gen = this.nextGen++;
      const bytes = encodeGeneration(keep);
      keep.forEach((w, slot) => (w.persisted = [gen, slot]));
      write = async () => {
        await writeFileSynced(this.files.generation(gen), bytes);
        await fsyncDir(this.files.bitmaps);
      };
    }
    return { index: this.windows.nonEmpty().map((w) => [w.index, w.persisted![0], w.persisted![1]]), write };
  }

  /** Make a round durable: page data (`pages`: the chunk files, or the round's journal) and
   *  bitmaps synced, then `next` renamed over state.json. */
  async round(next: StateFile, bitmaps: BitmapPlan, pages: PagesSync): Promise<void> {
    await replaceInOrder(
      [{ file: this.files.state, data: JSON.stringify(next) }],
      [pages().then(() => crashPoint('round-data-synced')), bitmaps.write().then(() => crashPoint('round-bitmaps-written'))],
    );
  }

  /** Make a commit durable: page data (as for a round) and bitmaps synced, manifest.json and the
   *  committed state.json renamed in that order. */
  async commit(manifest: ManifestFile, next: StateFile, bitmaps: BitmapPlan, pages: PagesSync): Promise<void> {
    await replaceInOrder(
      [
        { file: this.files.manifest, data: JSON.stringify(manifest, null, 1), beforeRename: () => crashPoint('commit-manifest-tmp') },
        { file: this.files.state, data: JSON.stringify(next), beforeRename: () => crashPoint('commit-manifest-renamed') },
      ],
      [pages().then(() => crashPoint('commit-data-synced')), bitmaps.write()],
    );
  }

  /** Replace state.json atomically (a state change without pages or bitmaps). */
  async replaceState(next: StateFile): Promise<void> {
    await atomicWrite(this.files.state, JSON.stringify(next));
  }

  /**
   * After a durable change from window index `before` to `now`: drop what nothing refers to any
   * more. Bitmap generations only `before` named are unlinked in the background — this writer
   * never reuses their numbers; settled() and tidy wait for them — so the round's ack does not
   * wait for the directory update. Chunk files of windows left without data are removed now: a
   * write to such a window must not race the removal.
   */
  async forgetUnused(before: WindowIndex, now: WindowIndex): Promise<void> {
    const used = new Set(now.map((w) => w[1]));
    for (const gen of new Set(before.map((w) => w[1]))) {
      if (used.has(gen)) continue;
      const p = fsp
        .rm(this.files.generation(gen), { force: true })
        .catch((err: unknown) => log.warn(`session ${this.id}: could not remove an old page bitmap: ${(err as Error).message}`))
        .finally(() => this.unlinking.delete(p));
      this.unlinking.add(p);
    }
    await this.chunks.removeWindows(
      this.windows
        .all()
        .filter((w) => isEmpty(w.data))
        .map((w) => w.index),
    );
    this.windows.pruneEmpty();
  }

  /**
   * Remove the bitmap generations and chunk files the durable window index `now` does not refer
   * to, and leftover temporary files: what a crashed writer left beyond the durable state.
   */
  async tidy(now: WindowIndex): Promise<void> {
    await this.settled();
    const used = new Set(now.map((w) => w[1]));
    const names = await fsp.readdir(this.files.bitmaps).catch(() => [] as string[]);
    for (const name of names) {
      const gen = generationOf(name);
      if (gen === undefined || !used.has(gen)) await fsp.rm(path.join(this.files.bitmaps, name), { force: true });
    }
    for (const name of await fsp.readdir(this.files.dir)) {
      if (name.includes('.tmp-')) await fsp.rm(path.join(this.files.dir, name), { force: true });
    }
    const withData = new Set(
      this.windows
        .all()
        .filter((w) => !isEmpty(w.data))
        .map((w) => w.index),
    );
    await this.chunks.removeExcept(withData);
    this.windows.pruneEmpty();
  }

  /** Wait for the background unlinks. */
  async settled(): Promise<void> {
    await Promise.all(this.unlinking);
  }
}
