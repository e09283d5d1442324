// The file descriptor table of a restored process (image/fd-state.ts), rebuilt inside the stub
// with injected system calls, each object at its own number with its flags:
//   1. the stub's own fds go (close_range);
//   2. in ascending fd order, every object is made (open, pipe2, eventfd2, timerfd_create,
//      signalfd4, memfd_create, socket) and moved to its number with dup3; the other end of a
//      pipe waits above every number the table uses until its turn;
//   3. the state that goes into an object once it exists: pipe bytes, memfd content and offset,
//      timer settings, listening;
//   4. epolls last, once every fd they watch is in place.
// Numbers are given in ascending order, so the lowest free fd a new object gets is never one a
// placed object holds, and dup3 never closes anything the table needs.

import * as fs from 'node:fs';
import type { FdState } from '../../image/fd-state';
import { hex, type Remote, SCRATCH_SIZE, u64s } from './remote';
import * as K from './x86-64';

export interface FdRestoreOptions {
  /** What fds 0-2 become (the source's terminal or pipes are not here). */
  stdio: string;
  /** Reopen regular files and character devices even when they were replaced since the capture. */
  allowChangedFiles: boolean;
}

type Fail = (message: string) => never;

/** Data written into the stub in pieces of at most this (inside the scratch area). */
const CHUNK = SCRATCH_SIZE / 2;

