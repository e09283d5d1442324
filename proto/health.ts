// The grpc.health.v1 service, loaded once with the project's loader options (proto/load.ts).
// Hand-written proto rather than the grpc-health-check package: the protocol is two methods and
// one enum, and a dependency for that would weigh more than the code.

import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { PROTO_LOADER_OPTIONS } from './load';

export const HEALTH_PROTO_FILE = path.resolve(__dirname, '..', '..', 'proto', 'health.proto');

export type ServingStatus = 'UNKNOWN' | 'SERVING' | 'NOT_SERVING' | 'SERVICE_UNKNOWN';

export interface HealthCheckRequest {
  service: string;
}

export interface HealthCheckResponse {
  status: ServingStatus;
}

let cached: grpc.ServiceClientConstructor | undefined;

/** grpc.health.v1.Health: `.service` for servers, the constructor for clients. */
export function healthService(): grpc.ServiceClientConstructor {
  if (!cached) {
    const def = protoLoader.loadSync(HEALTH_PROTO_FILE, PROTO_LOADER_OPTIONS);
    const pkg = grpc.loadPackageDefinition(def) as unknown as { grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } } };
    cached = pkg.grpc.health.v1.Health as grpc.ServiceClientConstructor;
  }
  return cached;
}
