// Loads proto/migration.proto once, with one options constant, for both sides.

import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/** Options shared by every load: Buffers for bytes, Longs as JS numbers (addresses < 2^53),
 *  enums as strings, defaults filled, oneof name present. */
export const PROTO_LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  bytes: Buffer,
  defaults: true,
  oneofs: true,
};

// .proto files are not compiled by tsc: resolve from dist/proto back to the source tree.
export const PROTO_FILE = path.resolve(__dirname, '..', '..', 'proto', 'migration.proto');

let cached: grpc.GrpcObject | undefined;

export function loadMigrationPackage(): grpc.GrpcObject {
  if (!cached) {
    const def = protoLoader.loadSync(PROTO_FILE, PROTO_LOADER_OPTIONS);
    cached = grpc.loadPackageDefinition(def);
  }
  return cached;
}

/** The precopy.v1.Migration service definition and client constructor. */
export function migrationService(): grpc.ServiceClientConstructor {
  const pkg = loadMigrationPackage() as unknown as { precopy: { v1: { Migration: grpc.ServiceClientConstructor } } };
  return pkg.precopy.v1.Migration as grpc.ServiceClientConstructor;
}
