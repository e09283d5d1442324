// `npm run demo` (via scripts/demo.mjs): the whole product in one minute, with real processes.
//  1. start a receiver on a free port (images in a temporary directory)
//  2. start a workload: 256 MiB filled from a seed, two threads rewriting pages at 20 MB/s
//  3. migrate it with the real sender CLI: the convergence table and summary print as it runs
//  4. check the image: `receiver verify`, then a raw export compared page by page with the
//     frozen process's memory (/proc/PID/mem), then let the process run on and check itself
// Options: --mib N (default 256), --rate BYTES_PER_SEC (default 20000000), --keep (keep images).

import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import { Target } from '../helpers/target';
import { startReceiver } from '../helpers/receiver';
import { compareImageWithMemory, exportRaw, receiverCli, SENDER_CLI, killStopped, tempDir } from '../helpers/migration-cli';

const { values } = parseArgs({
  options: { mib: { type: 'string' }, rate: { type: 'string' }, keep: { type: 'boolean' } },
});
const mib = Number(values.mib ?? 256);
const rate = Number(values.rate ?? 20_000_000);

const say = (s: string) => process.stdout.write(`\n== ${s}\n`);

async function main(): Promise<number> {
  const images = tempDir('precopy-demo-');
  const receiver = await startReceiver({ images });
  let target: Target | null = null;
  try {
    say(`receiver listening on ${receiver.address}, images in ${images}`);

    target = await Target.start({ mib, seed: 42 });
    await target.writers(2, rate);
    say(`workload pid ${target.pid}: ${mib} MiB, 2 writer threads rewriting pages at ${(rate / 1e6).toFixed(0)} MB/s`);

    const session = `demo-${target.pid}`;
    const args = ['migrate', '--pid', String(target.pid), '--to', receiver.address, '--session', session, '--after', 'stop'];
    say(`sender ${args.join(' ')}`);
    const code = await new Promise<number | null>((resolve) => {
      const child = spawn(process.execPath, [SENDER_CLI, ...args], { stdio: ['ignore', 'inherit', 'inherit'] });
      child.once('close', (c) => resolve(c));
    });
    if (code !== 0) {
      say(`sender failed (exit ${code})`);
      return 1;
    }

    say(`receiver verify ${session}`);
    const v = await receiverCli(['verify', '--images', images, session]);
    process.stdout.write(v.stdout + v.stderr);
    if (v.code !== 0) return 1;

    say('comparing the exported image with the stopped process, page by page (/proc/PID/mem)');
    const out = await exportRaw(images, session);
    const cmp = compareImageWithMemory(target.pid, out);
    fs.rmSync(out, { recursive: true, force: true });
    if (cmp.problem) {
      say(`MISMATCH: ${cmp.problem}`);
      return 1;
    }
    process.stdout.write(`image equals memory: ${cmp.pages} pages in ${cmp.vmas} mappings\n`);

    process.kill(target.pid, 'SIGCONT');
    const written = await target.stopWriters();
    const check = await target.check();
    say(`the source process ran on after the migration: ${written} pages written in all, self-check bad=${check.bad}`);
    return check.bad === 0 ? 0 : 1;
  } finally {
    if (target) killStopped(target.pid);
    await receiver.stop();
    if (!values.keep) fs.rmSync(images, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`demo: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
