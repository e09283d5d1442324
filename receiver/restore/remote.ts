// The restore's hands inside the stub: injected system calls whose failures are named in one
// line, and a small scratch area of the stub for the memory their arguments point at.

import * as os from 'node:os';
import type { RestoreStub } from '../../native';
import * as K from './x86-64';

/** Size of the scratch area the restore maps in the stub (and unmaps before letting it run). */
export const SCRATCH_SIZE = 1 << 20;

export class RestoreError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RestoreError';
  }
}

/** Injected syscalls with named failures, and a bump allocator in a scratch area of the stub. */
export class Remote {
  scratchAddr = 0;
  private scratchUsed = 0;
  constructor(readonly stub: RestoreStub) {}

  /** Raw result (negative errno on failure). */
  raw(tid: number, nr: number, ...args: Array<number | bigint>): bigint {
    const a = new BigUint64Array(args.length);
    args.forEach((x, i) => {
      a[i] = BigInt.asUintN(64, BigInt(x));
    });
    return this.stub.syscall(tid, nr, a);
  }

  call(tid: number, what: string, nr: number, ...args: Array<number | bigint>): bigint {
    const r = this.raw(tid, nr, ...args);
    if (r < 0n && r > -4096n) throw new RestoreError(`cannot restore process ${this.stub.pid}: ${what} failed: ${errnoName(Number(-r))}`);
    return r;
  }

  mapScratch(addr: number): void {
    this.call(
      this.stub.pid,
      'mmap of the scratch area',
      K.SYS.mmap,
      addr,
      SCRATCH_SIZE,
      K.PROT_READ | K.PROT_WRITE,
      K.MAP_PRIVATE | K.MAP_ANONYMOUS | K.MAP_FIXED_NOREPLACE,
      -1,
      0,
    );
    this.scratchAddr = addr;
  }

  /** Copies data into the scratch area and returns its address there. Wraps around: each value
   *  is used by the syscall that immediately follows. */
  scratch(data: Buffer): number {
    if (data.length > SCRATCH_SIZE) throw new RestoreError(`cannot restore process ${this.stub.pid}: ${data.length} bytes exceed the scratch area`);
    const off = (this.scratchUsed + 63) & ~63;
    const at = off + data.length > SCRATCH_SIZE ? 0 : off;
    this.scratchUsed = at + data.length;
    this.stub.writeMemory(this.scratchAddr + at, data);
    return this.scratchAddr + at;
  }

  cstring(s: string): number {
    return this.scratch(Buffer.concat([Buffer.from(s, 'utf8'), Buffer.alloc(1)]));
  }

  open(path: string, mode: number): number {
    const at = this.cstring(path);
    return Number(this.call(this.stub.pid, `open of ${path}`, K.SYS.openat, K.AT_FDCWD, at, mode | K.O_CLOEXEC, 0));
  }
}

export function u64s(v: bigint[]): Buffer {
  const b = Buffer.alloc(8 * v.length);
  v.forEach((x, i) => b.writeBigUInt64LE(BigInt.asUintN(64, x), 8 * i));
  return b;
}

export function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

const ERRNO_NAMES = new Map(Object.entries(os.constants.errno).map(([k, v]) => [v, k]));
export function errnoName(e: number): string {
  return `${ERRNO_NAMES.get(e) ?? `errno ${e}`}`;
}
