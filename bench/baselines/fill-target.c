// The bench's own target: one private anonymous area of --mib MiB, every page populated with
// content of a chosen kind, optionally at the start of a much bigger MAP_NORESERVE reservation
// (the sparse 64 GiB case of the scan benchmark). Like test/workloads/bin/target it prints a
// ready line, then answers one command per line on stdin; it exits on stdin EOF or when its
// parent dies. It closes every descriptor above 2 it inherited (a restorable image refuses a
// pipe end shared with another process, and the bench's own parent may leak some).
//
//   fill-target [--mib N] [--fill random|text] [--reserve-gib G] [--seed S] [--linger S]
//     random: every byte from a PRNG (incompressible)
//     text:   each page: its index, then 2 KiB of English-like words and newlines, then zeros
//             (lz4 compresses it several-fold; no page is all zeros). The text halves come
//             from a pool of 4096 generated ones: filling 4 GiB word by word takes too long.
//     linger: on stdin EOF, stay S seconds more before exiting (default 0). For the restore
//             section: the copy that `receiver restore` starts reads EOF from its new stdin
//             (/dev/null) and must still be running when the restore command exits; the limit
//             bounds how long a copy the bench could not kill (bench SIGKILLed) outlives it.
//   ready pid=P base=0x... pages=N reserve_pages=M pagesize=4096
// commands:
//   dirty COUNT   write 8 bytes into COUNT pages picked at random in the populated area → ok pages=COUNT
//   info          → ok base=0x... pages=N
//   exit
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define PS 4096UL

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static uint64_t next(void) { /* xorshift64* */
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return rng * 0x2545f4914f6cdd1dULL;
}

static const char *WORDS[] = {
    "the", "of", "and", "to", "in", "is", "memory", "page", "process", "that", "for", "with",
    "kernel", "round", "dirty", "copy", "receiver", "sender", "write", "on", "as", "it", "be",
    "this", "by", "are", "from", "at", "image", "or", "an", "which", "migration", "not", "have",
    "buffer", "stream", "thread", "value", "return", "struct", "int", "if", "else", "while",
    "function", "error", "null", "config", "request", "response", "user", "data", "time", "log",
    "server", "client", "table", "index", "key", "string", "number", "list", "map",
};

#define TEXT_POOL 4096

static void genText(unsigned char *p) {
  size_t off = 0, line = 0;
  while (off < PS / 2 - 16) {
    const char *w = WORDS[next() % (sizeof WORDS / sizeof *WORDS)];
    size_t n = strlen(w);
    memcpy(p + off, w, n);
    off += n;
    line += n + 1;
    p[off++] = line > 60 ? '\n' : ' ';
    if (line > 60) line = 0;
  }
  memset(p + off, 0, PS / 2 - off);
}

int main(int argc, char **argv) {
  unsigned long mib = 64, reserveGib = 0, seed = 1, linger = 0;
  int text = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--mib") == 0) mib = strtoul(argv[i + 1], NULL, 0);
    else if (strcmp(argv[i], "--reserve-gib") == 0) reserveGib = strtoul(argv[i + 1], NULL, 0);
    else if (strcmp(argv[i], "--seed") == 0) seed = strtoul(argv[i + 1], NULL, 0);
    else if (strcmp(argv[i], "--linger") == 0) linger = strtoul(argv[i + 1], NULL, 0);
    else if (strcmp(argv[i], "--fill") == 0) {
      if (strcmp(argv[i + 1], "text") == 0) text = 1;
      else if (strcmp(argv[i + 1], "random") != 0) goto usage;
    } else
      goto usage;
  }
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  close_range(3, ~0U, 0);
  rng ^= seed * 0xd1342543de82ef95ULL;
  size_t bytes = mib << 20;
  size_t mapped = reserveGib ? reserveGib << 30 : bytes;
  if (mapped < bytes) goto usage;
  unsigned char *base = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) {
    perror("mmap");
    return 1;
  }
  unsigned char *pool = NULL;
  if (text) {
    pool = malloc(TEXT_POOL * PS / 2);
    for (size_t k = 0; k < TEXT_POOL; k++) genText(pool + k * PS / 2);
  }
  for (size_t off = 0; off < bytes; off += PS) {
    if (text) {
      uint64_t index = off / PS;
      memcpy(base + off, &index, 8);
      memcpy(base + off + 8, pool + (next() % TEXT_POOL) * PS / 2, PS / 2);
    } else {
      uint64_t *w = (uint64_t *)(base + off);
      for (size_t k = 0; k < PS / 8; k++) w[k] = next();
    }
  }
  free(pool);
  size_t pages = bytes / PS;
  printf("ready pid=%d base=%p pages=%zu reserve_pages=%zu pagesize=%lu\n", getpid(), (void *)base, pages, mapped / PS, PS);
  fflush(stdout);

  char line[256];
  while (fgets(line, sizeof line, stdin)) {
    unsigned long count;
    if (sscanf(line, "dirty %lu", &count) == 1) {
      for (unsigned long k = 0; k < count; k++) ((volatile uint64_t *)(base + (next() % pages) * PS))[1] = next();
      printf("ok pages=%lu\n", count);
    } else if (strncmp(line, "info", 4) == 0) {
      printf("ok base=%p pages=%zu\n", (void *)base, pages);
    } else if (strncmp(line, "exit", 4) == 0) {
      return 0;
    } else {
      printf("err unknown command\n");
    }
    fflush(stdout);
  }
  // --linger: sleep() may return early (a stop and continue): loop until the time is up.
  for (time_t until = time(NULL) + (time_t)linger; time(NULL) < until;) sleep((unsigned)(until - time(NULL)));
  return 0;
usage:
  fprintf(stderr, "usage: fill-target [--mib N] [--fill random|text] [--reserve-gib G] [--seed S] [--linger S]\n");
  return 2;
}
