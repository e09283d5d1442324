// What the receiver holds: one 64-bit content hash per page sent (zero pages included), and the
// image digest kept up to date as pages are (re)sent and forgotten — a PageHashTable
// (common/page-hash-table.ts, shared with the receiver's running digest) that the tracking layer
// can ask which pages of a range the receiver holds (HeldPages).

import { PageHashTable } from '../../common/page-hash-table';
import type { HeldPages } from '../../common/page-runs';

export class SentPages extends PageHashTable implements HeldPages {}
