// What the running kernel offers for precopy's dirty tracking.
#pragma once

#include <stdint.h>

#include <string>
#include <vector>

namespace precopy {

struct KernelProbe {
  std::string kernelRelease;
  long pageSize = 0;
  bool pagemapScan = false;
  bool userfaultfd = false;
  bool uffdWpAsync = false;
  bool uffdWpUnpopulated = false;
  uint64_t acceptedCategories = 0;
  std::vector<std::string> missing;
};

// Probes this process (a few syscalls): nothing here needs another process.
KernelProbe probeKernel();

}  // namespace precopy
