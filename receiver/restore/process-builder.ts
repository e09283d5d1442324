// The address space of a process being restored, grown in a stub (native RestoreStub) from
// outside with injected system calls: its mappings, the kernel's vDSO mappings where the image
// had them, and its pages. Used two ways (docs/design.md, Restore and Handover):
//   - a restore maps a committed image's layout once and fills every page from the image;
//   - a handover keeps one open during pre-copy: each round's layout is applied as it arrives
//     (mappings added, removed, changed) and each page batch written in, so that at the freeze
//     only the last pages and the rest of the state remain.
// What the builder knows it must still write from the image (pages held at an address whose
// mapping had to be replaced) is its `stale` list.

import * as fs from 'node:fs';
import { type RestoreStub, startRestoreStub } from '../../native';
import type { MemorySource, VmaImage } from '../../image/memory-source';
import { hex, Remote, SCRATCH_SIZE } from './remote';
import * as K from './x86-64';

/** Bytes the fill reads from the image and writes into the process at a time (bench/sections/restore.ts reads so too). */
export const FILL_CHUNK = 8 << 20;
export const SPECIALS = ['[vvar]', '[vvar_vclock]', '[vdso]'];

export type Fail = (message: string) => never;
type Range = [number, number];

/** stat() identity of a mapped file. */
export interface FileStat {
  dev: bigint;
  ino: bigint;
}

/** A mapping the builder made: its backing (key) and the protection it has now. */
interface Mapping {
  start: number;
  end: number;
  key: string;
  prot: number;
}

interface Place {
  name: string;
  start: number;
  end: number;
}

export interface LayoutOptions {
  /** Identity each mapped file must have (the checked one): a file swapped since is refused. */
  files?: Map<string, FileStat>;
  /** Map everything writable for page writes to come (a handover); else only VMAs with data. */
  everyWritable: boolean;
}

export class ProcessBuilder {
  private mappings: Mapping[] = [];
  private stale: Range[] = [];
  /** Where the stub's [vvar], [vvar_vclock], [vdso] are now. */
  private specials: Place[] = [];
  readonly r: Remote;

  private constructor(
    readonly stub: RestoreStub,
    private readonly fail: Fail,
  ) {
    this.r = new Remote(stub);
    this.specials = readMaps(stub.pid).filter((m) => SPECIALS.includes(m.name));
  }

  /** The stub, with pid `pid` (0: any). */
  static spawn(pid: number, fail: Fail): ProcessBuilder {
    return new ProcessBuilder(startRestoreStub(pid), fail);
  }

  get pid(): number {
    return this.stub.pid;
  }

  /** Ranges whose pages the image holds but the process may not: to write from the image at the end. */
  get staleRanges(): readonly Range[] {
    return this.stale;
  }

  /** Everything of the stub's own goes but the vDSO mappings; the scratch area goes to a hole away from `avoid`. */
  clearStub(avoid: ReadonlyArray<{ start: number; end: number }>): void {
    const lo = Math.min(...this.specials.map((v) => v.start));
    const hi = Math.max(...this.specials.map((v) => v.end));
    this.r.call(this.pid, 'munmap', K.SYS.munmap, 0, lo);
    this.r.call(this.pid, 'munmap', K.SYS.munmap, hi, K.TASK_SIZE - hi);
    this.r.mapScratch(this.findHole([...avoid, ...this.specials], SCRATCH_SIZE));
  }

  /**
   * glibc keeps pointers into the vDSO it found at startup, so the kernel's [vdso] must be where the
   * image's was, and [vvar]/[vvar_vclock] at the same distances from it (the vDSO code reaches its
   * data by fixed offsets). Moved with mremap, one mapping at a time; when a destination overlaps
   * where one of them is now, all go to a free area first.
   */
  placeSpecials(want: ReadonlyArray<{ name: string; start: number; end: number }>): void {
    const have = this.specials;
    const sig = (l: ReadonlyArray<Place>): string =>
      l
        .map((x) => `${x.name}:${x.end - x.start}`)
        .sort()
        .join(' ');
    if (sig(want) !== sig(have)) this.fail(`the image's vDSO mappings (${sig(want)}) differ from this kernel's (${sig(have)})`);
    const overlaps = want.some((w) => have.some((h) => w.start < h.end && h.start < w.end && !(w.start === h.start && w.name === h.name)));
    if (overlaps) this.parkSpecials([...want, ...this.mappings]);
    for (const w of want) this.moveSpecial(w.name, w.start);
  }

