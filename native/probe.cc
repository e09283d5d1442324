// Kernel feature probe. Each feature is tried for real on this process rather than guessed from
// the version number: distributions backport, and configs turn features off.
#include "probe.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "kernel_abi.h"
#include "sys_error.h"

namespace precopy {

namespace {

// Category bits precopy relies on (see sender scanning): a kernel refusing one cannot be used.
constexpr uint64_t kNeededCategories =
    PAGE_IS_WRITTEN | PAGE_IS_FILE | PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_PFNZERO;
constexpr const char* kCategoryNames[] = {"WPALLOWED", "WRITTEN", "FILE",       "PRESENT", "SWAPPED",
                                          "PFNZERO",   "HUGE",    "SOFT_DIRTY", "GUARD"};

// A PAGEMAP_SCAN of one page of our own stack, asking for `category` bits; -1 errno on failure.
int scanOnce(int pm, uint64_t category) {
  page_region vec[1];
  const long ps = sysconf(_SC_PAGESIZE);
  const uint64_t here = reinterpret_cast<uint64_t>(&vec) & ~static_cast<uint64_t>(ps - 1);
  pm_scan_arg a = {};
  a.size = sizeof a;
  a.start = here;
  a.end = here + static_cast<uint64_t>(ps);
  a.vec = reinterpret_cast<uint64_t>(vec);
  a.vec_len = 1;
  a.category_anyof_mask = category;
  a.return_mask = category;
  return ::ioctl(pm, PAGEMAP_SCAN, &a) < 0 ? errno : 0;
}

}  // namespace

KernelProbe probeKernel() {
  KernelProbe p;
  struct utsname u;
  if (::uname(&u) == 0) p.kernelRelease = u.release;
  p.pageSize = sysconf(_SC_PAGESIZE);

  Fd pm(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
  if (pm.valid() && scanOnce(pm.get(), PAGE_IS_PRESENT) != ENOTTY) {
    p.pagemapScan = true;
    // Probe bit by bit: EINVAL means "category unknown to this kernel".
    for (int bit = 0; bit < 16; bit++)
      if (scanOnce(pm.get(), uint64_t{1} << bit) == 0) p.acceptedCategories |= uint64_t{1} << bit;
  }

  Fd uffd(static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK)));
  const int uffdErr = uffd.valid() ? 0 : errno;
  if (uffd.valid()) {
    p.userfaultfd = true;
    // UFFDIO_API with no features asked returns every feature the kernel supports.
    struct uffdio_api api = {};
    api.api = UFFD_API;
    if (::ioctl(uffd.get(), UFFDIO_API, &api) == 0) {
      p.uffdWpAsync = (api.features & UFFD_FEATURE_WP_ASYNC) != 0;
      p.uffdWpUnpopulated = (api.features & UFFD_FEATURE_WP_UNPOPULATED) != 0;
    }
  }

  if (!p.pagemapScan) p.missing.push_back("PAGEMAP_SCAN ioctl on /proc/PID/pagemap (Linux >= 6.7)");
  if (!p.userfaultfd)
    p.missing.push_back(std::string("userfaultfd (") + strerror(uffdErr) +
                        "; needs CONFIG_USERFAULTFD and root or CAP_SYS_PTRACE)");
  if (p.userfaultfd && !p.uffdWpAsync) p.missing.push_back("UFFD_FEATURE_WP_ASYNC (Linux >= 6.7)");
  if (p.userfaultfd && !p.uffdWpUnpopulated) p.missing.push_back("UFFD_FEATURE_WP_UNPOPULATED (Linux >= 6.4)");
  if (p.pagemapScan)
    for (int bit = 0; bit < 9; bit++)
      if ((kNeededCategories >> bit & 1) && !(p.acceptedCategories >> bit & 1))
        p.missing.push_back(std::string("PAGEMAP_SCAN category PAGE_IS_") + kCategoryNames[bit]);
  return p;
}

}  // namespace precopy
