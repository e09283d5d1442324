// One virtual memory area, as the sender reads it from /proc/PID/maps and as it travels in the
// protocol (proto Vma). Addresses are JS numbers: user space addresses fit in 2^53.

export interface Vma {
  start: number;
  end: number;
  /** As in /proc/PID/maps: "rw-p", "r--s", ... */
  perms: string;
  /** File offset of `start` (bytes). */
  offset: number;
  /** Pathname column ("" for anonymous; "[heap]", "[stack]", "/usr/lib/...", "/memfd:x (deleted)"). */
  path: string;
  /** True when `path` names a file whose content backs pages the process never wrote. */
  fileBacked: boolean;
  inode: number;
  /** "major:minor" as in /proc/PID/maps (hex digits). */
  dev: string;
}

export const vmaPages = (v: Vma, pageSize: number): number => (v.end - v.start) / pageSize;

/** "7f12a000-7f12c000" as in /proc/PID/maps (used in file names and messages). */
export const vmaRangeName = (start: number, end: number): string => `${start.toString(16)}-${end.toString(16)}`;
