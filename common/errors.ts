// UserError: a problem the user can fix (bad flag, dead pid, unreachable receiver, ...).
// CLIs print its message alone, without a stack trace, and exit with its exitCode.
// Anything else reaching the top level is a bug and is printed with its stack.

export class UserError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 2) {
    super(message);
    this.name = 'UserError';
    this.exitCode = exitCode;
  }
}

/** Wrap a CLI's main: prints user errors plainly, bugs with a stack; sets the exit code. */
export function runMain(prog: string, main: () => Promise<number | void>): void {
  main().then(
    (code) => {
      process.exitCode = typeof code === 'number' ? code : 0;
    },
    (err: unknown) => {
      if (err instanceof UserError) {
        process.stderr.write(`${prog}: ${err.message}\n`);
        process.exitCode = err.exitCode;
      } else {
        process.stderr.write(`${prog}: internal error: ${(err as Error)?.stack ?? String(err)}\n`);
        process.exitCode = 70; // EX_SOFTWARE
      }
    },
  );
}
