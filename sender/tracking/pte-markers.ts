// Telling uffd-wp pte markers from pages that really hold data, through /proc/PID/pagemap.
//
// Once armed, every unpopulated page of a registered VMA carries a pte marker (WP_UNPOPULATED),
// and PAGEMAP_SCAN reports it PAGE_IS_SWAPPED, exactly like a page swapped out or under migration.
// Seen on 6.18: a private file page the process had copied (written), write-protected, then
// MADV_DONTNEED: the copy is gone (the process reads the file again) and a marker is left, with
// no PAGE_IS_WRITTEN. /proc/PID/pagemap shows the swap type of a non-present entry (bits 0-4, root
// only): pte markers use the last type, SWP_PTE_MARKER = 31 (MAX_SWAPFILES_SHIFT = 5).

import * as fs from 'node:fs';
import { appendPage } from '../../common/page-runs';

const PM_SWAP = 1n << 62n;
const SWAP_TYPE_MASK = 0x1fn;
const SWP_PTE_MARKER = 31n;
/** Entries read per pread (512 KiB). */
const CHUNK = 65536;

export class PagemapReader {
  private fd: number | null = null;
  private readonly buf = Buffer.allocUnsafe(CHUNK * 8);

  constructor(
    readonly pid: number,
    readonly pageSize: number,
  ) {}

  /** (start, pages) runs of [start, end) whose entries are not pte markers (data, swap, migration). */
  dataRuns(start: number, end: number): number[] {
    const fd = (this.fd ??= fs.openSync(`/proc/${this.pid}/pagemap`, 'r'));
    const ps = this.pageSize;
    const out: number[] = [];
    for (let page = start / ps; page < end / ps;) {
      const n = Math.min(CHUNK, end / ps - page);
      const got = fs.readSync(fd, this.buf, 0, n * 8, page * 8) / 8;
      if (got === 0) break; // beyond the address space: nothing there
      for (let i = 0; i < got; i++) {
        const e = this.buf.readBigUInt64LE(i * 8);
        if ((e & PM_SWAP) !== 0n && (e & SWAP_TYPE_MASK) === SWP_PTE_MARKER) continue;
        appendPage(out, (page + i) * ps, ps);
      }
      page += got;
    }
    return out;
  }

  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }
}
