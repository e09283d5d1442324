// A real Prometheus (Debian's `prometheus` package, which `npm test` installs) for tests: started on a
// free loopback port with a 1 s scrape of the given targets and its own temporary TSDB, queried
// through its HTTP API, stopped and cleaned up. Every instance is killed when the test process
// exits, so a failed test never leaves one running.

import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { requireProgram } from './system-deps';

export const PROMTOOL_BIN = process.env.PROMTOOL_BIN ?? '/usr/bin/promtool';

export interface PrometheusOptions {
  /** HOST:PORT of each /metrics endpoint to scrape. */
  targets: string[];
  /** Scrape and rule evaluation interval, seconds (default 1). */
  scrapeIntervalSeconds?: number;
  /** Job name of the targets (default "precopy-receiver", as deploy/prometheus/prometheus.yml). */
  job?: string;
}

/** One sample of an instant query: labels and the value as Prometheus writes it ("NaN" too). */
export interface InstantSample {
  metric: Record<string, string>;
  value: [number, string];
}

export interface RangeSeries {
  metric: Record<string, string>;
  values: Array<[number, string]>;
}

/** Prometheus refused a query: errorType "bad_data" is a parse error. */
export class PromQueryError extends Error {
  constructor(
    readonly expr: string,
    readonly errorType: string,
    message: string,
  ) {
    super(`${errorType}: ${message} (query: ${expr})`);
  }
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const p of running) p.kill('SIGKILL');
});

/** A port nobody listens on now (Prometheus binds it a moment later; start() retries on a race). */
export async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class Prometheus {
  private exited = false;

  private constructor(
    private readonly proc: ChildProcess,
    readonly dir: string,
    readonly url: string,
    private readonly log: () => string,
  ) {
    proc.once('exit', () => {
      this.exited = true;
      running.delete(proc);
    });
  }

  static async start(opts: PrometheusOptions): Promise<Prometheus> {
    // Before anything is started: a missing prometheus fails the test at once, naming its package.
    const bin = requireProgram('prometheus', process.env.PROMETHEUS_BIN);
    let lastError: unknown;
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        return await Prometheus.startOnce(bin, opts, await freePort());
      } catch (err) {
        lastError = err; // most likely the port was taken between freePort() and the bind
      }
    }
    throw lastError;
  }

  private static async startOnce(bin: string, opts: PrometheusOptions, port: number): Promise<Prometheus> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'precopy-prom-'));
    const interval = `${opts.scrapeIntervalSeconds ?? 1}s`;
    const config = [
      'global:',
      `  scrape_interval: ${interval}`,
      `  evaluation_interval: ${interval}`,
      'scrape_configs:',
      `  - job_name: ${JSON.stringify(opts.job ?? 'precopy-receiver')}`,
      '    static_configs:',
      `      - targets: ${JSON.stringify(opts.targets)}`,
      '',
    ].join('\n');
    const configFile = path.join(dir, 'prometheus.yml');
    fs.writeFileSync(configFile, config);
    const proc = spawn(
      bin,
      [`--config.file=${configFile}`, `--storage.tsdb.path=${path.join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, `--log.level=warn`],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    running.add(proc);
    let stderr = '';
    proc.stderr!.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-8000);
    });
    const prom = new Prometheus(proc, dir, `http://127.0.0.1:${port}`, () => stderr);
    try {
      await prom.waitReady();
    } catch (err) {
      await prom.stop();
      throw err;
    }
    return prom;
  }

  /** Poll /-/ready until Prometheus serves queries (it has loaded its config and TSDB). */
  private async waitReady(): Promise<void> {
    for (let i = 0; i < 300; i++) {
      if (this.exited) throw new Error(`prometheus exited during start-up:\n${this.log()}`);
      try {
        const res = await fetch(`${this.url}/-/ready`);
        await res.arrayBuffer();
        if (res.ok) return;
      } catch {
        // not listening yet
      }
      await sleep(100);
    }
    throw new Error(`prometheus not ready after 30 s:\n${this.log()}`);
  }

  private async api<T>(endpoint: string, params: Record<string, string>): Promise<T> {
    const res = await fetch(`${this.url}/api/v1/${endpoint}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(params).toString(),
    });
    const body = (await res.json()) as { status: string; data: T; errorType?: string; error?: string };
    if (body.status !== 'success') throw new PromQueryError(params.query ?? endpoint, body.errorType ?? `HTTP ${res.status}`, body.error ?? '');
    return body.data;
  }

  /** Instant query (at `time`, Unix seconds; default now). Parse errors reject with PromQueryError. */
  async query(expr: string, time?: number): Promise<InstantSample[]> {
    const params: Record<string, string> = { query: expr };
    if (time !== undefined) params.time = String(time);
    const data = await this.api<{ resultType: string; result: unknown }>('query', params);
    if (data.resultType === 'scalar' || data.resultType === 'string') {
      return [{ metric: {}, value: data.result as [number, string] }];
    }
    return data.result as InstantSample[];
  }

  /** Range query over [start, end] (Unix seconds) every `step` seconds. */
  async queryRange(expr: string, start: number, end: number, step: number): Promise<RangeSeries[]> {
    const data = await this.api<{ result: RangeSeries[] }>('query_range', {
      query: expr,
      start: String(start),
      end: String(end),
      step: String(step),
    });
    return data.result;
  }

  /** Health of each scrape target ("up", "down", "unknown"), keyed by its scrape URL. */
  async targetHealth(): Promise<Record<string, { health: string; lastError: string }>> {
    const res = await fetch(`${this.url}/api/v1/targets?state=active`);
    const body = (await res.json()) as { data: { activeTargets: Array<{ scrapeUrl: string; health: string; lastError: string }> } };
    return Object.fromEntries(body.data.activeTargets.map((t) => [t.scrapeUrl, { health: t.health, lastError: t.lastError }]));
  }

  /** Poll until `expr` has at least one sample satisfying `ok` (default: any); returns them. */
  async waitFor(expr: string, ok: (s: InstantSample) => boolean = () => true, timeoutMs = 30_000): Promise<InstantSample[]> {
    const deadline = Date.now() + timeoutMs;
    let last: InstantSample[] = [];
    while (Date.now() < deadline) {
      last = (await this.query(expr)).filter(ok);
      if (last.length > 0) return last;
      await sleep(250);
    }
    throw new Error(`no sample of ${expr} became true in ${timeoutMs} ms; targets: ${JSON.stringify(await this.targetHealth())}`);
  }

  /** Kill Prometheus and delete its directory. */
  async stop(): Promise<void> {
    if (!this.exited) {
      const gone = new Promise<void>((resolve) => this.proc.once('exit', () => resolve()));
      this.proc.kill('SIGTERM');
      const timer = setTimeout(() => this.proc.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(timer);
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
