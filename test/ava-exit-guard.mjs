// Loaded into every ava worker by test/ava.config.mjs (the config test/run-tests.mjs uses).
// Once a test file's tests are done its worker process must exit; if something a test started
// is still open (a server, a child process, a socket, a timer), the process stays alive, and ava
// waits for it: in ava 7 its inactivity timeout does not fire again once a test has called
// t.timeout() (test/e2e/sender-kill does), so a left-over server hung the whole run with no
// output. This guard gives the process `graceMs` to exit, then names what holds it open and
// exits with status 1, which ava reports as a failure of that file.

import test, { registerCompletionHandler } from 'ava';
import { fileURLToPath } from 'node:url';

export default function exitGuard(graceMs = 15_000) {
  // What the worker holds itself (its stdio and IPC pipes) is not worth naming.
  const baseline = process.getActiveResourcesInfo();
  registerCompletionHandler(() => {
    const timer = setTimeout(() => {
      let file = '';
      try {
        file = fileURLToPath(test.meta.file);
      } catch {
        file = String(test.meta?.file ?? 'this test file');
      }
      const held = process.getActiveResourcesInfo();
      for (const r of baseline) if (held.includes(r)) held.splice(held.indexOf(r), 1);
      process.stderr.write(
        `ava-exit-guard: ${file}: its tests ended ${graceMs / 1000} s ago but its process is still held open by ` +
          `[${held.join(', ')}]: a server, child process, socket or timer a test did not stop (stop it in t.teardown). Exiting with status 1.\n`,
      );
      process.exit(1);
    }, graceMs);
    timer.unref();
  });
}
