// Writes to a redis whose every acknowledged write must survive a migration, and the check of
// them at the destination (run there through `node -e`, see checkKeysAt).

import * as fs from 'node:fs';
import { info, Redis, text } from './redis';

/** Key and value, as the check reads them from its file. */
export type KeyValue = [string, string];

/** The value the writer stores under w:<n>. */
export const writtenValue = (salt: string, n: number): string => `${salt}:${n}`;

/**
 * Writes w:0, w:1, ... one SET at a time over one connection until the connection breaks or
 * stop() is called, and remembers which SETs redis acknowledged (+OK received). A SET sent but
 * not answered (the connection broke first) may or may not have been applied, so only `acked`
 * is a promise redis made. One at a time: each reply is tied to exactly one key.
 */
export class AckedWriter {
  readonly acked: number[] = [];
  /** Settles with why the writing ended (the error that broke it, or 'stopped'). */
  readonly ended: Promise<string>;
  private stopped = false;

  constructor(
    private readonly client: Redis,
    readonly salt: string,
  ) {
    this.ended = this.loop();
  }

  private async loop(): Promise<string> {
    for (let n = 0; !this.stopped; n++) {
      try {
        const r = await this.client.cmd('SET', `w:${n}`, writtenValue(this.salt, n));
        if (r !== 'OK') return `SET w:${n} answered ${text(r)}`;
        this.acked.push(n);
      } catch (e) {
        return (e as Error).message;
      }
    }
    return 'stopped';
  }

  /** What was acknowledged, as key/value pairs the destination must hold. */
  expected(): KeyValue[] {
    return this.acked.map((n) => [`w:${n}`, writtenValue(this.salt, n)]);
  }

  async stop(): Promise<string> {
    this.stopped = true;
    const why = await this.ended;
    await this.client.close();
    return why;
  }
}

/** Keys whose value in redis is not the expected one (missing ones included), in order. */
export async function wrongKeys(c: Redis, expected: KeyValue[]): Promise<string[]> {
  const wrong: string[] = [];
  for (let i = 0; i < expected.length; i += 1000) {
    const batch = expected.slice(i, i + 1000);
    const got = await c.pipeline(batch.map(([k]) => ['GET', k]));
    got.forEach((v, j) => {
      if (!Buffer.isBuffer(v) || v.toString('utf8') !== batch[j][1]) wrong.push(batch[j][0]);
    });
  }
  return wrong;
}

/** What checkKeysAt finds. */
export interface DestinationCheck {
  checked: number;
  wrong: string[];
  processId: number;
  runId: string;
  commandsProcessed: number;
  /** A new key written and read back. */
  newWrite: boolean;
}

/**
 * For `node -e` inside the destination's network namespace (where the test process cannot
 * connect): checks the key/value pairs in the JSON file `file` against redis at
 * 127.0.0.1:port, writes a new key, and prints a DestinationCheck as JSON.
 */
export async function checkKeysAt(port: number, file: string): Promise<void> {
  const expected = JSON.parse(fs.readFileSync(file, 'utf8')) as KeyValue[];
  const c = await Redis.connect(port);
  const wrong = await wrongKeys(c, expected);
  const server = await info(c, 'server');
  const stats = await info(c, 'stats');
  const newWrite =
    (await c.cmd('SET', 'after:handover', 'written at the destination')) === 'OK' &&
    text(await c.cmd('GET', 'after:handover')) === 'written at the destination';
  await c.close();
  const out: DestinationCheck = {
    checked: expected.length,
    wrong,
    processId: Number(server.process_id),
    runId: server.run_id,
    commandsProcessed: Number(stats.total_commands_processed),
    newWrite,
  };
  process.stdout.write(JSON.stringify(out));
}
