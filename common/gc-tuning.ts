// V8 heap and malloc tuning for a process that moves page data in bulk (the receiver's store, the sender's
// link). Called by the classes those processes cannot do without (ImageStore, MessageBuffers).
//
// WHY: V8 sets the old generation's allocation limit from the live JS heap (~10 MB in these
// processes) times a growing factor it picks between 1.1 and 4, and it counts the external memory
// allocated since the last mark-compact (ArrayBuffer backing stores: every received message, every
// framed send) against that same limit. A migration keeps tens of MB of page buffers in flight
// (16 MiB HTTP/2 windows, queued 4 MiB batches), swinging by more than the limit's headroom, so V8
// ran a full mark-compact every ~18 MB moved: 53-61 per GiB in the receiver (--trace-gc), a
// quarter of its CPU, and as much of the sender's. With a growing factor of 10 the limit clears
// that swing: 1 mark-compact per GiB; measured per GiB moved (1 GiB, lz4, gRPC on loopback):
// receiver 1.65 -> 1.30 CPU-s, sender 1.77 -> 1.29; at 4 GiB, round 0 went from 0.19 to 0.46 GB/s
// on a loaded machine, peak RSS unchanged (the page buffers die young, in scavenges, either way).
// V8 reads this flag at every GC, so setting it at run time works, unlike --initial-old-space-size
// (which would fix it too, but only as a command-line flag of every launcher).

import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { keepFreedMemory } from '../native';

/** Old-generation growing factor 1 + 900/100 = 10. */
const HEAP_GROWING_PERCENT = 900;

let tuned = false;

/** Apply the tuning to this process (idempotent). */
export function tuneGcForPageBuffers(): void {
  if (tuned) return;
  tuned = true;
  setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
  // The same for the buffers' own memory: glibc keeps it for the next batch (native/malloc_tuning.cc).
  keepFreedMemory();
}

// WHY the sweep below: every page batch sent leaves a 4 MiB Buffer behind (grpc-js frames each
// message into a copy of its own). V8 frees such young ArrayBuffers only at a scavenge, and
// forces one only once 32 MiB of them piled up (2 x its default max semi-space); the JS garbage
// of a batch is too small to fill the new space sooner. Those 32 MiB of dead page buffers (and
// the malloc arena grown to hold them) were a quarter of the sender's peak RSS. A scavenge every
// 8 MiB of page data keeps that to 8 MiB; it costs ~0.5 ms (the live young set is tiny), less
// than the page faults of a bigger arena: sender at 4 GiB, one batch in flight, peak RSS
// 129-134 -> 112-118 MiB, CPU-s the same or lower (bench section 1).
// The caller must hold no more than one page buffer alive across two sweeps (the sender's
// pipeline holds one batch, the link queues one): a buffer that survives two scavenges is moved
// to the old generation and then waits for a mark-compact, which with the factor above is rare.

/** Page data moved between two scavenges at most. */
export const YOUNG_SWEEP_BYTES = 8 << 20;

let minorGc: (() => void) | null = null;

/** Counts page bytes moved and runs a scavenge every YOUNG_SWEEP_BYTES of them. */
export class YoungBufferSweep {
  private since = 0;

  constructor(private readonly everyBytes = YOUNG_SWEEP_BYTES) {}

  /** `bytes` of page buffers became garbage (or will, before the next call). */
  moved(bytes: number): void {
    this.since += bytes;
    if (this.since < this.everyBytes) return;
    this.since = 0;
    scavenge();
  }
}

function scavenge(): void {
  if (!minorGc) {
    // The gc() extension is installed in contexts made after the flag is set: fetch it from a
    // fresh one (this process's global object stays without a gc function).
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as (opts: { type: 'minor'; execution: 'sync' }) => void;
    minorGc = () => gc({ type: 'minor', execution: 'sync' });
  }
  minorGc();
}
