// Test networks: two network namespaces joined by a veth pair, so a sender and a receiver can talk
// over a real link the test controls (bandwidth with tc tbf, loss with nftables, cuts with link
// down/up). The kernel here has no netem (see /work/shared/transport-notes.md).
// Only traffic between the two namespaces is touched; the host's own network is never changed.
//
// Cleanup is always done: NetPair.destroy() (call it in `finally`, or use withNetPair), a
// process-exit hook for pairs a crashed test left, and a sweep of namespaces left by dead test
// processes whenever a new pair is made.

import { execFile, execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import * as fs from 'node:fs';
import { promisify } from 'node:util';
import { requireProgram } from './system-deps';

const run = promisify(execFile);

const NS_PREFIX = 'precopy-';
let counter = 0;
const open = new Set<NetPair>();

process.on('exit', () => {
  for (const p of open) p.destroySync();
});

export type Side = 'a' | 'b';

export interface ExecResult {
  stdout: string;
  stderr: string;
}

export interface NetPairOptions {
  /** The /30 to use, e.g. "10.77.3.0": side a gets .1, side b .2. Tests pick distinct subnets. */
  subnet: string;
}

/**
 * Absolute path of a system tool (ip, tc, nft); throws naming the Debian package if missing.
 * (By absolute path: under `npm test` PATH starts with node_modules/.bin, which holds an
 * unrelated npm command named `nft`.)
 */
export function tool(name: 'ip' | 'tc' | 'nft'): string {
  return requireProgram(name);
}

/** Delete namespaces that test processes now dead left behind (names carry the creator's pid). */
function sweepStale(): void {
  let names: string[];
  try {
    names = fs.readdirSync('/var/run/netns');
  } catch {
    return;
  }
  for (const n of names) {
    const m = new RegExp(`^${NS_PREFIX}(\\d+)-\\d+-[ab]$`).exec(n);
    if (m && !fs.existsSync(`/proc/${m[1]}`)) killAndDelete(n);
  }
}

/** SIGKILL whatever still runs inside namespace ns (only test processes live there), delete it. */
function killAndDelete(ns: string): void {
  try {
    const pids = execFileSync(tool('ip'), ['netns', 'pids', ns], { encoding: 'utf8' }).split(/\s+/).filter(Boolean);
    for (const pid of pids) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        /* gone already */
      }
    }
  } catch {
    /* namespace gone already */
  }
  try {
    execFileSync(tool('ip'), ['netns', 'del', ns], { stdio: 'ignore' });
  } catch {
    /* gone already */
  }
}

export class NetPair {
  /** Namespace names (for `ip netns exec`). */
  readonly ns: Record<Side, string>;
  /** veth device names inside each namespace. */
  readonly dev: Record<Side, string>;
  /** IPv4 addresses (no prefix length). */
  readonly addr: Record<Side, string>;
  private readonly children = new Set<ChildProcess>();
  private destroyed = false;

  private constructor(id: string, subnet: string) {
    const [o1, o2, o3, o4] = subnet.split('.').map(Number);
    const base = `${o1}.${o2}.${o3}`;
    this.ns = { a: `${NS_PREFIX}${id}-a`, b: `${NS_PREFIX}${id}-b` };
    this.dev = { a: `pcv${id}a`, b: `pcv${id}b` };
    this.addr = { a: `${base}.${o4 + 1}`, b: `${base}.${o4 + 2}` };
  }

  /** Create the namespaces, the veth pair, addresses; bring everything (and lo) up. */
  static async create(opts: NetPairOptions): Promise<NetPair> {
    const m = /^10\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(opts.subnet);
    if (!m || [m[1], m[2], m[3]].some((x) => Number(x) > 255) || Number(m[3]) % 4 !== 0)
      throw new Error(`subnet must be 10.X.Y.Z with Z a multiple of 4, got ${opts.subnet}`);
    // Every tool a test network may need, before anything is made.
    for (const name of ['ip', 'tc', 'nft'] as const) tool(name);
    sweepStale();
    const pair = new NetPair(`${process.pid}-${counter++}`, opts.subnet);
    if (pair.dev.a.length > 15) throw new Error(`interface name too long: ${pair.dev.a}`);
    open.add(pair);
    try {
      const { ns, dev, addr } = pair;
      await run(tool('ip'), ['netns', 'add', ns.a]);
      await run(tool('ip'), ['netns', 'add', ns.b]);
      await run(tool('ip'), ['link', 'add', dev.a, 'netns', ns.a, 'type', 'veth', 'peer', 'name', dev.b, 'netns', ns.b]);
      for (const s of ['a', 'b'] as const) {
        await pair.exec(s, tool('ip'), ['addr', 'add', `${addr[s]}/30`, 'dev', dev[s]]);
        await pair.exec(s, tool('ip'), ['link', 'set', dev[s], 'up']);
        await pair.exec(s, tool('ip'), ['link', 'set', 'lo', 'up']);
      }
    } catch (e) {
      await pair.destroy();
      throw e;
    }
    return pair;
  }

