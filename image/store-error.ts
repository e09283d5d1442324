// The one error class of the image store. `code` says what kind of problem it is, so that the
// gRPC server can map it to a status (INVALID → INVALID_ARGUMENT, BAD_STATE → FAILED_PRECONDITION,
// NO_SPACE → RESOURCE_EXHAUSTED, ...) and the CLI can print a plain message.

export type StoreErrorCode = 'EXISTS' | 'NOT_FOUND' | 'BAD_ID' | 'BAD_STATE' | 'INVALID' | 'DIGEST_MISMATCH' | 'NO_SPACE' | 'IO';

export class StoreError extends Error {
  readonly code: StoreErrorCode;
  constructor(code: StoreErrorCode, message: string) {
    super(message);
    this.name = 'StoreError';
    this.code = code;
  }
}

/** Turn a failed file operation into a StoreError (ENOSPC/EDQUOT → NO_SPACE, else IO). */
export function ioError(err: unknown, what: string): StoreError {
  if (err instanceof StoreError) return err;
  const e = err as NodeJS.ErrnoException;
  if (e?.code === 'ENOSPC' || e?.code === 'EDQUOT') {
    return new StoreError('NO_SPACE', `${what}: no space left on device`);
  }
  return new StoreError('IO', `${what}: ${e?.message ?? String(err)}`);
}

export function invalid(message: string): StoreError {
  return new StoreError('INVALID', message);
}

export function badState(message: string): StoreError {
  return new StoreError('BAD_STATE', message);
}
