// Process-wide counters of the image store. Plain numbers so that the store has no metrics
// dependency; receiver/receiver-metrics.ts exports them as precopy_store_* counters at scrape time.

export const storeCounters = {
  /** Page bytes written into chunk files (zero pages excluded). */
  bytesWritten: 0,
  /** Of those, bytes written with O_DIRECT (the rest went through the page cache). */
  bytesWrittenDirect: 0,
  /** Bytes appended to final-round journals (page-journal.ts), record heads included. */
  journalBytes: 0,
  /** Pages a writer wrote back from a journal when it opened a session (after a crash). */
  journalReplayedPages: 0,
  /** Pages stored with data. */
  dataPages: 0,
  /** Pages stored as zero bits. */
  zeroPages: 0,
  /** Pages dropped by Discard messages or layout changes. */
  discardedPages: 0,
  /** fsync/fdatasync calls issued (files and directories). */
  fsyncs: 0,
  /** Rounds made durable. */
  roundsDurable: 0,
  /** Successful commits. */
  commits: 0,
  /** Commits refused because the recomputed digest differed. */
  digestMismatches: 0,
  /** Sessions failed because the disk was full. */
  noSpace: 0,
  /** Page bytes read back (digest, export, readPages). */
  bytesRead: 0,
};
