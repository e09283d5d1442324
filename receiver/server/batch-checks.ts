// What the server checks of PageBatch and Discard messages before handing them to the image
// store: sizes bounded (memory a hostile stream can make us allocate), and the payload turned into
// raw page bytes (lz4 must decompress to exactly raw_length; a raw payload must be raw_length
// long). Everything about placement and consistency with the runs (alignment, runs inside the
// round's layout, zero_map length, raw_length = non-zero pages x page size) is checked by
// SessionWriter.writePages/discard before it writes anything, with messages naming the value.

import type { PageBatch } from '../../proto/messages';
import { Lz4Error, decodeLz4Block } from '../../common/lz4-block';
import { MAX_BATCH_BYTES, MAX_BATCH_PAGES, MAX_RUNS } from './limits';
import { invalidArgument, resourceExhausted } from './stream-error';

export interface DecodedBatch {
  runs: number[];
  /** null when the batch has no zero pages. */
  zeroMap: Buffer | null;
  /** Raw bytes of the non-zero pages, in run order. */
  data: Buffer;
}

/** The run list of a PageBatch or Discard: (start, count) pairs, at most MAX_RUNS of them. */
export function checkRunCount(runs: number[], what: string): void {
  if (runs.length > 2 * MAX_RUNS) throw resourceExhausted(`${what} has ${Math.ceil(runs.length / 2)} runs, more than ${MAX_RUNS}`);
}

export function decodeBatch(b: PageBatch): DecodedBatch {
  checkRunCount(b.runs, 'PageBatch');
  if (b.zeroMap.length > MAX_BATCH_PAGES / 8) {
    throw resourceExhausted(`PageBatch zero_map covers ${b.zeroMap.length * 8} pages, more than ${MAX_BATCH_PAGES}`);
  }
  if (b.rawLength > MAX_BATCH_BYTES) throw resourceExhausted(`PageBatch raw_length ${b.rawLength} is more than ${MAX_BATCH_BYTES} bytes`);
  let data: Buffer;
  switch (b.encoding) {
    case 'RAW':
      if (b.payload.length !== b.rawLength) throw invalidArgument(`PageBatch raw payload is ${b.payload.length} bytes, raw_length says ${b.rawLength}`);
      data = b.payload;
      break;
    case 'LZ4':
      try {
        data = decodeLz4Block(b.payload, b.rawLength);
      } catch (e) {
        if (e instanceof Lz4Error) throw invalidArgument(`PageBatch ${e.message}`);
        throw e;
      }
      break;
    default:
      throw invalidArgument(`PageBatch encoding ${String(b.encoding)} is not RAW or LZ4`);
  }
  return { runs: b.runs, zeroMap: b.zeroMap.length > 0 ? b.zeroMap : null, data };
}
