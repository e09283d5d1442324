// Resource figures of processes, read from /proc.

import { readdirSync, readFileSync } from 'node:fs';

/** utime and stime in seconds from a /proc/.../stat line (fields 14 and 15). */
function statTimes(stat: string): { user: number; system: number } {
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { user: Number(fields[11]) / 100, system: Number(fields[12]) / 100 }; // USER_HZ = 100 on Linux
}

function statCpu(stat: string): number {
  const t = statTimes(stat);
  return t.user + t.system;
}

/** utime + stime of a process so far (all threads, dead ones included), in seconds. */
export function cpuSeconds(pid: number): number {
  return statCpu(readFileSync(`/proc/${pid}/stat`, 'utf8'));
}

/** stime alone: the kernel's share of cpuSeconds (syscalls: sockets, writes, page faults). */
export function systemSeconds(pid: number): number {
  return statTimes(readFileSync(`/proc/${pid}/stat`, 'utf8')).system;
}

/** CPU seconds of a process's live threads: the main (JS) thread apart from the others (libuv
 *  pool, V8 GC helpers, native worker threads; Node leaves them all named "node"). */
export function threadCpu(pid: number): { main: number; others: number } {
  const out = { main: 0, others: 0 };
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const cpu = statCpu(readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8'));
      if (Number(tid) === pid) out.main += cpu;
      else out.others += cpu;
    } catch {
      /* the thread ended meanwhile */
    }
  }
  return out;
}

/** The 1, 5 and 15 minute load averages: the bench shares the machine, the table says how busy. */
export function loadAverage(): number[] {
  return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).map(Number);
}