  /**
   * Make the mappings those of `vmas` (specials aside): what is mapped with the same backing at
   * the same address stays, with its pages; the rest is unmapped, and what is missing is mapped.
   * Pages the image holds at an address whose mapping was replaced become stale.
   */
  applyLayout(vmas: readonly VmaImage[], opts: LayoutOptions): void {
    const want = vmas.filter((v) => v.kind !== 'special');
    const stats = new Map<string, FileStat>();
    const keys = new Map(want.map((v) => [v, backingKey(v, v.kind === 'file' ? this.fileStat(v.file!.path, stats, opts.files) : undefined)]));
    this.keepClear(vmas);

    // 1. What is mapped with the same backing stays; the rest goes.
    const kept: Mapping[] = [];
    for (const m of this.mappings) {
      let gone: Range[] = [[m.start, m.end]];
      for (const v of want) {
        const lo = Math.max(m.start, v.start);
        const hi = Math.min(m.end, v.end);
        if (lo >= hi || keys.get(v) !== m.key) continue;
        kept.push({ ...m, start: lo, end: hi });
        gone = subtract(gone, lo, hi);
      }
      for (const [s, e] of gone) {
        this.r.call(this.pid, `munmap at ${hex(s)}`, K.SYS.munmap, s, e - s);
        for (const v of want) if (Math.max(s, v.start) < Math.min(e, v.end)) this.stale.push([Math.max(s, v.start), Math.min(e, v.end)]);
      }
    }

    // 2. What is wanted and not there is mapped.
    const fds = new Map<string, number>();
    const made: Mapping[] = [];
    try {
      for (const v of want) {
        let gaps: Range[] = [[v.start, v.end]];
        for (const k of kept) if (k.start < v.end && v.start < k.end) gaps = subtract(gaps, k.start, k.end);
        const prot = opts.everyWritable ? writableProt(v) : v.data.length > 0 ? v.prot | K.PROT_READ | K.PROT_WRITE : v.prot;
        for (const [s, e] of gaps) {
          this.map(v, s, e, prot, fds, stats);
          made.push({ start: s, end: e, key: keys.get(v)!, prot });
        }
      }
    } finally {
      for (const fd of fds.values()) this.r.call(this.pid, 'close', K.SYS.close, fd);
    }
    this.mappings = [...kept, ...made].sort((a, b) => a.start - b.start);
  }

  /** A page batch as the wire and the store have it (runs, zero bits, non-zero pages). */
  writePages(runs: ArrayLike<number>, zeroMap: Buffer | null, data: Buffer, pageSize: number): void {
    this.stub.writePages(Float64Array.from(runs), zeroMap, data, pageSize);
  }

  /** Pages the target no longer has: they read as a fresh mapping's (zeros, or the file's). */
  discard(runs: ArrayLike<number>, pageSize: number): void {
    for (let i = 0; i + 1 < runs.length; i += 2) {
      const s = runs[i];
      const e = s + runs[i + 1] * pageSize;
      for (const m of this.mappings) {
        const lo = Math.max(s, m.start);
        const hi = Math.min(e, m.end);
        if (lo >= hi || m.key.startsWith('file:s')) continue;
        // Shared anonymous memory keeps its pages through MADV_DONTNEED: punch them out.
        const advice = m.key === 'shm' ? K.MADV_REMOVE : K.MADV_DONTNEED;
        this.r.call(this.pid, `madvise at ${hex(lo)}`, K.SYS.madvise, lo, hi - lo, advice);
      }
    }
  }

