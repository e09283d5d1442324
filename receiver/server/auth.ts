// The shared-token check of Migrate calls (`receiver serve --token-file`). It runs first on every
// call, before a message is read or a session touched; a call without the right
// `authorization: Bearer TOKEN` metadata ends at once with UNAUTHENTICATED. The health service is
// not guarded: probes carry no token.
//
// WHY hashes: crypto.timingSafeEqual needs inputs of one length; comparing SHA-256 digests keeps
// the time of a comparison independent of both the content and the length of the token offered.

import * as crypto from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { logger } from '../../common/log';
import { TOKEN_METADATA_KEY, bearer } from '../../common/link-security';

const log = logger('auth');

export const authCounters = {
  /** Migrate calls refused for a wrong or missing token. */
  refused: 0,
};

export const TOKEN_REFUSED = 'wrong or missing token';

const digest = (s: string) => crypto.createHash('sha256').update(s).digest();

export class TokenCheck {
  private readonly expected: Buffer;
  constructor(token: string) {
    this.expected = digest(bearer(token));
  }

  /** Whether call metadata carries exactly one `authorization: Bearer TOKEN`. */
  accepts(metadata: grpc.Metadata): boolean {
    const values = metadata.get(TOKEN_METADATA_KEY);
    const offered = values.length === 1 && typeof values[0] === 'string' ? values[0] : '';
    return crypto.timingSafeEqual(digest(offered), this.expected);
  }
}

interface Call {
  metadata: grpc.Metadata;
  getPeer(): string;
  emit(event: 'error', status: Partial<grpc.StatusObject>): boolean;
}

/** `handler`, guarded by the token (null: no token configured, the handler itself); `refused`
 *  hears of each refusal (the receiver's metrics). */
export function requireToken<C extends Call>(token: string | null, handler: (call: C) => void, refused: () => void = () => {}): (call: C) => void {
  if (token === null) return handler;
  const check = new TokenCheck(token);
  return (call) => {
    if (check.accepts(call.metadata)) {
      handler(call);
      return;
    }
    authCounters.refused++;
    refused();
    log.warn(`refused a migration from ${call.getPeer()}: ${TOKEN_REFUSED}`);
    call.emit('error', { code: grpc.status.UNAUTHENTICATED, details: TOKEN_REFUSED });
  };
}
