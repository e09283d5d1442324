// Size limits of the receiver: what one message may carry. They bound the memory a single
// (possibly hostile) stream can make the receiver allocate; every one has a clear error.

/** Largest page payload of one batch (compressed or raw), and largest decompressed batch. */
export const MAX_BATCH_BYTES = 64 << 20;
/** grpc-js refuses bigger messages itself (RESOURCE_EXHAUSTED) before buffering them: the batch
 *  payload plus room for the runs, the zero map and the framing. */
export const MAX_MESSAGE_BYTES = MAX_BATCH_BYTES + (4 << 20);
/** Runs ((start, count) pairs) in one PageBatch or Discard. */
export const MAX_RUNS = 1 << 16;
/** Pages in one batch, zero pages included (a zero map of at most 512 KiB). */
export const MAX_BATCH_PAGES = 1 << 22;
/** Threads in a Commit, and the size of one register blob. */
export const MAX_THREADS = 1 << 16;
export const MAX_REGS_BYTES = 64 << 10;
