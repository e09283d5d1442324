// The demo's first part: a migration to an image, checked against the process itself.
//  1. start a receiver on a free port (images in a temporary directory)
//  2. start a workload (bin/target): memory filled from a seed, two threads rewriting pages
//  3. migrate it with the real sender CLI: the convergence table and summary print as it runs
//  4. check the image: `receiver verify`, then a raw export compared page by page with the
//     frozen process's memory (/proc/PID/mem), then let the process run on and check itself

import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { Target } from '../helpers/target';
import { startReceiver } from '../helpers/receiver';
import { compareImageWithMemory, exportRaw, receiverCli, SENDER_CLI, killStopped, tempDir } from '../helpers/migration-cli';
import type { Cleanup } from './cleanup';
import { DemoFailure, print, say } from './output';

export interface ImagePhaseOptions {
  mib: number;
  /** Bytes a second the writer threads rewrite. */
  rate: number;
  /** Keep the images directory. */
  keep: boolean;
}

export async function imagePhase(cleanup: Cleanup, opts: ImagePhaseOptions): Promise<void> {
  const images = tempDir('precopy-demo-', { keep: true });
  if (!opts.keep) cleanup.add(() => fs.rmSync(images, { recursive: true, force: true }));
  const receiver = await startReceiver({ images });
  cleanup.add(() => receiver.stop());
  say(`receiver listening on ${receiver.address}, images in ${images}`);

  const target = await Target.start({ mib: opts.mib, seed: 42 });
  cleanup.add(() => killStopped(target.pid));
  await target.writers(2, opts.rate);
  say(`workload pid ${target.pid}: ${opts.mib} MiB, 2 writer threads rewriting pages at ${(opts.rate / 1e6).toFixed(0)} MB/s`);

  const session = `demo-${target.pid}`;
  const args = ['migrate', '--pid', String(target.pid), '--to', receiver.address, '--session', session, '--after', 'stop'];
  say(`sender ${args.join(' ')}`);
  // Inherited stdout: the convergence table appears round by round, as an operator sees it.
  const code = await new Promise<number | null>((resolve) => {
    const child = spawn(process.execPath, [SENDER_CLI, ...args], { stdio: ['ignore', 'inherit', 'inherit'] });
    child.once('close', (c) => resolve(c));
  });
  if (code !== 0) throw new DemoFailure(`the sender failed (exit ${code})`);

  say(`receiver verify ${session}`);
  const v = await receiverCli(['verify', '--images', images, session]);
  process.stdout.write(v.stdout + v.stderr);
  if (v.code !== 0) throw new DemoFailure(`receiver verify failed (exit ${v.code})`);

  say('comparing the exported image with the stopped process, page by page (/proc/PID/mem)');
  const out = await exportRaw(images, session);
  const cmp = compareImageWithMemory(target.pid, out);
  fs.rmSync(out, { recursive: true, force: true });
  if (cmp.problem) throw new DemoFailure(`the image differs from the process's memory: ${cmp.problem}`);
  print(`image equals memory: ${cmp.pages} pages in ${cmp.vmas} mappings`);

  process.kill(target.pid, 'SIGCONT');
  const written = await target.stopWriters();
  const check = await target.check();
  say(`the source process ran on after the migration: ${written} pages written in all, self-check bad=${check.bad}`);
  if (check.bad !== 0) throw new DemoFailure(`the source process's self-check found ${check.bad} bad pages after the migration`);
}
