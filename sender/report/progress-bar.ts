// Round 0 progress on a terminal: bytes done of the expected total, rate, ETA, redrawn in place
// at most 10 times a second. Only on a TTY (stderr): pipes and logs get the per-round lines alone.

import { formatBytes, formatRate, formatSeconds } from '../../common/units';

const WIDTH = 30;
const REDRAW_MS = 100;

export class ProgressBar {
  private lastDraw = 0;
  private drawn = false;
  private readonly started = Date.now();

  constructor(
    private readonly out: NodeJS.WriteStream,
    private readonly label: string,
    private total: number,
  ) {}

  update(done: number): void {
    const now = Date.now();
    if (now - this.lastDraw < REDRAW_MS) return;
    this.lastDraw = now;
    // The total is an estimate (smaps), the populated set may have grown: never show > 100%.
    if (done > this.total) this.total = done;
    const share = this.total > 0 ? done / this.total : 0;
    const filled = Math.round(share * WIDTH);
    const seconds = (now - this.started) / 1000;
    const rate = seconds > 0 ? done / seconds : 0;
    const eta = rate > 0 ? (this.total - done) / rate : Infinity;
    const line =
      `${this.label} [${'#'.repeat(filled)}${' '.repeat(WIDTH - filled)}] ${Math.floor(share * 100)}% ` +
      `${formatBytes(done)} / ${formatBytes(this.total)}  ${formatRate(rate)}  ETA ${formatSeconds(eta)}`;
    this.out.write(`\r${line}\x1b[K`);
    this.drawn = true;
  }

  /** Erase the bar (the round line replaces it). */
  clear(): void {
    if (this.drawn) this.out.write('\r\x1b[K');
    this.drawn = false;
  }
}
