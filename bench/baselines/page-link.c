// The per-side CPU floor of the page path: the job each side of a migration does, done by the
// shortest C program, over the same kind of TCP connection.
//   page-link recv FILE                    writer: listen on 127.0.0.1 (any port; prints port=P),
//                                          take one connection, write what arrives into FILE with
//                                          O_DIRECT from one aligned buffer, fdatasync, remove FILE
//   page-link send PORT PID START:LENGTH   reader: process_vm_readv of the (stopped) target's range
//                                          into one reused buffer, written into the connection
// Each prints one line: bytes=B seconds=S cpu=C (user + system seconds of the whole program).
#define _GNU_SOURCE
#include "clock.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define BUF_BYTES (4UL << 20)

static double cpuSeconds(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6;
}

static char *alignedBuffer(void) {
  char *buf;
  if (posix_memalign((void **)&buf, 4096, BUF_BYTES) != 0) {
    perror("posix_memalign");
    exit(1);
  }
  memset(buf, 1, BUF_BYTES); // faulted in before timing
  return buf;
}

static int recvSide(const char *file) {
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 1) < 0 || getsockname(ls, (struct sockaddr *)&a, &al) < 0) {
    perror("page-link recv: listen");
    return 1;
  }
  printf("port=%d\n", ntohs(a.sin_port));
  fflush(stdout);
  int s = accept(ls, NULL, NULL);
  int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_DIRECT, 0600);
  if (s < 0 || fd < 0) {
    perror("page-link recv: accept/open");
    return 1;
  }
  char *buf = alignedBuffer();
  double c0 = cpuSeconds(), t0 = now();
  size_t total = 0;
  for (;;) {
    size_t fill = 0; // whole buffers for O_DIRECT; the last one may be short
    while (fill < BUF_BYTES) {
      ssize_t n = read(s, buf + fill, BUF_BYTES - fill);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      fill += (size_t)n;
    }
    if (fill == 0) break;
    size_t len = (fill + 4095) & ~4095UL;
    if (pwrite(fd, buf, len, (off_t)total) != (ssize_t)len) {
      perror("page-link recv: pwrite");
      return 1;
    }
    total += fill;
    if (fill < BUF_BYTES) break;
  }
  fdatasync(fd);
  double s1 = now() - t0, c1 = cpuSeconds() - c0;
  unlink(file);
  printf("bytes=%zu seconds=%.6f cpu=%.4f\n", total, s1, c1);
  return 0;
}

static int sendSide(int port, pid_t pid, const char *range) {
  char *colon;
  unsigned long start = strtoul(range, &colon, 0);
  if (*colon != ':') {
    fprintf(stderr, "page-link send: bad range %s\n", range);
    return 2;
  }
  unsigned long len = strtoul(colon + 1, NULL, 0);
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) < 0) {
    perror("page-link send: connect");
    return 1;
  }
  char *buf = alignedBuffer();
  double c0 = cpuSeconds(), t0 = now();
  size_t total = 0;
  for (unsigned long off = 0; off < len;) {
    size_t n = len - off < BUF_BYTES ? len - off : BUF_BYTES;
    struct iovec local = {buf, n}, remote = {(void *)(start + off), n};
    ssize_t got = process_vm_readv(pid, &local, 1, &remote, 1, 0);
    if (got <= 0) {
      fprintf(stderr, "page-link send: process_vm_readv at 0x%lx: %s\n", start + off, got < 0 ? strerror(errno) : "0 bytes");
      return 1;
    }
    for (ssize_t w = 0; w < got;) {
      ssize_t k = write(s, buf + w, (size_t)(got - w));
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) {
        perror("page-link send: write");
        return 1;
      }
      w += k;
    }
    off += (unsigned long)got;
    total += (size_t)got;
  }
  shutdown(s, SHUT_WR);
  char c;
  while (read(s, &c, 1) > 0) {
  } // the writer closes once its file is synced
  double s1 = now() - t0, c1 = cpuSeconds() - c0;
  printf("bytes=%zu seconds=%.6f cpu=%.4f\n", total, s1, c1);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "recv") == 0) return recvSide(argv[2]);
  if (argc == 5 && strcmp(argv[1], "send") == 0) return sendSide(atoi(argv[2]), (pid_t)strtol(argv[3], NULL, 0), argv[4]);
  fprintf(stderr, "usage: page-link recv FILE | page-link send PORT PID START:LENGTH\n");
  return 2;
}
