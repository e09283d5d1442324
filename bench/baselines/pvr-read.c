// The raw limit of round 0: copy ranges of another (stopped) process's memory with
// process_vm_readv into one reused buffer, as fast as the kernel allows, and do nothing else
// with the bytes. The bench stops the target (SIGSTOP) around the call.
//
//   pvr-read PID START:LENGTH [START:LENGTH ...] [--buf-mib N]   (numbers: decimal or 0x hex)
// prints one line: bytes=B seconds=S gbps=G
#define _GNU_SOURCE
#include "clock.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <time.h>

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: pvr-read PID START:LENGTH [START:LENGTH ...] [--buf-mib N]\n");
    return 2;
  }
  pid_t pid = (pid_t)strtol(argv[1], NULL, 0);
  size_t bufBytes = 16UL << 20;
  for (int i = 2; i + 1 < argc; i++)
    if (strcmp(argv[i], "--buf-mib") == 0) bufBytes = strtoul(argv[i + 1], NULL, 0) << 20;
  // Touched once before timing: the copy never pays first-write faults in our own buffer.
  char *buf = mmap(NULL, bufBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (buf == MAP_FAILED) {
    perror("mmap");
    return 1;
  }
  memset(buf, 1, bufBytes);

  size_t total = 0;
  double t0 = now();
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "--buf-mib") == 0) {
      i++;
      continue;
    }
    char *colon;
    unsigned long start = strtoul(argv[i], &colon, 0);
    if (*colon != ':') {
      fprintf(stderr, "pvr-read: bad range %s\n", argv[i]);
      return 2;
    }
    unsigned long len = strtoul(colon + 1, NULL, 0);
    for (unsigned long off = 0; off < len;) {
      size_t n = len - off < bufBytes ? len - off : bufBytes;
      struct iovec local = {buf, n}, remote = {(void *)(start + off), n};
      ssize_t got = process_vm_readv(pid, &local, 1, &remote, 1, 0);
      if (got <= 0) {
        fprintf(stderr, "pvr-read: process_vm_readv at 0x%lx: %s\n", start + off, got < 0 ? strerror(errno) : "0 bytes");
        return 1;
      }
      off += (unsigned long)got;
      total += (size_t)got;
    }
  }
  double s = now() - t0;
  printf("bytes=%zu seconds=%.6f gbps=%.3f\n", total, s, total / s / 1e9);
  return 0;
}
