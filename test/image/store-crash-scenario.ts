// A deterministic migration used by the crash tests: the child process (store-crash-child.ts)
// plays it against a real store and is SIGKILLed at a crash point; the test replays the same
// rounds in a model to know what each durable state must hold.

import { chunked, commitModel, figures, Model, pageBytes, pagesOf, PS, sendBatch, shuffled, vma } from './store-helpers';
import type { SessionWriter } from '../../image/image-store';
import type { Vma } from '../../common/vma';

const A = 0x7f0000000000;
/** Spans a 1 GiB window boundary (two chunk files). */
const B = 0x7f0040000000 - 8 * PS;

export const LAYOUT: Vma[] = [vma(A, 64), vma(B, 32)];

interface Batch {
  addrs: number[];
  gen: number;
  zeros: Set<number>;
}
interface Round {
  round: number;
  phase: 'PRECOPY' | 'STOP_AND_COPY' | 'VERIFY_FIX';
  batches: Batch[];
}

const all = [...pagesOf(A, 64), ...pagesOf(B, 32)];
export const ROUNDS: Record<string, Round> = {
  // 8 batches.
  r0: { round: 0, phase: 'PRECOPY', batches: chunked(shuffled(all, 3), 12).map((addrs) => ({ addrs, gen: 0, zeros: new Set([A + 7 * PS, B + 8 * PS]) })) },
  // 4 batches: 40 pages rewritten, two of them now zero.
  r1: {
    round: 1,
    phase: 'STOP_AND_COPY',
    batches: chunked(shuffled(all, 5).slice(0, 40), 10).map((addrs) => ({ addrs, gen: 1, zeros: new Set([A + PS, B]) })),
  },
  // 1 batch: a verify fix-up after a commit.
  r2fix: { round: 2, phase: 'VERIFY_FIX', batches: [{ addrs: [A + 3 * PS, B + 20 * PS], gen: 2, zeros: new Set() }] },
};

/** A round name, a commit, or `NAME+commit`: the round ended by the commit (one durable write). */
export type Step = keyof typeof ROUNDS | 'commit' | `${keyof typeof ROUNDS}+commit`;

/** The model after these rounds (no store involved). */
export function simulate(names: (keyof typeof ROUNDS)[]): Model {
  const m = new Model();
  m.setLayout(LAYOUT);
  for (const name of names) {
    // The content sendBatch stores.
    for (const b of ROUNDS[name].batches) for (const a of b.addrs) m.pages.set(a, b.zeros.has(a) ? 'zero' : pageBytes(a, b.gen));
  }
  return m;
}

export async function playRound(img: SessionWriter, model: Model, name: keyof typeof ROUNDS, endedByCommit = false): Promise<void> {
  const r = ROUNDS[name];
  await img.beginRound(r.round, r.phase, LAYOUT);
  for (const b of r.batches) await sendBatch(img, model, b.addrs, b.gen, b.zeros);
  if (endedByCommit) await commitModel(img, model, [], r.round);
  else await img.endRound(figures(r.round));
}

export async function playSteps(img: SessionWriter, model: Model, steps: Step[], log: (s: string) => void = () => undefined): Promise<void> {
  for (const s of steps) {
    if (s === 'commit') await commitModel(img, model);
    else if (s.endsWith('+commit')) await playRound(img, model, s.slice(0, -'+commit'.length) as keyof typeof ROUNDS, true);
    else await playRound(img, model, s as keyof typeof ROUNDS);
    log(`${s} done`);
  }
}
