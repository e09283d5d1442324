// The disk's limit for round 0: round 0 is timed until the receiver says the pages are durable,
// so no migration can beat writing the same bytes to the same file system and syncing them.
// Writes BYTES of incompressible data from one reused, page-aligned buffer into FILE with
// O_DIRECT (the receiver's store writes large runs the same way: no page-cache allocation), then
// fdatasync, and removes the file. Falls back to buffered writes where O_DIRECT is refused.
//
//   disk-write FILE BYTES [--buf-mib N]
// prints one line: bytes=B seconds=S gbps=G direct=0|1
#define _GNU_SOURCE
#include "clock.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: disk-write FILE BYTES [--buf-mib N]\n");
    return 2;
  }
  const char *file = argv[1];
  size_t total = strtoull(argv[2], NULL, 0);
  size_t bufBytes = 4UL << 20;
  for (int i = 3; i + 1 < argc; i++)
    if (strcmp(argv[i], "--buf-mib") == 0) bufBytes = strtoul(argv[i + 1], NULL, 0) << 20;

  unsigned char *buf;
  if (posix_memalign((void **)&buf, 4096, bufBytes) != 0) {
    perror("posix_memalign");
    return 1;
  }
  unsigned long long x = 0x9E3779B97F4A7C15ULL; // xorshift: bytes lz4 or a disk cannot shrink
  for (size_t i = 0; i < bufBytes; i += 8) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    memcpy(buf + i, &x, 8);
  }

  int direct = 1;
  int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_DIRECT, 0600);
  if (fd < 0 && errno == EINVAL) direct = 0, fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) {
    perror(file);
    return 1;
  }
  double t0 = now();
  for (size_t done = 0; done < total;) {
    size_t n = total - done < bufBytes ? total - done : bufBytes;
    ssize_t w = pwrite(fd, buf, n, (off_t)done);
    if (w < 0) {
      perror("pwrite");
      unlink(file);
      return 1;
    }
    done += (size_t)w;
  }
  if (fdatasync(fd) != 0) {
    perror("fdatasync");
    unlink(file);
    return 1;
  }
  double s = now() - t0;
  close(fd);
  unlink(file);
  printf("bytes=%zu seconds=%.6f gbps=%.3f direct=%d\n", total, s, total / s / 1e9, direct);
  return 0;
}