  /** Run a command inside a namespace to completion; rejects on non-zero exit (with stderr). */
  async exec(side: Side, cmd: string, args: string[] = []): Promise<ExecResult> {
    try {
      return await run(tool('ip'), ['netns', 'exec', this.ns[side], cmd, ...args], { maxBuffer: 64 << 20 });
    } catch (e) {
      const err = e as Error & { stderr?: string };
      throw new Error(`[${this.ns[side]}] ${cmd} ${args.join(' ')}: ${err.stderr?.trim() || err.message}`);
    }
  }

  /** Start a long-running command inside a namespace; it is SIGKILLed by destroy() if still alive. */
  spawn(side: Side, cmd: string, args: string[] = [], opts: SpawnOptions = {}): ChildProcess {
    const child = spawn(tool('ip'), ['netns', 'exec', this.ns[side], cmd, ...args], { stdio: 'pipe', ...opts });
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    return child;
  }

  /** Limit what side sends to `rate` (tc syntax: "100mbit", "1gbit") with a tbf qdisc. */
  async limitRate(side: Side, rate: string, burst = '256kb'): Promise<void> {
    await this.exec(side, tool('tc'), ['qdisc', 'replace', 'dev', this.dev[side], 'root', 'tbf', 'rate', rate, 'burst', burst, 'latency', '50ms']);
  }

  /** Remove a rate limit set by limitRate. */
  async clearRate(side: Side): Promise<void> {
    await this.exec(side, tool('tc'), ['qdisc', 'del', 'dev', this.dev[side], 'root']);
  }

  /** Drop `percent` % of the packets side sends (nftables numgen; the kernel has no netem). */
  async addLoss(side: Side, percent: number): Promise<void> {
    if (!(percent >= 0 && percent <= 100)) throw new Error(`loss percent must be 0..100, got ${percent}`);
    await this.clearLoss(side);
    // nft joins its arguments into one command line: no shell is involved, so no quoting needed
    await this.exec(side, tool('nft'), ['add', 'table', 'inet', 'precopy_loss']);
    await this.exec(side, tool('nft'), ['add', 'chain', 'inet', 'precopy_loss', 'out', '{ type filter hook output priority 0; policy accept; }']);
    // numgen's range is 0..99: "< 100" is rejected, so 100 % is a plain drop
    const match = percent >= 100 ? [] : ['numgen', 'random', 'mod', '100', '<', String(Math.round(percent))];
    await this.exec(side, tool('nft'), ['add', 'rule', 'inet', 'precopy_loss', 'out', 'oifname', this.dev[side], ...match, 'drop']);
  }

  /** Remove the loss set by addLoss (no-op if none). */
  async clearLoss(side: Side): Promise<void> {
    const tables = (await this.exec(side, tool('nft'), ['list', 'tables'])).stdout;
    if (tables.includes('inet precopy_loss')) await this.exec(side, tool('nft'), ['delete', 'table', 'inet', 'precopy_loss']);
  }

  /** Cut the link (both ends down): connections stall, new connects fail. */
  async cut(): Promise<void> {
    await this.exec('a', tool('ip'), ['link', 'set', this.dev.a, 'down']);
    await this.exec('b', tool('ip'), ['link', 'set', this.dev.b, 'down']);
  }

  /** Bring the link back up after cut(). */
  async restore(): Promise<void> {
    await this.exec('a', tool('ip'), ['link', 'set', this.dev.a, 'up']);
    await this.exec('b', tool('ip'), ['link', 'set', this.dev.b, 'up']);
  }

  /** Kill what still runs in the namespaces, delete them (the veth pair goes with them). */
  async destroy(): Promise<void> {
    this.destroySync();
  }

  /** Synchronous destroy, for the process-exit hook. Idempotent. */
  destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    open.delete(this);
    for (const c of this.children) c.kill('SIGKILL');
    killAndDelete(this.ns.a);
    killAndDelete(this.ns.b);
  }
}

/** Make a pair, run fn with it, always destroy it. */
export async function withNetPair<T>(opts: NetPairOptions, fn: (pair: NetPair) => Promise<T>): Promise<T> {
  const pair = await NetPair.create(opts);
  try {
    return await fn(pair);
  } finally {
    await pair.destroy();
  }
}

/** Names of the namespaces this helper currently owns or left (for cleanup assertions). */
export function listNamespaces(): string[] {
  try {
    return fs.readdirSync('/var/run/netns').filter((n) => n.startsWith(NS_PREFIX));
  } catch {
    return [];
  }
}
