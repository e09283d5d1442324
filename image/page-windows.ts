// Which pages an image holds, as two bitmaps (data, zero) per aligned address window of
// WINDOW_PAGES pages (1 GiB with 4 KiB pages). Each window's data pages live in one sparse chunk
// file at offset (page index in window * page size) (see chunk-files.ts), so pages can arrive in any
// order, any number of times, and a layout change only clears bits.
//
// A page is: absent (neither bit), data (bytes in the chunk file) or zero (zero bit only; zero
// pages never take disk space). The bitmaps are persisted per round as one "generation" file
// holding the windows changed since the previous generation (see bitmap-generations.ts).

import type { Vma } from '../common/vma';
import { clearBits, countBits, forEachRun, isEmpty, setBits } from './bitmap';

export const WINDOW_PAGES = 1 << 18;
export const BITMAP_BYTES = WINDOW_PAGES / 8;

export class PageWindow {
  readonly data = new Uint8Array(BITMAP_BYTES);
  readonly zero = new Uint8Array(BITMAP_BYTES);
  /** Bitmaps differ from the generation file they were last persisted in. */
  changed = false;
  /** Where this window's bitmaps were last persisted: [generation, slot]. */
  persisted: [number, number] | null = null;
  constructor(readonly index: number) {}
}

/** Pieces of a page range split at window boundaries: (window index, first page in window, pages). */
export type WindowPiece = [window: number, first: number, pages: number];

export class PageWindows {
  readonly windowBytes: number;
  private readonly windows = new Map<number, PageWindow>();

  constructor(readonly pageSize: number) {
    this.windowBytes = pageSize * WINDOW_PAGES;
  }

  /** Split [addr, addr + pages*pageSize) at window boundaries. */
  split(addr: number, pages: number): WindowPiece[] {
    const out: WindowPiece[] = [];
    let page = addr / this.pageSize;
    let left = pages;
    while (left > 0) {
      const w = Math.floor(page / WINDOW_PAGES);
      const first = page - w * WINDOW_PAGES;
      const n = Math.min(left, WINDOW_PAGES - first);
      out.push([w, first, n]);
      page += n;
      left -= n;
    }
    return out;
  }

  /** Windows currently held in memory. */
  get size(): number {
    return this.windows.size;
  }

  get(w: number): PageWindow | undefined {
    return this.windows.get(w);
  }

  private getOrCreate(w: number): PageWindow {
    let win = this.windows.get(w);
    if (!win) {
      win = new PageWindow(w);
      this.windows.set(w, win);
    }
    return win;
  }

  /** Windows in address order. */
  all(): PageWindow[] {
    return [...this.windows.values()].sort((a, b) => a.index - b.index);
  }

  /** The pages now hold data (bytes in the chunk file). */
  markData(addr: number, pages: number): void {
    this.mark(addr, pages, 'data');
  }

  /** The pages are now zero pages (no bytes anywhere). */
  markZero(addr: number, pages: number): void {
    this.mark(addr, pages, 'zero');
  }

  private mark(addr: number, pages: number, kind: 'data' | 'zero'): void {
    for (const [w, first, n] of this.split(addr, pages)) {
      const win = this.getOrCreate(w);
      setBits(kind === 'data' ? win.data : win.zero, first, first + n);
      clearBits(kind === 'data' ? win.zero : win.data, first, first + n);
      win.changed = true;
    }
  }

  /** Forget pages; returns how many were held. */
  clear(addr: number, pages: number): number {
    let dropped = 0;
    for (const [w, first, n] of this.split(addr, pages)) {
      const win = this.windows.get(w);
      if (!win) continue;
      const held = countBits(win.data, first, first + n) + countBits(win.zero, first, first + n);
      if (held === 0) continue;
      clearBits(win.data, first, first + n);
      clearBits(win.zero, first, first + n);
      win.changed = true;
      dropped += held;
    }
    return dropped;
  }

