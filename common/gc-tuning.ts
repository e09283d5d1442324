// V8 heap and malloc tuning for a process that moves page data in bulk (the receiver's store, the sender's
// link). Called by the classes those processes cannot do without (ImageStore, MessageBuffers).
//
// WHY: V8 sets the old generation's allocation limit from the live JS heap (~10 MB in these
// processes) times a growing factor it picks between 1.1 and 4, and it counts the external memory
// allocated since the last mark-compact (ArrayBuffer backing stores: every received message, once
// also every framed send) against that same limit. A migration keeps tens of MB of page buffers in flight
// (16 MiB HTTP/2 windows, queued 4 MiB batches), swinging by more than the limit's headroom, so V8
// ran a full mark-compact every ~18 MB moved: 53-61 per GiB in the receiver (--trace-gc), a
// quarter of its CPU, and as much of the sender's. With a growing factor of 10 the limit clears
// that swing: 1 mark-compact per GiB; measured per GiB moved (1 GiB, lz4, gRPC on loopback):
// receiver 1.65 -> 1.30 CPU-s, sender 1.77 -> 1.29; at 4 GiB, round 0 went from 0.19 to 0.46 GB/s
// on a loaded machine, peak RSS unchanged (the page buffers die young, in scavenges, either way).
// V8 reads this flag at every GC, so setting it at run time works, unlike --initial-old-space-size
// (which would fix it too, but only as a command-line flag of every launcher).

import { setFlagsFromString } from 'node:v8';
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
