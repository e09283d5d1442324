// See pagemap_walk.h. The per-call limits (512 regions, the stale walk_end beyond them) live in
// pagemapScan(); this loop only chains the calls.
#include "pagemap_walk.h"

#include <stdio.h>
#include <unistd.h>

#include <algorithm>

namespace precopy {

namespace {

constexpr size_t kVecRegions = 512;  // pagemapScan's clamp: a bigger vec would go unused

}  // namespace

void pagemapWalk(int pagemapFd, const std::vector<WalkRange>& ranges, uint64_t budget, const WalkOut& out,
                 WalkCursor& c) {
  static const uint64_t ps = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  uint64_t vec[3 * kVecRegions];
  c.regions = 0;
  c.limitedPages = 0;
  c.unlimitedRegions = 0;
  while (c.range < ranges.size()) {
    const WalkRange& r = ranges[c.range];
    if (c.position < r.req.start) c.position = r.req.start;
    if (c.position >= r.req.end) {
      c.range++;
      c.position = 0;
      continue;
    }
    if (c.regions >= out.cap || (r.limited && c.limitedPages >= budget)) return;
    ScanRequest req = r.req;
    req.start = c.position;
    req.maxPages = r.limited ? budget - c.limitedPages : 0;
    c.ioctls++;
    const ScanResult res = pagemapScan(pagemapFd, req, vec, std::min(kVecRegions, out.cap - c.regions));
    const double index = static_cast<double>(c.range);
    for (uint64_t i = 0; i < res.count; i++) {
      const uint64_t start = vec[3 * i], pages = (vec[3 * i + 1] - start) / ps;
      const double cat = static_cast<double>(vec[3 * i + 2]);
      if (r.limited) c.limitedPages += pages;
      if (c.regions > 0) {
        double* run = out.runs + 2 * (c.regions - 1);
        const double* meta = out.meta + WalkMetaField::Length * (c.regions - 1);
        if (meta[WalkMetaField::Range] == index && meta[WalkMetaField::Categories] == cat &&
            run[0] + run[1] * ps == static_cast<double>(start)) {
          run[1] += static_cast<double>(pages);
          continue;
        }
      }
      if (!r.limited) c.unlimitedRegions++;
      out.runs[2 * c.regions] = static_cast<double>(start);
      out.runs[2 * c.regions + 1] = static_cast<double>(pages);
      out.meta[WalkMetaField::Length * c.regions + WalkMetaField::Categories] = cat;
      out.meta[WalkMetaField::Length * c.regions + WalkMetaField::Range] = index;
      c.regions++;
    }
    if (res.walkEnd <= c.position || res.walkEnd > r.req.end) {
      char what[160];
      snprintf(what, sizeof what, "PAGEMAP_SCAN of %llx-%llx from %llx: walk_end %llx made no progress",
               (unsigned long long)r.req.start, (unsigned long long)r.req.end, (unsigned long long)c.position,
               (unsigned long long)res.walkEnd);
      throwSys(EIO, "ioctl(PAGEMAP_SCAN)", what);
    }
    c.position = res.walkEnd;
  }
}

}  // namespace precopy
