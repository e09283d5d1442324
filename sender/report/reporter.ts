// What the user sees while a migration runs. migrate.ts calls a MigrationReporter; the CLI picks
// the human one (table on stdout, progress bar on a stderr TTY) or the JSON one (nothing until
// the single document at the end). Logs (common/log.ts) go to stderr in both cases.

import type { MigrationSummary, RoundRecord } from './figures';
import { ProgressBar } from './progress-bar';
import { roundTableHeader, roundTableLine } from './round-table';
import { summaryJson, summaryLines } from './summary';

export interface MigrationReporter {
  /** Round 0 is starting; `expectedBytes` is an estimate of the populated memory. */
  round0Started(expectedBytes: number): void;
  /** Page bytes handled so far in round 0. */
  round0Progress(doneBytes: number): void;
  roundDone(r: RoundRecord): void;
  finished(s: MigrationSummary): void;
}

export class HumanReporter implements MigrationReporter {
  private bar: ProgressBar | null = null;
  private headerDone = false;

  constructor(
    private readonly out: NodeJS.WritableStream = process.stdout,
    private readonly tty: NodeJS.WriteStream | null = process.stderr.isTTY ? process.stderr : null,
  ) {}

  round0Started(expectedBytes: number): void {
    if (this.tty) this.bar = new ProgressBar(this.tty, 'round 0', expectedBytes);
  }

  round0Progress(doneBytes: number): void {
    this.bar?.update(doneBytes);
  }

  roundDone(r: RoundRecord): void {
    this.bar?.clear();
    this.bar = null;
    if (!this.headerDone) this.out.write(roundTableHeader() + '\n');
    this.headerDone = true;
    this.out.write(roundTableLine(r) + '\n');
  }

  finished(s: MigrationSummary): void {
    this.out.write('\n' + summaryLines(s).join('\n') + '\n');
  }
}

export class JsonReporter implements MigrationReporter {
  constructor(private readonly out: NodeJS.WritableStream = process.stdout) {}
  round0Started(): void {}
  round0Progress(): void {}
  roundDone(): void {}
  finished(s: MigrationSummary): void {
    this.out.write(summaryJson(s) + '\n');
  }
}

/** For library callers and tests that want no output. */
export const SILENT_REPORTER: MigrationReporter = {
  round0Started() {},
  round0Progress() {},
  roundDone() {},
  finished() {},
};
