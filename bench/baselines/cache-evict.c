// Takes the given files out of the page cache, so that a read of them after it comes from the
// disk, as the first read of an image does after a migration (the store writes its large runs
// with O_DIRECT, so a fresh image is not in the page cache). Only these files are touched: no
// global drop_caches on a shared machine. Each file is fdatasync'ed first (only clean pages can
// be dropped), then posix_fadvise(POSIX_FADV_DONTNEED); mincore counts the pages still cached
// before and after.
//
//   cache-evict FILE...
// prints one line: files=N bytes=B cached_before=PAGES cached_after=PAGES
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define PS 4096UL

/** Pages of fd's file in the page cache (0 for an empty file). */
static long cachedPages(int fd, size_t size) {
  if (size == 0) return 0;
  void *map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) return -1;
  size_t pages = (size + PS - 1) / PS;
  unsigned char *vec = malloc(pages);
  long n = -1;
  if (vec && mincore(map, size, vec) == 0) {
    n = 0;
    for (size_t i = 0; i < pages; i++) n += vec[i] & 1;
  }
  free(vec);
  munmap(map, size);
  return n;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: cache-evict FILE...\n");
    return 2;
  }
  long before = 0, after = 0;
  unsigned long long bytes = 0;
  for (int i = 1; i < argc; i++) {
    int fd = open(argv[i], O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
      perror(argv[i]);
      return 1;
    }
    bytes += (unsigned long long)st.st_size;
    before += cachedPages(fd, (size_t)st.st_size);
    if (fdatasync(fd) != 0) {
      perror(argv[i]);
      return 1;
    }
    int err = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED); // an error number, not -1 + errno
    if (err != 0) {
      fprintf(stderr, "%s: posix_fadvise: error %d\n", argv[i], err);
      return 1;
    }
    after += cachedPages(fd, (size_t)st.st_size);
    close(fd);
  }
  printf("files=%d bytes=%llu cached_before=%ld cached_after=%ld\n", argc - 1, bytes, before, after);
  return 0;
}
