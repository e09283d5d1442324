// The raw limits of one dirty-page round, on another process's address space (the target must be
// armed: its VMAs registered with a WP-async userfaultfd, e.g. by the sender's TrackedProcess
// living in the bench process):
//   wp       PAGEMAP_SCAN with PM_SCAN_WP_MATCHING, category_mask = return_mask = PAGE_IS_WRITTEN
//            (the sender's 'dirty' scan) over each range, resumed from walk_end, with the given
//            max_pages and vec size; counts the pages reported (and re-protects them);
//   pagemap  pread of /proc/PID/pagemap (8 bytes per page) for each range, the pre-6.7 way;
//            counts present pages.
//
//   pm-scan PID wp|pagemap [--max-pages N] [--vec REGIONS] START:END [START:END ...]
// prints one line: seconds=S pages=N calls=C
#define _GNU_SOURCE
#include "clock.h"
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../../native/kernel_abi.h"

#define PS 4096UL
#define PAGEMAP_BUF_ENTRIES (1UL << 17) /* 1 MiB of entries: 512 MiB of address space a read */

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: pm-scan PID wp|pagemap [--max-pages N] [--vec REGIONS] START:END ...\n");
    return 2;
  }
  const char *pid = argv[1];
  int wp = strcmp(argv[2], "wp") == 0;
  if (!wp && strcmp(argv[2], "pagemap") != 0) {
    fprintf(stderr, "pm-scan: mode must be wp or pagemap\n");
    return 2;
  }
  unsigned long maxPages = 0, vecLen = 512;
  unsigned long starts[1024], ends[1024];
  int n = 0;
  for (int i = 3; i < argc; i++) {
    if (strcmp(argv[i], "--max-pages") == 0 && i + 1 < argc) {
      maxPages = strtoul(argv[++i], NULL, 0);
    } else if (strcmp(argv[i], "--vec") == 0 && i + 1 < argc) {
      vecLen = strtoul(argv[++i], NULL, 0);
    } else {
      char *colon;
      if (n == 1024) return 2;
      starts[n] = strtoul(argv[i], &colon, 0);
      if (*colon != ':') {
        fprintf(stderr, "pm-scan: bad range %s\n", argv[i]);
        return 2;
      }
      ends[n++] = strtoul(colon + 1, NULL, 0);
    }
  }
  char path[64];
  snprintf(path, sizeof path, "/proc/%s/pagemap", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    fprintf(stderr, "pm-scan: open %s: %s\n", path, strerror(errno));
    return 1;
  }
  struct page_region *vec = calloc(vecLen, sizeof *vec);
  uint64_t *entries = calloc(PAGEMAP_BUF_ENTRIES, sizeof *entries);
  unsigned long pages = 0, calls = 0;

  double t0 = now();
  for (int r = 0; r < n; r++) {
    if (wp) {
      struct pm_scan_arg a = {
          .size = sizeof a, .flags = PM_SCAN_WP_MATCHING, .start = starts[r], .end = ends[r],
          .vec = (uint64_t)(uintptr_t)vec, .vec_len = vecLen, .max_pages = maxPages,
          .category_mask = PAGE_IS_WRITTEN, .return_mask = PAGE_IS_WRITTEN,
      };
      for (;;) {
        long got = ioctl(fd, PAGEMAP_SCAN, &a);
        calls++;
        if (got < 0) {
          fprintf(stderr, "pm-scan: PAGEMAP_SCAN at 0x%llx: %s\n", (unsigned long long)a.start, strerror(errno));
          return 1;
        }
        for (long i = 0; i < got; i++) pages += (vec[i].end - vec[i].start) / PS;
        if (a.walk_end == 0 || a.walk_end >= a.end) break;
        a.start = a.walk_end;
      }
    } else {
      for (unsigned long page = starts[r] / PS; page < ends[r] / PS;) {
        unsigned long count = ends[r] / PS - page;
        if (count > PAGEMAP_BUF_ENTRIES) count = PAGEMAP_BUF_ENTRIES;
        ssize_t got = pread(fd, entries, count * 8, (off_t)(page * 8));
        calls++;
        if (got <= 0) {
          fprintf(stderr, "pm-scan: pread pagemap at page 0x%lx: %s\n", page, got < 0 ? strerror(errno) : "EOF");
          return 1;
        }
        for (ssize_t i = 0; i < got / 8; i++) pages += entries[i] >> 63;
        page += (unsigned long)got / 8;
      }
    }
  }
  double s = now() - t0;
  printf("seconds=%.6f pages=%lu calls=%lu\n", s, pages, calls);
  return 0;
}
