// The target's file descriptor table, read from /proc/PID/fd and /proc/PID/fdinfo (and, for
// pipes and sockets, from pidfd_getfd copies: native/fd_inspect.h), classified into what a
// restore can recreate (image/fd-state.ts) and what it cannot, named for the user.
// Two uses: the restorability check at the start of a migration (`withContents` false: nothing
// is read that a running process could be changing) and the capture at the freeze (true: the
// bytes waiting in pipes and the content of memfds, taken while nothing runs).

import * as fs from 'node:fs';
import type { FdState, EpollWatch } from '../../image/fd-state';
import { peekPipe, socketFacts } from '../../native';

/** A memfd's content travels in the image's state, not with the pages: keep it small. */
export const MAX_MEMFD_BYTES = 16 << 20;

/** One fd that cannot be restored, and why, in words a user can act on. */
export interface FdRefusal {
  fd: number;
  what: string;
  why: string;
}

/** "fd 7 (anon_inode:inotify): inotify watches are not restored": how a refusal is told. */
export const describeRefusal = (r: FdRefusal): string => `fd ${r.fd} (${r.what}): ${r.why}`;

export interface FdTable {
  files: FdState[];
  refusals: FdRefusal[];
}

export interface FdTableOptions {
  /** Read pipe bytes and memfd contents (only while the target is frozen). */
  withContents: boolean;
  /** Connected sockets are restored as sockets whose peer has gone instead of refused. */
  dropConnections: boolean;
}

const AF_INET = 2;
const AF_INET6 = 10;
const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_DGRAM = 2;
const SOCK_SEQPACKET = 5;

/** Anonymous-inode kinds a restore cannot recreate, with the reason shown to the user. */
const UNSUPPORTED_ANON: Record<string, string> = {
  inotify: 'inotify watches are not restored',
  '[fanotify]': 'fanotify marks are not restored',
  '[io_uring]': 'io_uring rings are not restored',
  '[userfaultfd]': 'a userfaultfd of its own is not restored',
  '[pidfd]': 'pidfds are not restored (the pids they name differ at the destination)',
  '[perf_event]': 'perf events are not restored',
};

/** Fields of /proc/PID/fdinfo/N ("pos", "flags", "eventfd-count", ...), first value each. */
function fdinfo(pid: number, fd: number): { fields: Map<string, string>; text: string } {
  const text = fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
  const fields = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^([\w -]+):\s*(.*)$/.exec(line);
    if (m && !fields.has(m[1])) fields.set(m[1], m[2].trim());
  }
  return { fields, text };
}

const timespecNs = (s: string | undefined): string => {
  const m = /\((\d+),\s*(\d+)\)/.exec(s ?? '');
  return m ? (BigInt(m[1]) * 1_000_000_000n + BigInt(m[2])).toString() : '0';
};

