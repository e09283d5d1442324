// grpc.health.v1.Health: Check answers the current status of a service name ("" = the whole
// server); Watch streams every change. The receiver flips everything to NOT_SERVING when it
// starts shutting down, so that probes stop sending migrations before the port closes.

import * as grpc from '@grpc/grpc-js';
import type { HealthCheckRequest, HealthCheckResponse, ServingStatus } from '../../proto/health';

interface Watcher {
  send(status: ServingStatus): void;
  end(): void;
}

export class HealthService {
  private readonly statuses = new Map<string, ServingStatus>();
  private readonly watchers = new Map<string, Set<Watcher>>();

  constructor(services: string[]) {
    for (const s of ['', ...services]) this.statuses.set(s, 'SERVING');
  }

  set(service: string, status: ServingStatus): void {
    this.statuses.set(service, status);
    for (const w of this.watchers.get(service) ?? []) w.send(status);
  }

  /** Every known service (the server itself included) to NOT_SERVING. */
  shutdown(): void {
    for (const s of this.statuses.keys()) this.set(s, 'NOT_SERVING');
  }

  /** The implementation object for grpc.Server.addService. */
  implementation(): grpc.UntypedServiceImplementation {
    return {
      Check: (call: grpc.ServerUnaryCall<HealthCheckRequest, HealthCheckResponse>, cb: grpc.sendUnaryData<HealthCheckResponse>) => {
        const status = this.statuses.get(call.request.service);
        if (status === undefined) cb({ code: grpc.status.NOT_FOUND, details: `unknown service '${call.request.service}'` });
        else cb(null, { status });
      },
      Watch: (call: grpc.ServerWritableStream<HealthCheckRequest, HealthCheckResponse>) => {
        const service = call.request.service;
        const w: Watcher = {
          send: (status) => {
            if (!call.writableEnded) call.write({ status });
          },
          end: () => {
            if (!call.writableEnded) call.end();
          },
        };
        w.send(this.statuses.get(service) ?? 'SERVICE_UNKNOWN');
        let set = this.watchers.get(service);
        if (!set) this.watchers.set(service, (set = new Set()));
        set.add(w);
        const stop = () => set.delete(w);
        call.on('cancelled', stop);
        call.on('close', stop);
      },
    };
  }

  /** End open Watch streams (at shutdown, after NOT_SERVING went out): they would otherwise hold
   *  a graceful shutdown open until its deadline. */
  closeWatchers(): void {
    for (const set of this.watchers.values()) for (const w of set) w.end();
    this.watchers.clear();
  }
}
