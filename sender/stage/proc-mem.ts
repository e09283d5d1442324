// Fallback reader through /proc/PID/mem for the ranges process_vm_readv refuses.
//
// process_vm_readv pins pages without FOLL_FORCE, so it fails (EFAULT) on VMAs the process itself
// may not read: PROT_NONE areas holding data written before an mprotect, execute-only code.
// /proc/PID/mem reads with FOLL_FORCE (we may ptrace the target) and gets those; a range that is
// really unmapped fails there too (EIO) and is reported unreadable.

import * as fs from 'node:fs';

export class ProcMem {
  private handle: number | null = null;

  constructor(readonly pid: number) {}

  /**
   * Read whole pages of [addr, addr + pages * pageSize) into `into` at `offset`. Returns a flag per
   * page (1 = read), pages that cannot be read are zero-filled.
   */
  readPages(addr: number, pages: number, pageSize: number, into: Buffer, offset: number): Uint8Array {
    const ok = new Uint8Array(pages);
    const fd = this.open();
    for (let i = 0; i < pages; i++) {
      const at = offset + i * pageSize;
      let got = 0;
      try {
        while (got < pageSize) {
          const n = fs.readSync(fd, into, at + got, pageSize - got, addr + i * pageSize + got);
          if (n === 0) break;
          got += n;
        }
      } catch {
        // EIO: unmapped (or VM_IO) page
      }
      if (got === pageSize) ok[i] = 1;
      else into.fill(0, at, at + pageSize);
    }
    return ok;
  }

  close(): void {
    if (this.handle !== null) fs.closeSync(this.handle);
    this.handle = null;
  }

  /** The descriptor, opened on first use (native stagePages reads through it too); -1 when the
   *  target is gone or not ours to read: the caller reports its pages unreadable then. */
  fd(): number {
    try {
      return this.open();
    } catch {
      return -1;
    }
  }

  private open(): number {
    return (this.handle ??= fs.openSync(`/proc/${this.pid}/mem`, 'r'));
  }
}
