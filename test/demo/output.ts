// What the demo prints: a heading a step, a few plain lines under it, and DemoFailure, the error
// whose message is the one line the demo ends with when something it shows does not hold.

/** Something the demo checks did not hold: its message is the whole explanation (one line). */
export class DemoFailure extends Error {}

/** A step's heading. */
export const say = (s: string): void => void process.stdout.write(`\n== ${s}\n`);

/** A line under the current heading. */
export const print = (s: string): void => void process.stdout.write(`${s}\n`);
