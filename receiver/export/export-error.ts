// Errors an export reports to the user (the CLI prints them without a stack).

export type ExportErrorCode = 'NOT_COMMITTED' | 'MISSING_FILE' | 'UNSUPPORTED' | 'OUT_EXISTS';

export class ExportError extends Error {
  readonly code: ExportErrorCode;
  constructor(code: ExportErrorCode, message: string) {
    super(message);
    this.name = 'ExportError';
    this.code = code;
  }
}
