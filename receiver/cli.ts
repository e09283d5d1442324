#!/usr/bin/env node
// `receiver`: the destination side of precopy. One subcommand per job, each in
// receiver/commands/NAME.ts exporting run(argv) → exit status; modules load on demand so that
// `receiver list` does not pull in gRPC. User mistakes end with one line on stderr (plus the
// usage) and exit status 2, never a stack trace.

import { UserError, runMain } from '../common/errors';

interface Command {
  summary: string;
  load(): Promise<{ run(argv: string[]): Promise<number | void> }>;
}

const COMMANDS: Record<string, Command> = {
  serve: { summary: 'run the gRPC receiver that accepts migrations', load: () => import('./commands/serve') },
  list: { summary: 'list the sessions of an images directory', load: () => import('./commands/list') },
  verify: { summary: 'check that a session is committed, complete and its digests match', load: () => import('./commands/verify') },
  export: { summary: 'write a committed image as raw files per VMA or an ELF core file', load: () => import('./commands/export') },
  gc: { summary: 'remove old failed and aborted sessions', load: () => import('./commands/gc') },
  restore: { summary: 'start the process of a committed restorable image on this host', load: () => import('./commands/restore') },
  report: { summary: "write a session's report page (HTML) from what the receiver keeps", load: () => import('./commands/report') },
};

const USAGE = `usage: receiver <command> [options]

Receives live migrations of process memory (precopy) and keeps verified memory images.

commands:
${Object.entries(COMMANDS)
  .map(([name, c]) => `  ${name.padEnd(8)} ${c.summary}`)
  .join('\n')}

'receiver <command> --help' shows a command's options.`;

runMain('receiver', async () => {
  const [name, ...argv] = process.argv.slice(2);
  if (name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (name === undefined) throw new UserError(`a command is required\n\n${USAGE}`);
  const command = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (!command) throw new UserError(`unknown command '${name}'\n\n${USAGE}`);
  return (await command.load()).run(argv);
});