/** Inodes of every pipe end that processes other than `pid` hold (for "pipes to other processes"). */
function pipesHeldElsewhere(pid: number, inodes: Set<number>): Set<number> {
  const out = new Set<number>();
  if (inodes.size === 0) return out;
  const tgid = String(pid);
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p) || p === tgid) continue;
    let fds: string[];
    try {
      fds = fs.readdirSync(`/proc/${p}/fd`);
    } catch {
      continue; // gone, or a kernel thread
    }
    for (const f of fds) {
      try {
        const m = /^pipe:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${p}/fd/${f}`));
        if (m && inodes.has(Number(m[1]))) out.add(Number(m[1]));
      } catch {
        // closed meanwhile
      }
    }
  }
  return out;
}

function epollWatches(text: string): EpollWatch[] {
  const out: EpollWatch[] = [];
  for (const m of text.matchAll(/^tfd:\s*(\d+)\s+events:\s*([0-9a-f]+)\s+data:\s*([0-9a-f]+)/gm)) {
    out.push({ tfd: Number(m[1]), events: parseInt(m[2], 16), data: BigInt(`0x${m[3]}`).toString() });
  }
  return out;
}

function socketState(pid: number, fd: number, flags: number, link: string, opts: FdTableOptions): FdState | string {
  const s = socketFacts(pid, fd);
  const known = s.family === AF_INET || s.family === AF_INET6 || s.family === AF_UNIX;
  if (!known) return `a socket of address family ${s.family} (only TCP, UDP and Unix sockets are restored)`;
  if (![SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET].includes(s.type)) return `a socket of type ${s.type} (raw and packet sockets are not restored)`;
  const dropped = s.connected || (s.type !== SOCK_DGRAM && !s.listening && s.localAddress.length > 2 && s.family !== AF_UNIX);
  if (dropped && !opts.dropConnections)
    return `a connected socket (${link}): connections cannot move; --drop-connections restores it as one whose peer has gone`;
  return {
    kind: 'socket',
    fd,
    flags,
    family: s.family,
    type: s.type,
    protocol: s.protocol,
    address: s.localAddress.toString('base64'),
    listening: s.listening,
    backlog: s.backlog,
    reuseAddr: s.reuseAddr,
    reusePort: s.reusePort,
    dropped,
  };
}

/** Reads and classifies every fd of `pid`. */
export function readFdTable(pid: number, opts: FdTableOptions): FdTable {
  const files: FdState[] = [];
  const refusals: FdRefusal[] = [];
  const pipeEnds = new Map<number, { read: number; write: number }>();
  const fds = fs
    .readdirSync(`/proc/${pid}/fd`)
    .map(Number)
    .sort((a, b) => a - b);
  for (const fd of fds) {
    let link: string;
    let info: ReturnType<typeof fdinfo>;
    try {
      link = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
      info = fdinfo(pid, fd);
    } catch {
      continue; // closed while we looked (the target runs during the check)
    }
    const flags = parseInt(info.fields.get('flags') ?? '0', 8);
    const pos = Number(info.fields.get('pos') ?? 0);
    const refuse = (why: string) => refusals.push({ fd, what: link, why });
    if (fd <= 2) {
      files.push({ kind: 'stdio', fd, flags, was: link });
      continue;
    }
    const anon = /^anon_inode:(.*)$/.exec(link);
    if (anon) {
      const name = anon[1];
      const f = info.fields;
      if (name === '[eventfd]')
        files.push({ kind: 'eventfd', fd, flags, count: BigInt(f.get('eventfd-count') ?? '0').toString(), semaphore: f.get('eventfd-semaphore') === '1' });
      else if (name === '[eventpoll]') files.push({ kind: 'epoll', fd, flags, watches: epollWatches(info.text) });
      else if (name === '[timerfd]') {
        files.push({
          kind: 'timerfd',
          fd,
          flags,
          clockid: Number(f.get('clockid') ?? 0),
          valueNs: timespecNs(f.get('it_value')),
          intervalNs: timespecNs(f.get('it_interval')),
        });
      } else if (name === '[signalfd]') files.push({ kind: 'signalfd', fd, flags, mask: BigInt(`0x${f.get('sigmask') ?? '0'}`).toString() });
      else refuse(UNSUPPORTED_ANON[name] ?? `${name} descriptors are not restored`);
      continue;
    }
    const pipe = /^pipe:\[(\d+)\]$/.exec(link);
    if (pipe) {
      const inode = Number(pipe[1]);
      const end = (flags & 3) === 0 ? 'read' : 'write';
      const ends = pipeEnds.get(inode) ?? { read: 0, write: 0 };
      ends[end]++;
      pipeEnds.set(inode, ends);
      const data = end === 'read' && opts.withContents ? peekPipe(pid, fd).toString('base64') : '';
      files.push({ kind: 'pipe', fd, flags, pipe: inode, end, data });
      continue;
    }
    if (/^socket:\[\d+\]$/.test(link)) {
      const s = socketState(pid, fd, flags, link, opts);
      if (typeof s === 'string') refuse(s);
      else files.push(s);
      continue;
    }
    const memfd = /^\/memfd:(.*?)(?: \(deleted\))?$/.exec(link);
    if (memfd) {
      const st = fs.statSync(`/proc/${pid}/fd/${fd}`);
      if (st.size > MAX_MEMFD_BYTES) refuse(`a memfd of ${st.size} bytes (at most ${MAX_MEMFD_BYTES} are restored)`);
      else
        files.push({
          kind: 'memfd',
          fd,
          flags,
          name: memfd[1],
          offset: pos,
          data: opts.withContents ? fs.readFileSync(`/proc/${pid}/fd/${fd}`).toString('base64') : '',
        });
      continue;
    }
    if (link.endsWith(' (deleted)')) {
      refuse('a file deleted since it was opened cannot be reopened at the destination');
      continue;
    }
    let st: fs.BigIntStats;
    try {
      st = fs.statSync(`/proc/${pid}/fd/${fd}`, { bigint: true });
    } catch (e) {
      refuse(`cannot stat it: ${(e as Error).message}`);
      continue;
    }
    if (st.isFile()) {
      files.push({
        kind: 'file',
        fd,
        flags,
        path: link,
        offset: pos,
        inode: Number(st.ino),
        dev: Number(st.dev),
        size: Number(st.size),
        mtimeNs: st.mtimeNs.toString(),
      });
    } else if (st.isCharacterDevice()) files.push({ kind: 'chardev', fd, flags, path: link, rdev: Number(st.rdev) });
    else if (st.isDirectory()) refuse('open directories are not restored');
    else refuse('this kind of file is not restored');
  }
  // A pipe is restored only when the process holds both of its ends, and nobody else does.
  const elsewhere = pipesHeldElsewhere(pid, new Set(pipeEnds.keys()));
  for (const [inode, ends] of pipeEnds) {
    const why =
      ends.read === 0 || ends.write === 0
        ? `the process holds only the ${ends.read ? 'read' : 'write'} end of this pipe: a pipe to another process cannot move`
        : elsewhere.has(inode)
          ? 'another process also holds this pipe: a pipe to another process cannot move'
          : null;
    if (!why) continue;
    for (const f of files) if (f.kind === 'pipe' && f.pipe === inode) refusals.push({ fd: f.fd, what: `pipe:[${inode}]`, why });
  }
  const refused = new Set(refusals.map((r) => r.fd));
  // An epoll watching an fd we refuse, or a file no longer in the table, cannot be rebuilt.
  for (const f of files) {
    if (f.kind !== 'epoll') continue;
    for (const w of f.watches) {
      if (!files.some((x) => x.fd === w.tfd) || refused.has(w.tfd))
        refusals.push({ fd: f.fd, what: 'anon_inode:[eventpoll]', why: `it watches fd ${w.tfd}, which cannot be restored` });
    }
  }
  return { files: files.filter((f) => !refused.has(f.fd)), refusals: refusals.sort((a, b) => a.fd - b.fd) };
}