  /**
   * Drop every page outside the layout (munmap, mremap, shrinking); returns pages dropped.
   * beforeDrop, if given, sees each range that holds pages just before it is cleared.
   */
  dropOutside(layout: Vma[], beforeDrop?: (addr: number, pages: number) => void): number {
    return this.walkOutside(layout, true, beforeDrop);
  }

  /** Pages held outside the layout (verify: a committed image holds none). */
  countOutside(layout: Vma[]): number {
    return this.walkOutside(layout, false);
  }

  /** Visit each window's gaps between the (sorted) layout's VMAs; count and optionally clear what they hold. */
  private walkOutside(layout: Vma[], clear: boolean, beforeDrop?: (addr: number, pages: number) => void): number {
    let held = 0;
    const ps = this.pageSize;
    for (const win of this.windows.values()) {
      const base = win.index * this.windowBytes;
      const limit = base + this.windowBytes;
      const gap = (from: number, to: number) => {
        if (to <= from) return;
        const a = (from - base) / ps;
        const b = (to - base) / ps;
        const n = countBits(win.data, a, b) + countBits(win.zero, a, b);
        if (n === 0) return;
        held += n;
        if (!clear) return;
        beforeDrop?.(from, b - a);
        clearBits(win.data, a, b);
        clearBits(win.zero, a, b);
        win.changed = true;
      };
      let cursor = base; // start of the next gap
      for (const v of layout) {
        if (v.end <= base) continue;
        if (v.start >= limit) break;
        gap(cursor, Math.max(v.start, base));
        cursor = Math.min(v.end, limit);
      }
      gap(cursor, limit);
    }
    return held;
  }

  /** Calls fn(address, pages) for each run of held pages of the given kind, in address order. */
  forEachRun(kind: 'data' | 'zero', fn: (addr: number, pages: number) => void, from = 0, to = Number.MAX_SAFE_INTEGER): void {
    const first = Math.floor(from / this.windowBytes);
    const last = Math.ceil(to / this.windowBytes) - 1;
    // A range the size of a batch's run lies in one window or two: looked up, not found by
    // sorting every window (the running digest asks this for every run of every batch).
    if (last - first < this.windows.size) {
      for (let w = first; w <= last; w++) {
        const win = this.windows.get(w);
        if (win) this.runsIn(win, kind, fn, from, to);
      }
    } else {
      for (const win of this.all()) if (win.index >= first && win.index <= last) this.runsIn(win, kind, fn, from, to);
    }
  }

  private runsIn(win: PageWindow, kind: 'data' | 'zero', fn: (addr: number, pages: number) => void, from: number, to: number): void {
    const base = win.index * this.windowBytes;
    const a = Math.max(0, Math.floor((from - base) / this.pageSize));
    const b = Math.min(WINDOW_PAGES, Math.ceil((to - base) / this.pageSize));
    forEachRun(kind === 'data' ? win.data : win.zero, a, b, (s, e) => fn(base + s * this.pageSize, e - s));
  }

  counts(): { dataPages: number; zeroPages: number } {
    let dataPages = 0;
    let zeroPages = 0;
    for (const win of this.windows.values()) {
      dataPages += countBits(win.data);
      zeroPages += countBits(win.zero);
    }
    return { dataPages, zeroPages };
  }

  /** Windows whose bitmaps changed since they were last persisted. */
  changed(): PageWindow[] {
    return this.all().filter((w) => w.changed);
  }

  /** Windows still holding pages (the ones the durable index must name). */
  nonEmpty(): PageWindow[] {
    return this.all().filter((w) => !isEmpty(w.data) || !isEmpty(w.zero));
  }

  /** Forget windows that hold nothing (after they were persisted). */
  pruneEmpty(): void {
    for (const [w, win] of this.windows) if (isEmpty(win.data) && isEmpty(win.zero)) this.windows.delete(w);
  }

  /** Install a window read back from a generation file. */
  load(w: number, data: Uint8Array, zero: Uint8Array, persisted: [number, number]): void {
    const win = this.getOrCreate(w);
    win.data.set(data);
    win.zero.set(zero);
    win.persisted = persisted;
    win.changed = false;
  }
}
