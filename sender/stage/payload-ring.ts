// The stager's reused buffers. A staged batch's payload is a view into one slot (the compacted
// read buffer when lz4 does not pay, else the slot's lz4 output), so no batch-sized Buffer is
// allocated per batch: at 4 MiB a batch, per-batch allocations were most of the sender's garbage
// (a third of its time in GC) and of its peak RSS.
//
// Ownership: acquire() hands a slot to one staged batch; it stays that batch's until release(),
// which the holder calls once nothing reads the payload any more (the pipeline: after sendBatch
// resolved). A slot is never handed out twice before its release. When every slot is held,
// acquire() makes a new one rather than wait (callers that keep batches, e.g. tests, stay
// correct); release() keeps at most `capacity` free slots and lets the extra ones go.

export interface PayloadSlot {
  /** Pages are read here, then compacted in place: a RAW payload is a view of it. Preceded by
   *  `headroom` bytes of the same memory, for the message header (proto/page-codec.ts). */
  readonly read: Buffer;
  /** lz4 output (also after `headroom` bytes), made the first time a batch of this slot is
   *  compressed: use lz4Of(). */
  lz4: Buffer | null;
  /** Per page read: its hash and its StageFlag (native stagePages fills them). */
  readonly hashes: BigUint64Array;
  readonly flags: Uint8Array;
}

export interface RingStats {
  /** Slots made: `capacity` in steady state; more means batches were held past it. */
  slotsMade: number;
}

export class PayloadRing {
  readonly stats: RingStats = { slotsMade: 0 };
  private readonly free: PayloadSlot[] = [];
  /** Weak: a slot whose holder drops it unreleased goes to the GC with it. */
  private readonly held = new WeakSet<PayloadSlot>();
  private handedOut = 0;

  constructor(
    readonly slotBytes: number,
    readonly capacity: number,
    /** Slots hold one hash and one flag per page of this size (default 4096). */
    readonly pageSize = 4096,
    /** Free bytes kept before each payload buffer (the sender's message header goes there). */
    readonly headroom = 0,
  ) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`ring capacity must be a positive integer, got ${capacity}`);
  }

  acquire(): PayloadSlot {
    let slot = this.free.pop();
    if (!slot) {
      const pages = Math.ceil(this.slotBytes / this.pageSize);
      slot = { read: this.area(), lz4: null, hashes: new BigUint64Array(pages), flags: new Uint8Array(pages) };
      this.stats.slotsMade++;
    }
    this.held.add(slot);
    this.handedOut++;
    return slot;
  }

  /** The slot's lz4 output buffer, made on first use. */
  lz4Of(slot: PayloadSlot): Buffer {
    return (slot.lz4 ??= this.area());
  }

  /** slotBytes of fresh memory after `headroom` free bytes. */
  private area(): Buffer {
    return Buffer.allocUnsafeSlow(this.headroom + this.slotBytes).subarray(this.headroom);
  }

  /** Give the slot back; a second release of the same slot is a no-op. */
  release(slot: PayloadSlot): void {
    if (!this.held.delete(slot)) return;
    this.handedOut--;
    if (this.free.length < this.capacity) this.free.push(slot);
  }

  /** Slots handed out and not yet released. */
  get inUse(): number {
    return this.handedOut;
  }
}
