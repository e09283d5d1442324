// --max-rate: page bytes per second one session may write, as a token bucket. WHY delaying and
// not refusing: a stream whose batches are handled later is read later, its queue fills, reading
// pauses and HTTP/2 flow control stops the sender; the migration just runs slower, no error.
//
// The bucket holds at most one second of bytes (a burst); a batch larger than what is left takes
// the bucket into debt and its handling waits until the debt is paid, so a batch bigger than the
// burst is never starved.

export class RateLimit {
  private tokens: number;
  private last = performance.now();
  private readonly wakers = new Set<() => void>();

  constructor(private readonly bytesPerSecond: number) {
    this.tokens = bytesPerSecond;
  }

  /** Wait until `bytes` may be handled (at once when unlimited). Resolves early after cancel(). */
  async take(bytes: number): Promise<void> {
    if (!Number.isFinite(this.bytesPerSecond)) return;
    const now = performance.now();
    this.tokens = Math.min(this.bytesPerSecond, this.tokens + ((now - this.last) / 1000) * this.bytesPerSecond);
    this.last = now;
    this.tokens -= bytes;
    if (this.tokens >= 0) return;
    const waitMs = (-this.tokens / this.bytesPerSecond) * 1000;
    await new Promise<void>((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.wakers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, waitMs);
      this.wakers.add(wake);
    });
  }

  /** End every wait now (the stream is going away). */
  cancel(): void {
    for (const wake of [...this.wakers]) wake();
  }
}
