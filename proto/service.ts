// The Migration service definition both ends use: proto-loader's definition (proto/load.ts) with
// the request codec swapped for proto/page-codec.ts on page batches. 'proto-loader' keeps the
// generic codec everywhere (the benchmark compares the two).

import * as grpc from '@grpc/grpc-js';
import { migrationService } from './load';
import type { OutgoingSenderMessage, SenderMessage } from './messages';
import { decodePagesMessage, encodePagesMessage, type MalformedMessage } from './page-codec';

export type LinkCodec = 'fast' | 'proto-loader';
export const LINK_CODECS: readonly LinkCodec[] = ['fast', 'proto-loader'];

/** What the server's deserializer yields: a message, or why the bytes are not one. */
export type IncomingSenderMessage = SenderMessage | MalformedMessage;

const definitions = new Map<LinkCodec, grpc.ServiceDefinition>();

export function migrationDefinition(codec: LinkCodec = 'fast'): grpc.ServiceDefinition {
  let def = definitions.get(codec);
  if (!def) {
    const base = migrationService().service.Migrate;
    const protoSerialize = base.requestSerialize as (m: OutgoingSenderMessage) => Buffer;
    const protoDeserialize = base.requestDeserialize as (b: Buffer) => SenderMessage;
    const fast = codec === 'fast';
    def = {
      Migrate: {
        ...base,
        // A Buffer is a message serialized beforehand (MigrationLink.send does, so that the
        // caller's page buffers are free again as soon as send() returns).
        requestSerialize: (m: OutgoingSenderMessage | Buffer): Buffer =>
          Buffer.isBuffer(m) ? m : fast && 'pages' in m ? encodePagesMessage(m.pages) : protoSerialize(m),
        // Never throws: grpc-js would answer a throwing deserializer with INTERNAL, and the
        // service could not fail the session; a MalformedMessage reaches the handler instead.
        requestDeserialize: (b: Buffer): IncomingSenderMessage => {
          const quick = fast ? decodePagesMessage(b) : null;
          if (quick) return quick;
          try {
            return protoDeserialize(b);
          } catch (err) {
            return { msg: 'malformed', error: `malformed message: ${(err as Error).message}` };
          }
        },
      },
    };
    definitions.set(codec, def);
  }
  return def;
}

/** Serialize a SenderMessage now, with the codec's encoder. */
export function serializeSenderMessage(m: OutgoingSenderMessage, codec: LinkCodec = 'fast'): Buffer {
  return migrationDefinition(codec).Migrate.requestSerialize(m);
}

export function migrationClientConstructor(codec: LinkCodec = 'fast'): grpc.ServiceClientConstructor {
  return grpc.makeGenericClientConstructor(migrationDefinition(codec), 'precopy.v1.Migration');
}

/** The unary Resolve method (a handover's decision record), with proto-loader's codec: it
 *  carries no pages. */
export function resolveMethod(): grpc.MethodDefinition<unknown, unknown> {
  return migrationService().service.Resolve;
}

/** A client constructor with Resolve only (sender resolve, a sender that lost its stream). */
export function resolveClientConstructor(): grpc.ServiceClientConstructor {
  return grpc.makeGenericClientConstructor({ Resolve: resolveMethod() }, 'precopy.v1.Migration');
}
