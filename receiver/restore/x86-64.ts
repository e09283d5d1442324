// x86_64 system call numbers and kernel constants the restore injects (arch/x86/entry/syscalls/
// syscall_64.tbl, include/uapi/...). Kept here, next to their only user, rather than in the addon:
// the orchestrator reads as the list of syscalls it runs.

export const SYS = {
  mmap: 9,
  mprotect: 10,
  munmap: 11,
  rt_sigaction: 13,
  mremap: 25,
  madvise: 28,
  close: 3,
  chdir: 80,
  umask: 95,
  setresuid: 117,
  setresgid: 119,
  setfsuid: 122,
  setfsgid: 123,
  setgroups: 116,
  capset: 126,
  sigaltstack: 131,
  personality: 135,
  prctl: 157,
  set_tid_address: 218,
  openat: 257,
  set_robust_list: 273,
  prlimit64: 302,
  rseq: 334,
  // file descriptors
  write: 1,
  lseek: 8,
  socket: 41,
  bind: 49,
  listen: 50,
  socketpair: 53,
  setsockopt: 54,
  fcntl: 72,
  epoll_ctl: 233,
  unlinkat: 263,
  timerfd_create: 283,
  timerfd_settime: 286,
  signalfd4: 289,
  eventfd2: 290,
  epoll_create1: 291,
  dup3: 292,
  pipe2: 293,
  memfd_create: 319,
  close_range: 436,
} as const;

export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_FIXED = 0x10;
export const MAP_ANONYMOUS = 0x20;
export const MAP_GROWSDOWN = 0x100;
export const MAP_FIXED_NOREPLACE = 0x100000;
export const MADV_DONTNEED = 4;
export const MADV_REMOVE = 9;
export const MREMAP_MAYMOVE = 1;
export const MREMAP_FIXED = 2;
export const O_RDONLY = 0;
export const O_RDWR = 2;
export const O_CLOEXEC = 0o2000000;
export const O_ACCMODE = 0o3;
export const O_CREAT = 0o100;
export const O_APPEND = 0o2000;
export const O_NONBLOCK = 0o4000;
/** The open-file status flags F_SETFL changes (fs/fcntl.c SETFL_MASK). */
export const SETFL_MASK = O_APPEND | O_NONBLOCK | 0o20000 /* O_ASYNC */ | 0o40000 /* O_DIRECT */ | 0o1000000; /* O_NOATIME */
export const F_DUPFD_CLOEXEC = 1030;
export const F_SETFL = 4;
export const F_SETFD = 2;
export const FD_CLOEXEC = 1;
export const F_SETPIPE_SZ = 1031;
export const SEEK_SET = 0;
export const EFD_SEMAPHORE = 1;
export const MFD_CLOEXEC = 1;
export const AF_UNIX = 1;
export const SOCK_STREAM = 1;
export const SOL_SOCKET = 1;
export const SO_REUSEADDR = 2;
export const SO_REUSEPORT = 15;
export const EPOLL_CTL_ADD = 1;
export const SOMAXCONN = 4096;
export const AT_FDCWD = -100;

export const PR_SET_PDEATHSIG = 1;
export const PR_SET_DUMPABLE = 4;
export const PR_SET_KEEPCAPS = 8;
export const PR_SET_NAME = 15;
export const PR_CAPBSET_DROP = 24;
export const PR_SET_SECUREBITS = 28;
export const PR_SET_MM = 35;
export const PR_SET_MM_MAP = 14;
export const PR_SET_NO_NEW_PRIVS = 38;
export const PR_SET_THP_DISABLE = 41;
export const PR_CAP_AMBIENT = 47;
export const PR_CAP_AMBIENT_RAISE = 2;

export const SECBIT_KEEP_CAPS = 1 << 4;
export const _LINUX_CAPABILITY_VERSION_3 = 0x20080522;

export const SS_ONSTACK = 1;
export const SS_DISABLE = 2;
export const SS_AUTODISARM = 1 << 31;

export const SIGKILL = 9;
export const SIGSTOP = 19;

/** struct prctl_mm_map (include/uapi/linux/prctl.h). */
export const PRCTL_MM_MAP_SIZE = 104;
/** Highest user address + 1 with 4-level paging (47 bits, minus the guard page). */
export const TASK_SIZE = 0x7ffffffff000;
export const PAGE = 4096;
