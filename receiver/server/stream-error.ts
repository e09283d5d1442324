// How a migration stream ends when something is wrong: one error class carrying the gRPC status
// code, and the mapping from the image store's errors to gRPC codes.

import * as grpc from '@grpc/grpc-js';
import type { RefusalReason } from '../receiver-metrics';
import { StoreError, type StoreErrorCode } from '../../image/store-error';

/** A problem that ends the stream with `code` and a message naming what was wrong. */
export class StreamError extends Error {
  readonly code: grpc.status;
  /** Set when a receiver limit refused the stream: counted in precopy_refused_streams_total. */
  readonly refusal?: RefusalReason;
  constructor(code: grpc.status, message: string, refusal?: RefusalReason) {
    super(message);
    this.name = 'StreamError';
    this.code = code;
    this.refusal = refusal;
  }
}

export const invalidArgument = (m: string) => new StreamError(grpc.status.INVALID_ARGUMENT, m);
export const failedPrecondition = (m: string) => new StreamError(grpc.status.FAILED_PRECONDITION, m);
export const resourceExhausted = (m: string, refusal?: RefusalReason) => new StreamError(grpc.status.RESOURCE_EXHAUSTED, m, refusal);

const STORE_CODES: Record<StoreErrorCode, grpc.status> = {
  EXISTS: grpc.status.ALREADY_EXISTS,
  NOT_FOUND: grpc.status.NOT_FOUND,
  BAD_ID: grpc.status.INVALID_ARGUMENT,
  BAD_STATE: grpc.status.FAILED_PRECONDITION,
  INVALID: grpc.status.INVALID_ARGUMENT,
  DIGEST_MISMATCH: grpc.status.DATA_LOSS,
  NO_SPACE: grpc.status.RESOURCE_EXHAUSTED,
  IO: grpc.status.INTERNAL,
};

/** Any error thrown while handling a message, as the StreamError the client will see. */
export function toStreamError(err: unknown, imagesDir: string): StreamError {
  if (err instanceof StreamError) return err;
  if (err instanceof StoreError) {
    // The store says "what: no space left on device"; the operator needs to know which disk.
    const message = err.code === 'NO_SPACE' ? `no space left on device in ${imagesDir} (${err.message})` : err.message;
    return new StreamError(STORE_CODES[err.code], message);
  }
  return new StreamError(grpc.status.INTERNAL, `internal error: ${(err as Error)?.message ?? String(err)}`);
}

/** The gRPC name of a status code, for logs ("INVALID_ARGUMENT"). */
export function statusName(code: grpc.status): string {
  return grpc.status[code] ?? String(code);
}
