// The file descriptor table of a restorable image: for each fd, its kind and what it takes to
// recreate it (docs/design.md, Restore). Captured by the sender at the freeze
// (sender/capture/fd-table.ts), kept in the committed image, recreated by receiver/restore/.
// Numbers that can pass 2^53 (eventfd counts, epoll data, masks, nanoseconds) are decimal strings;
// byte contents are base64.

/** Fields every kind has. `flags` are the open flags as /proc/PID/fdinfo shows them (O_CLOEXEC
 *  included: it belongs to the fd, the rest to the open file). */
interface FdBase {
  fd: number;
  flags: number;
}

export type FdState =
  /** A regular file, reopened by path at its offset; refused at restore if it changed. */
  | (FdBase & { kind: 'file'; path: string; offset: number; inode: number; dev: number; size: number; mtimeNs: string })
  /** A character device (/dev/null, /dev/zero, /dev/urandom, ...), reopened by path. */
  | (FdBase & { kind: 'chardev'; path: string; rdev: number })
  /** fd 0, 1 or 2: the source's terminal or pipes do not exist at the destination; restored as
   *  the restore's --stdio file. `was` says what it was, for messages. */
  | (FdBase & { kind: 'stdio'; was: string })
  /** One end of a pipe whose both ends the process holds; `data` (read end only) is what was
   *  unread at the freeze, written back into the new pipe. */
  | (FdBase & { kind: 'pipe'; pipe: number; end: 'read' | 'write'; data: string })
  | (FdBase & { kind: 'eventfd'; count: string; semaphore: boolean })
  /** Registrations refer to fds of the same table, recreated before the epoll. */
  | (FdBase & { kind: 'epoll'; watches: EpollWatch[] })
  /** Time left and interval in nanoseconds, as they were at the freeze. */
  | (FdBase & { kind: 'timerfd'; clockid: number; valueNs: string; intervalNs: string })
  | (FdBase & { kind: 'signalfd'; mask: string })
  /** A memfd not (only) seen through a mapping: its content, its name and the fd's offset. */
  | (FdBase & { kind: 'memfd'; name: string; offset: number; data: string })
  /** A socket: listening or bound (recreated bound and listening), or, when the migration said
   *  --drop-connections, a connected one (recreated as a socket whose peer has gone). */
  | (FdBase & {
      kind: 'socket';
      family: number;
      type: number;
      protocol: number;
      /** Raw sockaddr bytes (base64) of getsockname. */
      address: string;
      listening: boolean;
      backlog: number;
      reuseAddr: boolean;
      reusePort: boolean;
      /** Was connected at the source; restored peerless. */
      dropped: boolean;
    });

export type FdKind = FdState['kind'];

export interface EpollWatch {
  tfd: number;
  events: number;
  data: string;
}

const KINDS: readonly FdKind[] = ['file', 'chardev', 'stdio', 'pipe', 'eventfd', 'epoll', 'timerfd', 'signalfd', 'memfd', 'socket'];
/** Bounds on hostile input: no process has more fds than the kernel's nr_open (1 Mi by default). */
const MAX_FDS = 1 << 20;
const MAX_WATCHES = 1 << 16;
const MAX_DATA_BASE64 = 96 << 20;

/** Checks decoded JSON against FdState; `fail` throws the caller's error with the message. */
export function checkFdStates(raw: unknown, fail: (message: string) => never): FdState[] {
  if (!Array.isArray(raw)) fail('files: not a list');
  if (raw.length > MAX_FDS) fail(`files: ${raw.length} entries, more than ${MAX_FDS}`);
  const seen = new Set<number>();
  return raw.map((x, i) => {
    const where = `files[${i}]`;
    if (typeof x !== 'object' || x === null) fail(`${where}: not an object`);
    const o = x as Record<string, unknown>;
    const int = (k: string, min = 0, max = Number.MAX_SAFE_INTEGER): number => {
      const v = o[k];
      if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) fail(`${where}.${k}: not an integer in [${min}, ${max}]`);
      return v;
    };
    const str = (k: string, max = 4096): string => {
      const v = o[k];
      if (typeof v !== 'string' || v.length > max) fail(`${where}.${k}: not a string of at most ${max} characters`);
      return v;
    };
    const dec = (k: string): string => {
      const v = str(k, 40);
      if (!/^-?\d+$/.test(v)) fail(`${where}.${k}: not a decimal integer`);
      return v;
    };
    const bool = (k: string): boolean => {
      if (typeof o[k] !== 'boolean') fail(`${where}.${k}: not true or false`);
      return o[k] as boolean;
    };
    const kind = o.kind as FdKind;
    if (!KINDS.includes(kind)) fail(`${where}.kind: ${JSON.stringify(o.kind)} is not one of ${KINDS.join(', ')}`);
    const base = { fd: int('fd', 0, MAX_FDS), flags: int('flags', 0, 0o77777777) };
    if (seen.has(base.fd)) fail(`${where}: fd ${base.fd} appears twice`);
    seen.add(base.fd);
    switch (kind) {
      case 'file':
        return { ...base, kind, path: str('path'), offset: int('offset'), inode: int('inode'), dev: int('dev'), size: int('size'), mtimeNs: dec('mtimeNs') };
      case 'chardev':
        return { ...base, kind, path: str('path'), rdev: int('rdev') };
      case 'stdio':
        return { ...base, kind, was: str('was') };
      case 'pipe': {
        const end = o.end;
        if (end !== 'read' && end !== 'write') fail(`${where}.end: not read or write`);
        return { ...base, kind, pipe: int('pipe'), end, data: str('data', MAX_DATA_BASE64) };
      }
      case 'eventfd':
        return { ...base, kind, count: dec('count'), semaphore: bool('semaphore') };
      case 'epoll': {
        const w = o.watches;
        if (!Array.isArray(w) || w.length > MAX_WATCHES) fail(`${where}.watches: not a list of at most ${MAX_WATCHES}`);
        const watches = w.map((e: unknown, j: number) => {
          const r = e as Record<string, unknown>;
          const ok =
            typeof r === 'object' && r !== null && Number.isInteger(r.tfd) && Number.isInteger(r.events) && typeof r.data === 'string' && /^\d+$/.test(r.data);
          if (!ok) fail(`${where}.watches[${j}]: not {tfd, events, data}`);
          return { tfd: r.tfd as number, events: r.events as number, data: r.data as string };
        });
        return { ...base, kind, watches };
      }
      case 'timerfd':
        return { ...base, kind, clockid: int('clockid', 0, 15), valueNs: dec('valueNs'), intervalNs: dec('intervalNs') };
      case 'signalfd':
        return { ...base, kind, mask: dec('mask') };
      case 'memfd':
        return { ...base, kind, name: str('name', 255), offset: int('offset'), data: str('data', MAX_DATA_BASE64) };
      case 'socket':
        return {
          ...base,
          kind,
          family: int('family', 0, 64),
          type: int('type', 0, 16),
          protocol: int('protocol', 0, 1 << 16),
          address: str('address', 256),
          listening: bool('listening'),
          backlog: int('backlog', -1, 1 << 20),
          reuseAddr: bool('reuseAddr'),
          reusePort: bool('reusePort'),
          dropped: bool('dropped'),
        };
    }
  });
}
