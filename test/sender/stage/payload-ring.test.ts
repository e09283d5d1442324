// sender/stage/payload-ring.ts: a slot is never handed out twice before its release; released
// slots are reused, at most `capacity` of them kept.

import test from 'ava';
import { PayloadRing } from '../../../sender/stage/payload-ring';

test('a held slot is never handed out again; released slots are reused', (t) => {
  const ring = new PayloadRing(4096, 2);
  const a = ring.acquire();
  const b = ring.acquire();
  const c = ring.acquire(); // all held: a new slot rather than a shared one
  t.is(new Set([a, b, c]).size, 3);
  t.is(ring.inUse, 3);
  t.is(ring.stats.slotsMade, 3);
  ring.release(a);
  ring.release(a); // idempotent: a double release must not free the slot twice
  t.is(ring.inUse, 2);
  const d = ring.acquire();
  t.is(d, a, 'the released slot is reused');
  t.not(ring.acquire(), d, 'and handed out once only');
  t.is(ring.stats.slotsMade, 4);
});

test('release keeps at most capacity free slots', (t) => {
  const ring = new PayloadRing(4096, 2);
  const held = [ring.acquire(), ring.acquire(), ring.acquire(), ring.acquire()];
  for (const s of held) ring.release(s);
  t.is(ring.inUse, 0);
  const again = new Set([ring.acquire(), ring.acquire(), ring.acquire()]);
  t.is(held.filter((s) => again.has(s)).length, 2, 'two kept, the rest left to the GC');
  t.is(ring.stats.slotsMade, 5);
  t.throws(() => new PayloadRing(4096, 0), { instanceOf: RangeError });
});
