// The unary Resolve handler: a sender that lost its stream after asking for a handover asks, on a
// fresh connection, what was decided (docs/design.md, Handover). Guarded by the token like
// Migrate: an unauthenticated caller could otherwise fence off a handover.

import * as grpc from '@grpc/grpc-js';
import { logger } from '../../common/log';
import { checkSessionId } from '../../image/input-checks';
import type { HandoverRecord } from '../../proto/messages';
import { TOKEN_REFUSED, TokenCheck } from '../server/auth';
import type { Handovers } from './handovers';

const log = logger('handover');

type ResolveCall = grpc.ServerUnaryCall<{ sessionId?: string }, HandoverRecord>;

export function resolveHandler(handovers: Handovers, token: string | null): grpc.handleUnaryCall<{ sessionId?: string }, HandoverRecord> {
  const check = token === null ? null : new TokenCheck(token);
  return (call: ResolveCall, callback: grpc.sendUnaryData<HandoverRecord>) => {
    if (check && !check.accepts(call.metadata)) {
      callback({ code: grpc.status.UNAUTHENTICATED, details: TOKEN_REFUSED });
      return;
    }
    let id: string;
    try {
      id = checkSessionId(call.request.sessionId ?? '');
    } catch (err) {
      callback({ code: grpc.status.INVALID_ARGUMENT, details: (err as Error).message });
      return;
    }
    handovers.resolve(id).then(
      (r) => {
        log.info(`session ${id}: resolve from ${call.getPeer()}: ${r.state}${r.pid ? ` (pid ${r.pid})` : ''}`);
        callback(null, r);
      },
      (err: Error) => callback({ code: grpc.status.INTERNAL, details: err.message }),
    );
  };
}
