// Test-side views of another process through /proc: its memory (pread of /proc/PID/mem), its
// mappings, its threads' states and VMA flags. Deliberately tiny and independent of the sender's
// own parsers, so tests judge the sender with code it does not share.

import * as fs from 'node:fs';

/** Read [addr, addr+len) of pid's memory. Throws (EIO) if any part is unmapped. */
export function readMem(pid: number, addr: number, len: number): Buffer {
  const fd = fs.openSync(`/proc/${pid}/mem`, 'r');
  try {
    const buf = Buffer.alloc(len);
    let done = 0;
    while (done < len) {
      const n = fs.readSync(fd, buf, done, len - done, addr + done);
      if (n === 0) throw new Error(`short read of /proc/${pid}/mem at 0x${(addr + done).toString(16)}`);
      done += n;
    }
    return buf;
  } finally {
    fs.closeSync(fd);
  }
}

export interface MapEntry {
  start: number;
  end: number;
  /** "rw-p", "r--s", ... */
  perms: string;
  offset: number;
  /** Pathname column, "" for anonymous mappings. */
  path: string;
}

/** Parse /proc/PID/maps. */
export function readMaps(pid: number): MapEntry[] {
  return fs
    .readFileSync(`/proc/${pid}/maps`, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const m = /^([0-9a-f]+)-([0-9a-f]+) (\S+) ([0-9a-f]+) \S+ \d+\s*(.*)$/.exec(line);
      if (!m) throw new Error(`unparsable maps line: ${line}`);
      return { start: parseInt(m[1], 16), end: parseInt(m[2], 16), perms: m[3], offset: parseInt(m[4], 16), path: m[5] };
    });
}

/** The mapping containing addr, if any. */
export function findMap(pid: number, addr: number): MapEntry | undefined {
  return readMaps(pid).find((v) => v.start <= addr && addr < v.end);
}

/** A thread's scheduler state (not its registers: that is the ThreadState of native/ and proto/). */
export interface ThreadRunState {
  tid: number;
  /** One letter from /proc/PID/task/TID/stat: R, S, D, T (stopped), t (tracing stop), Z, ... */
  state: string;
}

/** State of every thread of pid (threads that vanish meanwhile are left out). */
export function threadStates(pid: number): ThreadRunState[] {
  const out: ThreadRunState[] = [];
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    } catch {
      continue;
    }
    // comm may contain spaces and parentheses: the state follows the last ')'
    out.push({ tid: Number(tid), state: stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) });
  }
  return out.sort((a, b) => a.tid - b.tid);
}

/** TracerPid of pid from /proc/PID/status (0 = not traced). */
export function tracerPid(pid: number): number {
  const m = /^TracerPid:\s*(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

/** VmFlags (e.g. ["rd","wr","mr","uw"]) of the VMA of pid containing addr, from smaps. */
export function vmFlags(pid: number, addr: number): string[] | undefined {
  let inside = false;
  for (const line of fs.readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (head) inside = parseInt(head[1], 16) <= addr && addr < parseInt(head[2], 16);
    else if (inside && line.startsWith('VmFlags:')) return line.slice(8).trim().split(/\s+/);
  }
  return undefined;
}

/** Whether pid exists (and is not a zombie). */
export function isAlive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat[stat.lastIndexOf(')') + 2] !== 'Z';
  } catch {
    return false;
  }
}

/** Children of every thread of pid (what its wait() could see), zombies included. */
export function childPids(pid: number): number[] {
  const out: number[] = [];
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    const text = fs.readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
    if (text) out.push(...text.split(/\s+/).map(Number));
  }
  return out;
}

/** Gone, or a zombie its parent has not reaped yet: it holds nothing any more. */
export function hasExited(pid: number): boolean {
  try {
    return /^\d+ \(.*\) [ZX]/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}