  /**
   * The image's pages (of `only`, when given) written in, FILL_CHUNK at a time, double-buffered:
   * the next piece is read from the image (in the thread pool) while this one is written into the
   * process, since reading and writing each take about half of a restore's time.
   */
  async fill(memory: MemorySource, only?: readonly Range[]): Promise<void> {
    const pieces: Range[] = [];
    for (const v of memory.vmas) {
      if (v.kind === 'special') continue;
      for (const run of v.data) {
        for (const [s, e] of only ? intersect(run, only) : [run]) for (let at = s; at < e; at += FILL_CHUNK) pieces.push([at, Math.min(FILL_CHUNK, e - at)]);
      }
    }
    const bufs = [Buffer.allocUnsafe(FILL_CHUNK), Buffer.allocUnsafe(FILL_CHUNK)];
    const readPiece = (i: number): Promise<void> => Promise.resolve(memory.read(pieces[i][0], pieces[i][1], bufs[i % 2].subarray(0, pieces[i][1])));
    let reading = pieces.length > 0 ? readPiece(0) : null;
    for (let i = 0; i < pieces.length; i++) {
      await reading;
      reading = i + 1 < pieces.length ? readPiece(i + 1) : null;
      // If the write fails, the read in flight must still settle before its buffer goes.
      try {
        this.stub.writeMemory(pieces[i][0], bufs[i % 2].subarray(0, pieces[i][1]));
      } catch (e) {
        await reading?.catch(() => undefined);
        throw e;
      }
    }
    if (only) this.stale = [];
  }

  /** Every mapping to its VMA's protection. */
  protect(vmas: readonly VmaImage[]): void {
    for (const v of vmas) {
      if (v.kind === 'special') continue;
      for (const m of this.mappings) {
        const lo = Math.max(m.start, v.start);
        const hi = Math.min(m.end, v.end);
        if (lo >= hi || m.prot === v.prot) continue;
        // Each mapping lies inside one VMA (applyLayout makes them so).
        this.r.call(this.pid, `mprotect at ${hex(lo)}`, K.SYS.mprotect, lo, hi - lo, v.prot);
        m.prot = v.prot;
      }
    }
  }

  kill(): void {
    this.stub.kill();
  }

  // ---------------------------------------------------------------- internals

  private map(v: VmaImage, s: number, e: number, prot: number, fds: Map<string, number>, stats: Map<string, FileStat>): void {
    const len = e - s;
    if (v.kind !== 'file') {
      const flags = (v.kind === 'shared-anon' ? K.MAP_SHARED : K.MAP_PRIVATE) | K.MAP_ANONYMOUS | K.MAP_FIXED | (v.growsDown ? K.MAP_GROWSDOWN : 0);
      this.r.call(this.pid, `mmap at ${hex(s)}`, K.SYS.mmap, s, len, prot, flags, -1, 0);
      return;
    }
    const f = v.file!;
    const writable = v.shared && (v.prot & K.PROT_WRITE) !== 0;
    const key = `${writable ? 'w' : 'r'}:${f.path}`;
    let fd = fds.get(key);
    if (fd === undefined) {
      fd = this.r.open(f.path, writable ? K.O_RDWR : K.O_RDONLY);
      fds.set(key, fd);
      // The file the stub opened must be the one looked at (no swap in between).
      const st = fs.statSync(`/proc/${this.pid}/fd/${fd}`, { bigint: true });
      const want = stats.get(f.path)!;
      if (st.ino !== want.ino || st.dev !== want.dev) this.fail(`mapped file ${f.path} was replaced during the restore`);
    }
    const flags = (v.shared ? K.MAP_SHARED : K.MAP_PRIVATE) | K.MAP_FIXED;
    this.r.call(this.pid, `mmap of ${f.path} at ${hex(s)}`, K.SYS.mmap, s, len, prot, flags, fd, f.offset + (s - v.start));
  }

  /** The identity of a file to map: the checked one when given, else what the path names now. */
  private fileStat(path: string, stats: Map<string, FileStat>, checked?: Map<string, FileStat>): FileStat {
    let st = stats.get(path) ?? checked?.get(path);
    if (!st) {
      try {
        const s = fs.statSync(path, { bigint: true });
        st = { dev: s.dev, ino: s.ino };
      } catch (e) {
        return this.fail(`mapped file ${path} cannot be opened: ${(e as Error).message}`);
      }
    }
    stats.set(path, st);
    return st;
  }

