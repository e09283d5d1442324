// The memory of a committed image as a restore consumes it: the list of VMAs to recreate and a
// way to read the bytes of the pages that hold data. Kept apart from the image store so that the
// restore does not depend on how (or where) pages are stored.
//
// Addresses are JS numbers (user space < 2^47 fits in 2^53), as in common/vma.ts.

export type VmaKind =
  /** MAP_PRIVATE|MAP_ANONYMOUS (also [heap], [stack], thread stacks). */
  | 'anon'
  /** MAP_SHARED|MAP_ANONYMOUS (shows as /dev/zero (deleted) in maps); one process only. */
  | 'shared-anon'
  /** A file mapping (private or shared): mapped again from the file by path. */
  | 'file'
  /** [vvar], [vvar_vclock], [vdso]: the kernel's own; the restore moves the new ones here. */
  | 'special';

export interface FileIdentity {
  path: string;
  /** File offset of the VMA's start, bytes. */
  offset: number;
  /** stat() of the file at capture: a restore refuses a file that differs (unless allowed). */
  dev: bigint;
  inode: bigint;
  size: bigint;
  mtimeNs: bigint;
}

export interface VmaImage {
  start: number;
  end: number;
  /** PROT_READ | PROT_WRITE | PROT_EXEC bits (1, 2, 4). */
  prot: number;
  shared: boolean;
  kind: VmaKind;
  /** [stack]: mapped MAP_GROWSDOWN so that it can grow on. */
  growsDown: boolean;
  /** Name for 'special' ("[vdso]", ...), the path column otherwise ("" for anonymous). */
  name: string;
  file?: FileIdentity;
  /**
   * Page-aligned [start, end) runs inside the VMA whose bytes come from read(): every populated
   * page of anonymous memory; of a private file mapping only the pages the process wrote (its
   * private copies; the others come from the file); none for shared file mappings.
   */
  data: Array<[number, number]>;
}

export interface MemorySource {
  readonly vmas: readonly VmaImage[];
  /** Fill `into` (length = len) with the image's bytes at [addr, addr + len), inside one data run. */
  read(addr: number, len: number, into: Buffer): void | Promise<void>;
}

export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const PROT_EXEC = 4;

/** "r-xp" -> PROT_READ | PROT_EXEC. */
export function protFromPerms(perms: string): number {
  return (perms[0] === 'r' ? PROT_READ : 0) | (perms[1] === 'w' ? PROT_WRITE : 0) | (perms[2] === 'x' ? PROT_EXEC : 0);
}
