// Page-aligned staging buffers for O_DIRECT writes of page data (chunk-files.ts).
//
// WHY O_DIRECT: a buffered write first allocates a page-cache page for every 4 KiB it copies, and
// on the project's VM (Firecracker with free-page reporting) memory the guest freed earlier comes
// back from the host on first touch: 1 GiB copied into fresh page cache cost 0.7-1.2 s of system
// CPU (dd: the same), then fdatasync wrote it out at round end (~0.45 s/GiB). O_DIRECT writes go
// from a reused buffer to the device: measured 1.5-1.65 GB/s durable for 1 GiB at 0.03-0.1 CPU-s,
// which is also the device's limit (dd conv=fdatasync: 1.3-1.6 GB/s). QEMU's mapped-ram migration
// to a file offers direct-io for the same reason.
//
// O_DIRECT needs the memory address, the file offset and the length aligned to the device's
// logical block (512 here). Node Buffers carry no alignment promise (received messages are views
// at any offset), so the bytes are copied into one of these buffers first (~0.1 CPU-s per GiB,
// from memory kept warm by reuse). The buffers are slices of a WebAssembly.Memory: V8 maps wasm
// memory with the page allocator, so its first byte is page aligned, and it is never grown (growing
// would detach the slices). Should a platform ever place it otherwise, the write fails with EINVAL
// and chunk-files falls back to buffered writes: correctness never depends on this.

/** Bytes per staging buffer: the largest single O_DIRECT write. */
export const STAGING_BYTES = 4 << 20;
/** Buffers in the process: writes in flight at once across all chunk files of all sessions. */
const STAGING_BUFFERS = 2;
/** O_DIRECT alignment asked of offsets and lengths (a multiple of every common logical block). */
export const DIRECT_ALIGN = 4096;

const WASM_PAGE = 64 * 1024;

// The one WebAssembly API used (the project's TypeScript lib has no WebAssembly types).
declare const WebAssembly: { Memory: new (d: { initial: number }) => { buffer: ArrayBuffer } };

class StagingPool {
  private free: Buffer[] | null = null;
  private readonly waiters: ((b: Buffer) => void)[] = [];

  /** A staging buffer of STAGING_BYTES; give it back with release(). */
  take(): Promise<Buffer> {
    const free = (this.free ??= this.allocate());
    const b = free.pop();
    if (b) return Promise.resolve(b);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  release(b: Buffer): void {
    const next = this.waiters.shift();
    if (next) next(b);
    else this.free!.push(b);
  }

  /** Allocated on first use: a receiver that never writes holds none of it. */
  private allocate(): Buffer[] {
    const mem = new WebAssembly.Memory({ initial: (STAGING_BUFFERS * STAGING_BYTES) / WASM_PAGE });
    return Array.from({ length: STAGING_BUFFERS }, (_, i) => Buffer.from(mem.buffer, i * STAGING_BYTES, STAGING_BYTES));
  }
}

/** The process's staging buffers, shared by every session. */
export const stagingPool = new StagingPool();
