// redis-server for the tests that migrate it (Debian package redis-server, redis-tools beside
// it): a RESP client over node:net, and a server started so that it can be migrated.

import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import { freePort } from './prometheus';
import { waitFor } from './wait-for';

// ---- a RESP client (redis's protocol) over node:net -------------------------------------------

export class ReplyError extends Error {}
export type Reply = string | number | Buffer | null | ReplyError | Reply[];

/** Parses one reply from buf at off: [reply, next offset], or null when incomplete. */
function parseReply(buf: Buffer, off: number): [Reply, number] | null {
  const eol = buf.indexOf('\r\n', off);
  if (eol < 0) return null;
  const line = buf.toString('utf8', off + 1, eol);
  const next = eol + 2;
  switch (buf[off]) {
    case 0x2b: // +
      return [line, next];
    case 0x2d: // -
      return [new ReplyError(line), next];
    case 0x3a: // :
      return [Number(line), next];
    case 0x24: {
      // $
      const len = Number(line);
      if (len < 0) return [null, next];
      if (buf.length < next + len + 2) return null;
      return [Buffer.from(buf.subarray(next, next + len)), next + len + 2];
    }
    case 0x2a: {
      // *
      const n = Number(line);
      if (n < 0) return [null, next];
      const items: Reply[] = [];
      let at = next;
      for (let i = 0; i < n; i++) {
        const r = parseReply(buf, at);
        if (!r) return null;
        items.push(r[0]);
        at = r[1];
      }
      return [items, at];
    }
    default:
      throw new Error(`bad RESP reply: ${JSON.stringify(buf.toString('latin1', off, Math.min(eol, off + 80)))}`);
  }
}

export class Redis {
  private buf: Buffer = Buffer.alloc(0);
  private readonly waiting: { resolve: (r: Reply) => void; reject: (e: Error) => void }[] = [];
  private constructor(private readonly sock: net.Socket) {
    sock.on('data', (d: Buffer) => {
      this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
      let off = 0;
      for (let r; this.waiting.length && (r = parseReply(this.buf, off)); off = r[1]) this.waiting.shift()!.resolve(r[0]);
      this.buf = this.buf.subarray(off);
    });
    const fail = (e: Error) => {
      for (const w of this.waiting.splice(0)) w.reject(e);
    };
    sock.on('error', fail);
    sock.on('close', () => fail(new Error('redis closed the connection')));
  }

  static connect(port: number, host = '127.0.0.1'): Promise<Redis> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, host);
      s.once('error', reject);
      s.once('connect', () => {
        s.off('error', reject);
        resolve(new Redis(s));
      });
    });
  }

  /** Sends every command at once (a pipeline), resolves with the replies in order. */
  pipeline(cmds: (string | Buffer)[][]): Promise<Reply[]> {
    if (this.sock.destroyed) return Promise.reject(new Error('redis closed the connection'));
    const parts: Buffer[] = [];
    for (const args of cmds) {
      parts.push(Buffer.from(`*${args.length}\r\n`));
      for (const a of args) {
        const b = typeof a === 'string' ? Buffer.from(a) : a;
        parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n'));
      }
    }
    const replies = cmds.map(() => new Promise<Reply>((resolve, reject) => this.waiting.push({ resolve, reject })));
    this.sock.write(Buffer.concat(parts));
    return Promise.all(replies);
  }

  async cmd(...args: (string | Buffer)[]): Promise<Reply> {
    const [r] = await this.pipeline([args]);
    if (r instanceof ReplyError) throw r;
    return r;
  }

  async close(): Promise<void> {
    if (this.sock.destroyed) return;
    const closed = new Promise((r) => this.sock.once('close', r));
    this.sock.end();
    await closed;
  }
}

export const text = (r: Reply): string => (Buffer.isBuffer(r) ? r.toString('utf8') : String(r));

/** One section of INFO as name -> value. */
export async function info(c: Redis, section: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const line of text(await c.cmd('INFO', section)).split('\r\n')) {
    const i = line.indexOf(':');
    if (i > 0 && !line.startsWith('#')) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}

export const infoServer = (c: Redis): Promise<Record<string, string>> => info(c, 'server');

/** The socket fds of a process (by inode); a redis with no client holds only its listener. */
export function socketFds(pid: number): string[] {
  const out: string[] = [];
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      const l = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
      if (l.startsWith('socket:')) out.push(`${fd} -> ${l}`);
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

// ---- a migratable redis-server -----------------------------------------------------------------

/**
 * Runs ARGV through python3, which first closes every fd above 2: the test runner's process may
 * hold fds without close-on-exec (the ends of pipes to its parent, for one), and a child would
 * inherit them; --restorable refuses a pipe whose other end is another process's.
 */
export function spawnClean(argv: string[]): ChildProcess {
  const exec = 'import os, sys\nos.closerange(3, 65536)\nos.execvp(sys.argv[1], sys.argv[1:])';
  return spawn('python3', ['-c', exec, ...argv], { stdio: 'ignore' });
}

export interface RedisServer {
  child: ChildProcess;
  port: number;
  /** A client connected once the server answered PING (its pid checked to be child's). */
  client: Redis;
}

/** redis-server on 127.0.0.1 at a free port, working in dir. --save '' and --appendonly no:
 *  nothing forks a child for a background save (a process with children is not restorable, and
 *  a fork during the migration would not be in the image). */
export async function startRedis(dir: string): Promise<RedisServer> {
  const port = await freePort();
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--dir', dir];
  const child = spawnClean(['redis-server', ...args]);
  try {
    const client = await waitFor('redis to answer PING', async () => {
      if (child.exitCode !== null) throw new Error(`redis-server exited with ${child.exitCode}`);
      const r = await Redis.connect(port);
      if ((await r.cmd('PING')) === 'PONG') return r;
      await r.close();
      return undefined;
    });
    const pid = Number((await infoServer(client)).process_id);
    if (pid !== child.pid) throw new Error(`redis on port ${port} is pid ${pid}, not the one spawned (${child.pid})`);
    return { child, port, client };
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
}