  /** The scratch area and the vDSO mappings out of the way of `vmas` (the scratch also of their vDSO's place). */
  private keepClear(vmas: readonly VmaImage[]): void {
    const hits = (a: { start: number; end: number }, list: ReadonlyArray<{ start: number; end: number }>): boolean =>
      list.some((x) => a.start < x.end && x.start < a.end);
    const mapped = vmas.filter((v) => v.kind !== 'special');
    if (this.specials.some((s) => hits(s, mapped))) this.parkSpecials(vmas);
    const scratch = { start: this.r.scratchAddr, end: this.r.scratchAddr + SCRATCH_SIZE };
    if (hits(scratch, vmas)) {
      this.r.call(this.pid, 'munmap of the scratch area', K.SYS.munmap, scratch.start, SCRATCH_SIZE);
      this.r.mapScratch(this.findHole([...vmas, ...this.mappings, ...this.specials], SCRATCH_SIZE));
    }
  }

  /** All vDSO mappings together to a free area away from `avoid`. */
  private parkSpecials(avoid: ReadonlyArray<{ start: number; end: number }>): void {
    const lo = Math.min(...this.specials.map((h) => h.start));
    const span = Math.max(...this.specials.map((h) => h.end)) - lo;
    const scratch = { start: this.r.scratchAddr, end: this.r.scratchAddr + SCRATCH_SIZE };
    const to = this.findHole([...avoid, ...this.specials, ...this.mappings, scratch], span);
    for (const h of [...this.specials]) this.moveSpecial(h.name, to + h.start - lo);
  }

  private moveSpecial(name: string, to: number): void {
    const c = this.specials.find((s) => s.name === name)!;
    if (c.start === to) return;
    const len = c.end - c.start;
    this.r.call(this.pid, `mremap of ${name}`, K.SYS.mremap, c.start, len, len, K.MREMAP_MAYMOVE | K.MREMAP_FIXED, to);
    if (name === '[vdso]') this.stub.setGadget(this.stub.gadget() - c.start + to);
    c.start = to;
    c.end = to + len;
  }

  /** A free, page-aligned range of `size` bytes at least 16 MiB away from every given range. */
  private findHole(ranges: ReadonlyArray<{ start: number; end: number }>, size: number): number {
    const gap = 16 << 20;
    for (let at = 0x100000000; at + size < K.TASK_SIZE; at += 0x40000000) {
      if (ranges.every((x) => at + size + gap <= x.start || x.end + gap <= at)) return at;
    }
    return this.fail('no free address range for the restore scratch area');
  }
}

/** What backs a VMA's pages: equal keys at one address keep the pages already written there. */
function backingKey(v: VmaImage, st?: FileStat): string {
  if (v.kind === 'anon') return v.growsDown ? 'stack' : 'anon';
  if (v.kind === 'shared-anon') return 'shm';
  const f = v.file!;
  return `file:${v.shared ? 's' : 'p'}:${f.offset - v.start}:${st!.dev}:${st!.ino}:${f.path}`;
}

/** Writable for the page writes to come, except what cannot be: a read-only shared file mapping. */
function writableProt(v: VmaImage): number {
  return v.kind === 'file' && v.shared && (v.prot & K.PROT_WRITE) === 0 ? v.prot : v.prot | K.PROT_READ | K.PROT_WRITE;
}

function subtract(list: Range[], lo: number, hi: number): Range[] {
  const out: Range[] = [];
  for (const [s, e] of list) {
    if (hi <= s || e <= lo) out.push([s, e]);
    else {
      if (s < lo) out.push([s, lo]);
      if (hi < e) out.push([hi, e]);
    }
  }
  return out;
}

/** The parts of `run` inside `list` (which may overlap itself), in order and without overlaps. */
function intersect(run: Range, list: readonly Range[]): Range[] {
  const merged: Range[] = [];
  for (const [s, e] of [...list].sort((a, b) => a[0] - b[0])) {
    const last = merged[merged.length - 1];
    if (last && s <= last[1]) last[1] = Math.max(last[1], e);
    else merged.push([s, e]);
  }
  const out: Range[] = [];
  for (const [s, e] of merged) {
    const lo = Math.max(s, run[0]);
    const hi = Math.min(e, run[1]);
    if (lo < hi) out.push([lo, hi]);
  }
  return out.sort((a, b) => a[0] - b[0]);
}

function readMaps(pid: number): Place[] {
  return fs
    .readFileSync(`/proc/${pid}/maps`, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const m = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$/.exec(l);
      if (!m) throw new Error(`cannot parse /proc/${pid}/maps line ${JSON.stringify(l)}`);
      return { start: parseInt(m[1], 16), end: parseInt(m[2], 16), name: m[3] };
    });
}
