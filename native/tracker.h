// An armed tracking session: the target's userfaultfd (ours alone) and its /proc/PID/pagemap.
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "pagemap_scan.h"
#include "pagemap_walk.h"
#include "sys_error.h"

namespace precopy {

class Tracker {
 public:
  // Arms tracking of pid (see takeUserfaultfd) and does the UFFDIO_API handshake asking for
  // WP_ASYNC | WP_UNPOPULATED. Must run on the JS main thread (it ptrace-stops the target).
  explicit Tracker(pid_t pid);
  pid_t pid() const { return pid_; }
  bool open() const { return uffd_.valid(); }
  void registerWp(uint64_t start, uint64_t end);
  void unregister(uint64_t start, uint64_t end);
  // Any thread. The fd stays valid while the caller keeps it open (see dupPagemap for threads).
  ScanResult scan(const ScanRequest& req, uint64_t* vec, uint64_t vecLen);
  // A round of scans over many ranges (pagemap_walk.h), on this thread.
  void walk(const std::vector<WalkRange>& ranges, uint64_t budget, const WalkOut& out, WalkCursor& cursor);
  // A private copy of the pagemap fd for a scan on another thread: close() cannot pull it away.
  Fd dupPagemap() const;
  // Closes the uffd (the kernel drops every registration with its last reference) and pagemap.
  void close();

 private:
  void checkOpen(const char* op) const;
  pid_t pid_;
  Fd pagemap_;
  Fd uffd_;
};

}  // namespace precopy
