// One Resolve call on a fresh connection: what the receiver decided about a handover whose
// answer the sender did not get (docs/design.md, Handover).

import * as grpc from '@grpc/grpc-js';
import { formatHostPort, type HostPort } from '../../common/cli';
import { TOKEN_METADATA_KEY, bearer, type LinkSecurity } from '../../common/link-security';
import type { HandoverRecord } from '../../proto/messages';
import { resolveClientConstructor } from '../../proto/service';
import { channelCredentials, channelOptions } from '../transfer/migration-link';

type ResolveClient = grpc.Client & {
  Resolve(req: { sessionId: string }, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, r?: HandoverRecord) => void): void;
};

/** The receiver's record for session `sessionId`; rejects when it cannot be asked (the error's
 *  message says why). */
export async function askResolve(address: HostPort, security: LinkSecurity, sessionId: string, timeoutMs = 5000): Promise<HandoverRecord> {
  const Client = resolveClientConstructor();
  const client = new Client(formatHostPort(address), channelCredentials(security), channelOptions(security)) as unknown as ResolveClient;
  const md = new grpc.Metadata();
  if (security.token !== null) md.set(TOKEN_METADATA_KEY, bearer(security.token));
  try {
    return await new Promise<HandoverRecord>((resolve, reject) => {
      client.Resolve({ sessionId }, md, { deadline: Date.now() + timeoutMs }, (err, r) => (err ? reject(new Error(err.details || err.message)) : resolve(r!)));
    });
  } finally {
    client.close();
  }
}
