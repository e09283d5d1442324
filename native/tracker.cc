// Arming = open the target's pagemap, take a userfaultfd made inside it, enable WP-async.
#include "tracker.h"

#include <fcntl.h>

#include <string>

#include "arm_helper.h"
#include "kernel_abi.h"
#include "proc_files.h"
#include "uffd.h"

namespace precopy {

Tracker::Tracker(pid_t pid) : pid_(pid) {
  checkTargetPid(pid);
  checkLeaderAlive(pid);
  pagemap_ = openPagemap(pid);  // before the helper: a permission problem surfaces before any stop
  uffd_ = takeUserfaultfd(pid);
  uffdApi(uffd_.get(), UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED);
}

void Tracker::checkOpen(const char* op) const {
  if (!uffd_.valid()) throwSys(EBADF, op, "tracker of process " + std::to_string(pid_) + " is closed");
}

void Tracker::registerWp(uint64_t start, uint64_t end) {
  checkOpen("ioctl(UFFDIO_REGISTER)");
  uffdRegisterWp(uffd_.get(), start, end);
}

void Tracker::unregister(uint64_t start, uint64_t end) {
  checkOpen("ioctl(UFFDIO_UNREGISTER)");
  uffdUnregister(uffd_.get(), start, end);
}

ScanResult Tracker::scan(const ScanRequest& req, uint64_t* vec, uint64_t vecLen) {
  checkOpen("ioctl(PAGEMAP_SCAN)");
  return pagemapScan(pagemap_.get(), req, vec, vecLen);
}

void Tracker::walk(const std::vector<WalkRange>& ranges, uint64_t budget, const WalkOut& out, WalkCursor& cursor) {
  checkOpen("ioctl(PAGEMAP_SCAN)");
  pagemapWalk(pagemap_.get(), ranges, budget, out, cursor);
}

Fd Tracker::dupPagemap() const {
  checkOpen("ioctl(PAGEMAP_SCAN)");
  Fd fd(::fcntl(pagemap_.get(), F_DUPFD_CLOEXEC, 0));
  if (!fd.valid()) throwErrno(errno, "fcntl(F_DUPFD_CLOEXEC)", "cannot duplicate the pagemap fd");
  return fd;
}

void Tracker::close() {
  uffd_.reset();
  pagemap_.reset();
}

}  // namespace precopy