export function restoreFds(r: Remote, files: readonly FdState[], opts: FdRestoreOptions, fail: Fail): void {
  const pid = r.stub.pid;
  const call = (what: string, nr: number, ...args: Array<number | bigint>): number => Number(r.call(pid, what, nr, ...args));
  checkFiles(files, opts, fail);

  // 1. Nothing of the stub's.
  call('close_range', K.SYS.close_range, 0, 0xffffffff, 0);

  // 2. Every object at its number.
  const above = Math.max(2, ...files.map((f) => f.fd)) + 1;
  const waiting = new Map<number, number>(); // pipe inode -> where its other end waits
  const place = (made: number, f: FdState): void => {
    const cloexec = f.flags & K.O_CLOEXEC;
    if (made !== f.fd) {
      call(`dup3 to fd ${f.fd}`, K.SYS.dup3, made, f.fd, cloexec);
      call('close', K.SYS.close, made);
    } else call(`fcntl(F_SETFD) of fd ${f.fd}`, K.SYS.fcntl, made, K.F_SETFD, cloexec ? K.FD_CLOEXEC : 0);
  };
  const ordered = [...files].sort((a, b) => a.fd - b.fd);
  for (const f of ordered) {
    if (f.kind === 'epoll') continue;
    const status = f.flags & K.SETFL_MASK;
    const nonblock = f.flags & K.O_NONBLOCK;
    switch (f.kind) {
      case 'stdio':
        place(r.open(opts.stdio, K.O_RDWR | K.O_CREAT | K.O_APPEND), f);
        break;
      case 'file':
      case 'chardev': {
        const fd = r.open(f.path, f.flags & ~(K.O_CLOEXEC | K.O_CREAT | 0o1000 /* O_TRUNC */ | 0o200 /* O_EXCL */));
        if (f.kind === 'file') call(`lseek in ${f.path}`, K.SYS.lseek, fd, f.offset, K.SEEK_SET);
        place(fd, f);
        break;
      }
      case 'pipe': {
        const stashed = waiting.get(f.pipe);
        if (stashed !== undefined) {
          waiting.delete(f.pipe);
          place(stashed, f);
          break;
        }
        const ends = r.scratch(Buffer.alloc(8));
        call('pipe2', K.SYS.pipe2, ends, 0);
        const got = Buffer.alloc(8);
        r.stub.readMemory(ends, got);
        const [rd, wr] = [got.readInt32LE(0), got.readInt32LE(4)];
        const other = files.find((x) => x.kind === 'pipe' && x.pipe === f.pipe && x.fd !== f.fd);
        if (!other || other.kind !== 'pipe') fail(`fd ${f.fd}: the other end of pipe ${f.pipe} is not in the image`);
        const data = Buffer.from(((f.end === 'read' ? f : other) as Extract<FdState, { kind: 'pipe' }>).data, 'base64');
        if (data.length > 0) {
          call('fcntl(F_SETPIPE_SZ)', K.SYS.fcntl, wr, K.F_SETPIPE_SZ, Math.max(data.length, 4096));
          writeAll(r, wr, data, `the unread bytes of pipe ${f.pipe}`);
        }
        const [mine, theirs] = f.end === 'read' ? [rd, wr] : [wr, rd];
        waiting.set(f.pipe, call('fcntl(F_DUPFD_CLOEXEC)', K.SYS.fcntl, theirs, K.F_DUPFD_CLOEXEC, above));
        call('close', K.SYS.close, theirs);
        place(mine, f);
        break;
      }
      case 'eventfd': {
        // eventfd2 takes a 32-bit start value: the rest of a 64-bit count is written.
        const fd = call('eventfd2', K.SYS.eventfd2, 0, (f.semaphore ? K.EFD_SEMAPHORE : 0) | nonblock);
        if (BigInt(f.count) > 0n) writeAll(r, fd, u64s([BigInt(f.count)]), 'the eventfd count');
        place(fd, f);
        break;
      }
      case 'timerfd': {
        const fd = call(`timerfd_create(clock ${f.clockid})`, K.SYS.timerfd_create, f.clockid, nonblock);
        // fdinfo reports the time left as 0 when an expiry is due but its timer callback has not run
        // yet (a loaded machine): a periodic timer is then due now, not disarmed (it_value 0 would
        // disarm it, and the program's ticks would stop). A one-shot timer at 0 has expired.
        const value = BigInt(f.valueNs) > 0n ? BigInt(f.valueNs) : BigInt(f.intervalNs) > 0n ? 1n : 0n;
        if (value > 0n) {
          const ns = (v: bigint): bigint[] => [v / 1_000_000_000n, v % 1_000_000_000n];
          call('timerfd_settime', K.SYS.timerfd_settime, fd, 0, r.scratch(u64s([...ns(BigInt(f.intervalNs)), ...ns(value)])), 0);
        }
        place(fd, f);
        break;
      }
      case 'signalfd':
        place(call('signalfd4', K.SYS.signalfd4, -1, r.scratch(u64s([BigInt(f.mask)])), 8, nonblock), f);
        break;
      case 'memfd': {
        const fd = call(`memfd_create(${f.name})`, K.SYS.memfd_create, r.cstring(f.name), 0);
        writeAll(r, fd, Buffer.from(f.data, 'base64'), `the content of memfd ${f.name}`);
        call('lseek in a memfd', K.SYS.lseek, fd, f.offset, K.SEEK_SET);
        place(fd, f);
        break;
      }
      case 'socket':
        place(socketFor(r, f, call), f);
        break;
    }
    if (f.kind !== 'file' && f.kind !== 'chardev' && f.kind !== 'stdio' && status !== 0)
      call(`fcntl(F_SETFL) of fd ${f.fd}`, K.SYS.fcntl, f.fd, K.F_SETFL, status);
  }
  if (waiting.size > 0) fail(`pipe ${[...waiting.keys()][0]}: one end is missing from the image`);

  // 4. Epolls, once everything they watch exists.
  for (const f of ordered) {
    if (f.kind !== 'epoll') continue;
    const ep = call('epoll_create1', K.SYS.epoll_create1, 0);
    for (const w of f.watches) {
      const ev = Buffer.alloc(12); // struct epoll_event is packed on x86_64
      ev.writeUInt32LE(w.events >>> 0, 0);
      ev.writeBigUInt64LE(BigInt(w.data), 4);
      call(`epoll_ctl(ADD fd ${w.tfd}) of epoll fd ${f.fd}`, K.SYS.epoll_ctl, ep, K.EPOLL_CTL_ADD, w.tfd, r.scratch(ev));
    }
    place(ep, f);
  }
}

