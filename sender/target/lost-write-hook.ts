// Test-only fault (common/fault-injection.ts, PRECOPY_FAULT_LOSE_WRITES=N): the stop-and-copy round
// drops the first N dirty pages the scan reports, as a kernel that lost those writes would: the
// receiver keeps their older copies, the commit digest still matches what was sent, and only the
// verify pass over the frozen target can notice. Tests use it to prove that verify finds and
// re-sends such pages.

import { faultVariable, loseWritesCount } from '../../common/fault-injection';
import { logger } from '../../common/log';
import type { RunBatch } from '../tracking/run-batch';

const log = logger('migrate');

export async function* loseWritesForTest(source: AsyncIterable<RunBatch>, pageSize: number): AsyncIterable<RunBatch> {
  let lose = loseWritesCount();
  if (lose > 0) log.warn(`${faultVariable('LOSE_WRITES')}=${lose}: dropping dirty pages on purpose (test only)`);
  for await (const batch of source) {
    if (lose <= 0) {
      yield batch;
      continue;
    }
    const kept: number[] = [];
    for (let i = 0; i < batch.runs.length; i += 2) {
      const drop = Math.min(lose, batch.runs[i + 1]);
      lose -= drop;
      if (drop < batch.runs[i + 1]) kept.push(batch.runs[i] + drop * pageSize, batch.runs[i + 1] - drop);
    }
    const pages = kept.reduce((a, v, i) => (i % 2 === 1 ? a + v : a), 0);
    // zeroHint dropped: it is only a hint (those pages get read instead).
    if (pages > 0) yield { runs: Float64Array.from(kept), pages };
  }
}
