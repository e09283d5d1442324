// A destination "host" on this machine, for the handover tests and `npm run demo`: network
// namespace b of a NetPair plus a PID namespace of its own, with the receiver inside both. The
// source process stays in the root namespaces with its pid and ports, as it would on another host;
// the handed-over process gets its pid number inside the new PID namespace. The mount namespace is
// a copy (only /proc differs), so status files written by path are readable from here.
//
// The migration link is the veth pair (the sender in namespace a, the receiver at b's address),
// or with link 'loopback' 127.0.0.1 inside namespace b (the sender run there too): the same
// handover with the link over loopback, while the process still moves between network namespaces.
//
// PID 1 of the namespace is a shell looping on `sleep 1`, not the receiver: when PID 1 exits every
// process of the namespace dies, and a receiver restart must not take the handed-over process with
// it. Like any init it reaps the orphans it adopts (dash waits for any child while its sleep
// runs; `sleep infinity` reaped nothing): a killed receiver's zombie would seem to hold its
// session lock, and its killed restore stub the pid a rebuilt one needs.

import { execFileSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { collect, SENDER_CLI, type ProcessRun, type SenderRun } from './migration-cli';
import { NetPair, tool } from './netns';
import { startReceiver, type ReceiverHandle } from './receiver';
import type { MigrationSummary } from '../../sender/report/figures';

const quote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/** How the sender reaches the receiver: over the veth pair, or over loopback inside namespace b. */
export type DestLink = 'veth' | 'loopback';

/** Children of pid (root-namespace pids). */
function children(pid: number): number[] {
  const out: number[] = [];
  for (const t of fs.readdirSync(`/proc/${pid}/task`)) {
    const c = fs.readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').trim();
    if (c) out.push(...c.split(/\s+/).map(Number));
  }
  return out;
}

export class DestHost {
  receiver!: ReceiverHandle;
  readonly images = fs.mkdtempSync(path.join(os.tmpdir(), 'precopy-handover-'));
  readonly tokenFile = path.join(this.images, '..', `${path.basename(this.images)}.token`);
  private constructor(
    readonly pair: NetPair,
    readonly port: number,
    private readonly serveArgs: string[],
    readonly link: DestLink,
  ) {
    fs.writeFileSync(this.tokenFile, 'handover-test-token\n', { mode: 0o600 });
  }

  static async create(subnet: string, serveArgs: string[], env: NodeJS.ProcessEnv = {}, link: DestLink = 'veth'): Promise<DestHost> {
    const pair = await NetPair.create({ subnet });
    const host = new DestHost(pair, 17000 + Math.floor(Math.random() * 1000), serveArgs, link);
    try {
      host.receiver = await startReceiver({
        images: host.images,
        listen: host.address,
        args: host.receiverArgs(),
        spawner: (cmd, args) => {
          const envs = Object.entries(env).map(([k, v]) => `${k}=${quote(v ?? '')}`);
          const line = `${envs.join(' ')} ${[cmd, ...args].map(quote).join(' ')} & while :; do sleep 1; done`;
          return pair.spawn('b', 'unshare', ['--pid', '--fork', '--kill-child', '--mount-proc', 'sh', '-c', line]);
        },
      });
    } catch (e) {
      await host.destroy();
      throw e;
    }
    return host;
  }

  private receiverArgs(): string[] {
    return ['--token-file', this.tokenFile, '--insecure', ...this.serveArgs];
  }

  /** kill -9 the receiver and start another inside the same namespaces (not a child of PID 1:
   *  started through nsenter, as an operator's restart would be). */
  async restartReceiver(): Promise<void> {
    const init = this.init;
    try {
      process.kill(this.receiverPid(), 'SIGKILL');
      await new Promise((r) => setTimeout(r, 200));
    } catch {
      // killed already
    }
    const first = this.receiver;
    this.receiver = await startReceiver({
      images: this.images,
      listen: this.address,
      args: this.receiverArgs(),
      spawner: (cmd, args) => this.pair.spawn('b', 'nsenter', ['-t', String(init), '-p', '-m', '--', cmd, ...args]),
    });
    this.firstReceiver = first;
  }

  /** The receiver PID 1 started (kept for init and cleanup after a restart). */
  private firstReceiver: ReceiverHandle | null = null;

  get address(): string {
    return `${this.link === 'loopback' ? '127.0.0.1' : this.pair.addr.b}:${this.port}`;
  }

  /** PID 1 of the namespace (its root-namespace pid). */
  get init(): number {
    return children((this.firstReceiver ?? this.receiver).child.pid!)[0];
  }

  /** The receiver's node process (root-namespace pid). */
  receiverPid(): number {
    const parent = this.firstReceiver ? this.receiver.child.pid! : this.init;
    const node = [parent, ...children(parent)].find((p) => fs.readlinkSync(`/proc/${p}/exe`) === process.execPath);
    if (node === undefined) throw new Error('no receiver process in the destination namespace');
    return node;
  }

  /** The root-namespace pid of the process that has pid `inner` in the destination namespace. */
  rootPid(inner: number): number | null {
    const ns = fs.readlinkSync(`/proc/${this.init}/ns/pid`);
    for (const p of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(p)) continue;
      try {
        const nspid = /^NSpid:\s+(.*)$/m
          .exec(fs.readFileSync(`/proc/${p}/status`, 'utf8'))?.[1]
          .trim()
          .split(/\s+/)
          .map(Number);
        if (nspid?.length === 2 && nspid[1] === inner && fs.readlinkSync(`/proc/${p}/ns/pid`) === ns) return Number(p);
      } catch {
        // exited meanwhile
      }
    }
    return null;
  }

  /** Executables of every process in the destination namespace but PID 1 (and its sleeps) and the receiver. */
  others(): string[] {
    const out: string[] = [];
    const init = this.init;
    const initsOwn = new Set(children(init));
    for (const p of execFileSync(tool('ip'), ['netns', 'pids', this.pair.ns.b], { encoding: 'utf8' }).split(/\s+/).filter(Boolean).map(Number)) {
      if (p === this.receiver.child.pid || p === this.firstReceiver?.child.pid || p === init) continue;
      try {
        const exe = fs.readlinkSync(`/proc/${p}/exe`);
        if (exe !== process.execPath && !(initsOwn.has(p) && exe.endsWith('/sleep'))) out.push(exe);
      } catch {
        // exited meanwhile
      }
    }
    return out;
  }

  /** Run `node -e script` inside the destination's network namespace. */
  async nodeInside(script: string): Promise<string> {
    return (await this.pair.exec('b', process.execPath, ['-e', script])).stdout.trim();
  }

  /** Spawn a command on the source side of the link (network namespace a; b over loopback). */
  spawnSource(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
    return this.pair.spawn(this.link === 'loopback' ? 'b' : 'a', cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  }

  /** `sender migrate --pid PID --handover --json` to this host's receiver, run on the source side
   *  of the link with the token, started; `done` settles with the run, its --json summary parsed
   *  when it succeeded. */
  startHandover(pid: number, session: string, env: NodeJS.ProcessEnv = {}, extra: string[] = []): { child: ChildProcess; done: Promise<SenderRun> } {
    const args = ['migrate', '--pid', String(pid), '--to', this.address, '--session', session, '--handover'];
    args.push('--token-file', this.tokenFile, '--insecure', '--downtime-ms', '50', '--json', ...extra);
    const child = this.spawnSource(process.execPath, [SENDER_CLI, ...args], env);
    const done = collect(child).then((run) => ({ ...run, summary: run.code === 0 ? (JSON.parse(run.stdout) as MigrationSummary) : null }));
    return { child, done };
  }

  /** `sender resolve` of a session whose source is pid, run on the source side with the token. */
  resolve(session: string, pid: number): Promise<ProcessRun> {
    const args = ['resolve', '--to', this.address, '--session', session, '--pid', String(pid), '--token-file', this.tokenFile, '--insecure'];
    return collect(this.spawnSource(process.execPath, [SENDER_CLI, ...args]));
  }

  /** startHandover, to its end. */
  handover(pid: number, session: string, env: NodeJS.ProcessEnv = {}, extra: string[] = []): Promise<SenderRun> {
    return this.startHandover(pid, session, env, extra).done;
  }

  /** Rewrite a session's handover record (a receiver that died during the start). */
  setRecordState(session: string, state: string): void {
    const file = path.join(this.images, session, 'handover.json');
    fs.writeFileSync(file, JSON.stringify({ ...JSON.parse(fs.readFileSync(file, 'utf8')), state }));
  }

  /** The handover record of a session, or null. */
  record(session: string): { state: string; pid: number; reason: string } | null {
    try {
      return JSON.parse(fs.readFileSync(path.join(this.images, session, 'handover.json'), 'utf8')) as { state: string; pid: number; reason: string };
    } catch {
      return null;
    }
  }

  async destroy(): Promise<void> {
    await this.pair.destroy();
    fs.rmSync(this.images, { recursive: true, force: true });
    fs.rmSync(this.tokenFile, { force: true });
  }
}