/** A listening or bound socket as it was, or (dropped) one end of a pair whose other end is gone. */
function socketFor(r: Remote, f: Extract<FdState, { kind: 'socket' }>, call: (what: string, nr: number, ...a: Array<number | bigint>) => number): number {
  const nonblock = f.flags & K.O_NONBLOCK;
  if (f.dropped) {
    // Reads see end-of-file and writes EPIPE: what a program sees when its peer disconnects.
    const pair = r.scratch(Buffer.alloc(8));
    call('socketpair', K.SYS.socketpair, K.AF_UNIX, K.SOCK_STREAM | nonblock, 0, pair);
    const got = Buffer.alloc(8);
    r.stub.readMemory(pair, got);
    call('close', K.SYS.close, got.readInt32LE(4));
    return got.readInt32LE(0);
  }
  const fd = call(`socket(family ${f.family}, type ${f.type})`, K.SYS.socket, f.family, f.type | nonblock, f.protocol);
  const one = (): number => r.scratch(u64s([1n]));
  if (f.reuseAddr) call('setsockopt(SO_REUSEADDR)', K.SYS.setsockopt, fd, K.SOL_SOCKET, K.SO_REUSEADDR, one(), 4);
  if (f.reusePort) call('setsockopt(SO_REUSEPORT)', K.SYS.setsockopt, fd, K.SOL_SOCKET, K.SO_REUSEPORT, one(), 4);
  const addr = Buffer.from(f.address, 'base64');
  const unixPath = f.family === K.AF_UNIX && addr.length > 2 && addr[2] !== 0 ? addr.subarray(2).toString('utf8').replace(/\0.*$/, '') : null;
  // A socket file left by the source (its process is gone, the file is not): bind needs it gone.
  if (unixPath && fs.statSync(unixPath, { throwIfNoEntry: false })?.isSocket()) call(`unlink of ${unixPath}`, K.SYS.unlinkat, -100, r.cstring(unixPath), 0);
  if (addr.length > 2 && !isUnboundAddress(f.family, addr)) call(`bind of fd ${f.fd}`, K.SYS.bind, fd, r.scratch(addr), addr.length);
  if (f.listening) call(`listen on fd ${f.fd}`, K.SYS.listen, fd, f.backlog >= 0 ? f.backlog : K.SOMAXCONN);
  return fd;
}

/** An address getsockname gives for a socket never bound (port 0 on the wildcard, or no path). */
function isUnboundAddress(family: number, addr: Buffer): boolean {
  if (family === K.AF_UNIX) return addr.length <= 2;
  return addr.readUInt16BE(2) === 0 && addr.subarray(4, family === 2 ? 8 : 24).every((b) => b === 0);
}

function writeAll(r: Remote, fd: number, data: Buffer, what: string): void {
  for (let off = 0; off < data.length;) {
    const part = data.subarray(off, off + CHUNK);
    const n = Number(r.call(r.stub.pid, `write of ${what}`, K.SYS.write, fd, r.scratch(part), part.length));
    if (n <= 0) throw new Error(`write of ${what} at ${hex(off)} wrote nothing`);
    off += n;
  }
}

/** Files and devices reopened by path must be the ones the source had open. */
function checkFiles(files: readonly FdState[], opts: FdRestoreOptions, fail: Fail): void {
  for (const f of files) {
    if (f.kind !== 'file' && f.kind !== 'chardev') continue;
    const st = fs.statSync(f.path, { throwIfNoEntry: false });
    if (!st) fail(`fd ${f.fd}: ${f.path} is missing`);
    if (f.kind === 'chardev') {
      if (!st.isCharacterDevice() || st.rdev !== f.rdev) fail(`fd ${f.fd}: ${f.path} is not the character device it was (${f.rdev})`);
    } else if (!opts.allowChangedFiles && (st.ino !== f.inode || st.dev !== f.dev)) {
      fail(`fd ${f.fd}: ${f.path} was replaced since the capture (inode ${f.inode} -> ${st.ino}); --allow-changed-files opens it anyway`);
    }
  }
}
