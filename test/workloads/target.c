// (Over 400 lines on purpose: one program that implements every command of the protocol.)
// bin/target: the test workload that precopy migrates. See README.md in this directory for the
// command protocol. Every page we fill is self-checking: an 8-byte header {u32 index, u32
// generation} followed by bytes from a PRNG seeded by (seed, index, generation), so the workload can
// verify its own memory (`check`) and tests can tell which write a page holds by reading its header.
//
// Concurrency rules (WHY): writer threads, the `write` command and `check` all touch main pages.
//  - one byte lock per main page (try-lock; writers skip busy pages) so two writers never
//    interleave their bytes in one page;
//  - writers hold a writer-preferring rwlock (read side) while writing a page and `check` takes it
//    exclusively, so `check` never judges a half-written page.
// The process exits on stdin EOF and when its parent dies (PR_SET_PDEATHSIG), so a crashed test
// never leaks targets.
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define HUGE_ALIGN (2UL << 20)
#define MAX_WRITERS 64

static uint64_t g_seed = 1;
static uint8_t *g_main;
static size_t g_pages;
static uint8_t *g_shared;
static size_t g_shared_pages;
static uint8_t *g_file;
static size_t g_file_pages;
static atomic_uchar *g_locks; // one per main page

static pthread_rwlock_t g_check_lock;
static char **g_argv; // for `exec`: the new program is this one, started with the same arguments

// ---------------------------------------------------------------- page content

static inline uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static inline uint64_t page_stream_seed(uint32_t index, uint32_t gen) {
  uint64_t s = g_seed * 0xd1342543de82ef95ULL ^ ((uint64_t)index << 32 | gen);
  return splitmix(&s);
}

static void fill_page(uint8_t *p, uint32_t index, uint32_t gen) {
  uint64_t s = page_stream_seed(index, gen);
  uint64_t *w = (uint64_t *)p;
  for (size_t k = 1; k < PAGE / 8; k++) w[k] = splitmix(&s);
  // header last: a reader that sees the new header sees (in program order) the new body
  uint32_t *h = (uint32_t *)p;
  h[0] = index;
  h[1] = gen;
}

// 1 = page content matches its header, or the page is all zeros (dropped by MADV_DONTNEED /
// never written): both are states the process can legitimately be in.
static int page_ok(const uint8_t *p, uint32_t want_index) {
  const uint32_t *h = (const uint32_t *)p;
  const uint64_t *w = (const uint64_t *)p;
  if (h[0] == want_index) {
    uint64_t s = page_stream_seed(h[0], h[1]);
    size_t k = 1;
    while (k < PAGE / 8 && w[k] == splitmix(&s)) k++;
    if (k == PAGE / 8) return 1;
  }
  for (size_t k = 0; k < PAGE / 8; k++)
    if (w[k]) return 0;
  return 1;
}

// Index a page at addr carries: its page number inside main or shared, else the low 32 bits of
// its address page number.
static uint32_t expected_index(const uint8_t *addr) {
  if (addr >= g_main && addr < g_main + g_pages * PAGE) return (uint32_t)((addr - g_main) / PAGE);
  if (g_shared && addr >= g_shared && addr < g_shared + g_shared_pages * PAGE)
    return (uint32_t)((addr - g_shared) / PAGE);
  return (uint32_t)((uintptr_t)addr / PAGE);
}

// Rewrite one page with generation+1 (generation 1 if the page does not hold our header).
static void rewrite_page(uint8_t *p) {
  uint32_t idx = expected_index(p);
  const uint32_t *h = (const uint32_t *)p;
  uint32_t gen = h[0] == idx ? h[1] + 1 : 1;
  fill_page(p, idx, gen);
}

static void fill_area(uint8_t *base, size_t pages) {
  for (size_t i = 0; i < pages; i++) fill_page(base + i * PAGE, expected_index(base + i * PAGE), 0);
}

static inline void lock_page(size_t i) {
  while (atomic_exchange_explicit(&g_locks[i], 1, memory_order_acquire)) sched_yield();
}
static inline int trylock_page(size_t i) {
  return !atomic_exchange_explicit(&g_locks[i], 1, memory_order_acquire);
}
static inline void unlock_page(size_t i) { atomic_store_explicit(&g_locks[i], 0, memory_order_release); }

// ---------------------------------------------------------------- helpers

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static char g_err[256];
#define FAIL(...) (snprintf(g_err, sizeof g_err, __VA_ARGS__), -1)

static int parse_u64(const char *s, uint64_t *out) {
  if (!s || !*s) return -1;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 0);
  if (errno || *end || *s == '-') return -1;
  *out = v;
  return 0;
}

static int parse_prot(const char *s, int *prot) {
  if (!s || !strcmp(s, "rw")) *prot = PROT_READ | PROT_WRITE;
  else if (!strcmp(s, "r")) *prot = PROT_READ;
  else if (!strcmp(s, "none")) *prot = PROT_NONE;
  else return -1;
  return 0;
}

// Whether [a, a+len) is wholly covered by writable mappings (so writep cannot crash us).
static int range_writable(uintptr_t a, size_t len) {
  FILE *f = fopen("/proc/self/maps", "r");
  if (!f) return 0;
  char line[512];
  uintptr_t need = a, end = a + len;
  // maps is sorted by address: walk forward, extending coverage
  while (need < end && fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    char perms[8];
    if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3) continue;
    if (hi <= need) continue;
    if (lo > need || perms[1] != 'w') break;
    need = hi;
  }
  fclose(f);
  return need >= end;
}

static int count_threads(void) {
  DIR *d = opendir("/proc/self/task");
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

// ---------------------------------------------------------------- writer threads

static pthread_t g_writers[MAX_WRITERS];
static int g_nwriters;
static atomic_int g_stop_writers;
static atomic_ullong g_written;
static uint64_t g_rate_per_thread; // bytes/s, 0 = unthrottled

static void *writer_main(void *arg) {
  uint64_t rng = g_seed ^ (0x5851f42d4c957f2dULL * (uintptr_t)arg + 1);
  uint64_t start = now_ns(), done = 0;
  while (!atomic_load_explicit(&g_stop_writers, memory_order_relaxed)) {
    size_t i = splitmix(&rng) % g_pages;
    if (!trylock_page(i)) continue;
    pthread_rwlock_rdlock(&g_check_lock);
    rewrite_page(g_main + i * PAGE);
    pthread_rwlock_unlock(&g_check_lock);
    unlock_page(i);
    atomic_fetch_add_explicit(&g_written, 1, memory_order_relaxed);
    done++;
    if (g_rate_per_thread) {
      // pace against an absolute schedule: oversleeping once is made up by the next pages
      uint64_t due = start + (uint64_t)((double)done * PAGE * 1e9 / (double)g_rate_per_thread);
      if (due > now_ns()) {
        struct timespec ts = {(time_t)(due / 1000000000ULL), (long)(due % 1000000000ULL)};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
        }
      }
    }
  }
  return NULL;
}

static int cmd_writers(char **a, int n, char *out, size_t cap) {
  uint64_t t, rate;
  (void)out, (void)cap;
  if (n != 2 || parse_u64(a[0], &t) || parse_u64(a[1], &rate)) return FAIL("usage: writers T BYTES_PER_SEC");
  if (t < 1 || t > MAX_WRITERS) return FAIL("writers: T must be 1..%d", MAX_WRITERS);
  if (g_nwriters) return FAIL("writers already running");
  atomic_store(&g_stop_writers, 0);
  atomic_store(&g_written, 0);
  g_rate_per_thread = rate / t + (rate && rate < t);
  for (uint64_t k = 0; k < t; k++) {
    int rc = pthread_create(&g_writers[k], NULL, writer_main, (void *)(uintptr_t)k);
    if (rc) {
      atomic_store(&g_stop_writers, 1);
      for (int j = 0; j < (int)k; j++) pthread_join(g_writers[j], NULL);
      return FAIL("pthread_create: %s", strerror(rc));
    }
    g_nwriters++;
  }
  return 0;
}

static int cmd_stop_writers(char **a, int n, char *out, size_t cap) {
  (void)a;
  if (n) return FAIL("usage: stop-writers");
  atomic_store(&g_stop_writers, 1);
  for (int k = 0; k < g_nwriters; k++) pthread_join(g_writers[k], NULL);
  g_nwriters = 0;
  snprintf(out, cap, " written=%llu", (unsigned long long)atomic_load(&g_written));
  return 0;
}

// ---------------------------------------------------------------- memory commands

// "CMD FIRST COUNT" on main pages: parse and bounds-check.
static int main_range_args(char **a, int n, const char *cmd, uint64_t *first, uint64_t *count) {
  if (n != 2 || parse_u64(a[0], first) || parse_u64(a[1], count)) return FAIL("usage: %s FIRST COUNT", cmd);
  if (*first > g_pages || *count > g_pages - *first) return FAIL("%s: pages out of range (main has %zu)", cmd, g_pages);
  return 0;
}

static int cmd_write(char **a, int n, char *out, size_t cap) {
  uint64_t first, count;
  (void)out, (void)cap;
  if (main_range_args(a, n, "write", &first, &count)) return -1;
  for (uint64_t i = first; i < first + count; i++) {
    lock_page(i);
    rewrite_page(g_main + i * PAGE);
    unlock_page(i);
  }
  return 0;
}

static int cmd_writep(char **a, int n, char *out, size_t cap) {
  uint64_t addr, count;
  (void)out, (void)cap;
  if (n != 2 || parse_u64(a[0], &addr) || parse_u64(a[1], &count)) return FAIL("usage: writep ADDR COUNT");
  if (addr % PAGE) return FAIL("writep: address not page aligned");
  if (!count || !range_writable(addr, count * PAGE)) return FAIL("writep: range not mapped writable");
  for (uint64_t k = 0; k < count; k++) {
    uint8_t *p = (uint8_t *)(uintptr_t)addr + k * PAGE;
    int in_main = p >= g_main && p < g_main + g_pages * PAGE;
    size_t i = in_main ? (size_t)(p - g_main) / PAGE : 0;
    if (in_main) lock_page(i);
    rewrite_page(p);
    if (in_main) unlock_page(i);
  }
  return 0;
}

static int cmd_check(char **a, int n, char *out, size_t cap) {
  (void)a;
  if (n) return FAIL("usage: check");
  pthread_rwlock_wrlock(&g_check_lock);
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < g_pages; i++)
    if (!page_ok(g_main + i * PAGE, (uint32_t)i) && !bad++) first = i;
  pthread_rwlock_unlock(&g_check_lock);
  if (bad) snprintf(out, cap, " bad=%zu first=%zu", bad, first);
  else snprintf(out, cap, " bad=0");
  return 0;
}

static int cmd_mmap(char **a, int n, char *out, size_t cap) {
  uint64_t pages;
  int prot;
  if (n < 1 || n > 2 || parse_u64(a[0], &pages) || !pages || parse_prot(n == 2 ? a[1] : NULL, &prot))
    return FAIL("usage: mmap PAGES [r|rw|none]");
  uint8_t *p = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return FAIL("mmap: %s", strerror(errno));
  fill_area(p, pages);
  if (prot != (PROT_READ | PROT_WRITE) && mprotect(p, pages * PAGE, prot)) return FAIL("mprotect: %s", strerror(errno));
  snprintf(out, cap, " addr=0x%lx", (unsigned long)(uintptr_t)p);
  return 0;
}

// mmapat ADDR PAGES: a filled rw mapping exactly at ADDR, refused if anything is mapped there.
static int cmd_mmapat(char **a, int n, char *out, size_t cap) {
  uint64_t addr, pages;
  if (n != 2 || parse_u64(a[0], &addr) || parse_u64(a[1], &pages) || !pages) return FAIL("usage: mmapat ADDR PAGES");
  uint8_t *p = mmap((void *)(uintptr_t)addr, pages * PAGE, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  if (p == MAP_FAILED) return FAIL("mmap at 0x%lx: %s", (unsigned long)addr, strerror(errno));
  fill_area(p, pages);
  snprintf(out, cap, " addr=0x%lx", (unsigned long)(uintptr_t)p);
  return 0;
}

static int cmd_munmap(char **a, int n, char *out, size_t cap) {
  uint64_t addr, pages;
  (void)out, (void)cap;
  if (n != 2 || parse_u64(a[0], &addr) || parse_u64(a[1], &pages)) return FAIL("usage: munmap ADDR PAGES");
  if (munmap((void *)(uintptr_t)addr, pages * PAGE)) return FAIL("munmap: %s", strerror(errno));
  return 0;
}

// The /proc/self/maps lines overlapping [lo, hi), joined with "; " (for a failed call's message:
// which VMAs the range covers).
static void maps_overlapping(uint64_t lo, uint64_t hi, char *out, size_t cap) {
  FILE *f = fopen("/proc/self/smaps", "r");
  char line[512];
  size_t used = 0;
  int in = 0;
  out[0] = 0;
  if (!f) return;
  while (fgets(line, sizeof line, f) && used < cap) {
    unsigned long s, e;
    line[strcspn(line, "\n")] = 0;
    if (sscanf(line, "%lx-%lx ", &s, &e) == 2 && strchr(line, ' ') == line + strcspn(line, " ")) {
      in = !(e <= lo || s >= hi);
      if (in) used += snprintf(out + used, cap - used, "%s%.40s", used ? "; " : "", line);
    } else if (in && strncmp(line, "VmFlags:", 8) == 0) {
      used += snprintf(out + used, cap - used, " [%s]", line + 9);
    }
  }
  fclose(f);
}

static int cmd_mremap(char **a, int n, char *out, size_t cap) {
  uint64_t addr, oldp, newp;
  if (n != 3 || parse_u64(a[0], &addr) || parse_u64(a[1], &oldp) || parse_u64(a[2], &newp) || !newp)
    return FAIL("usage: mremap ADDR OLDPAGES NEWPAGES");
  void *p = mremap((void *)(uintptr_t)addr, oldp * PAGE, newp * PAGE, MREMAP_MAYMOVE);
  if (p == MAP_FAILED) {
    int e = errno;
    char where[512];
    maps_overlapping(addr, addr + oldp * PAGE, where, sizeof where);
    return FAIL("mremap 0x%lx +%lu pages: %s (VMAs there: %s)", (unsigned long)addr, (unsigned long)oldp, strerror(e), where);
  }
  snprintf(out, cap, " addr=0x%lx", (unsigned long)(uintptr_t)p);
  return 0;
}

static int cmd_mprotect(char **a, int n, char *out, size_t cap) {
  uint64_t addr, pages;
  int prot;
  (void)out, (void)cap;
  if (n != 3 || parse_u64(a[0], &addr) || parse_u64(a[1], &pages) || parse_prot(a[2], &prot))
    return FAIL("usage: mprotect ADDR PAGES r|rw|none");
  if (mprotect((void *)(uintptr_t)addr, pages * PAGE, prot)) return FAIL("mprotect: %s", strerror(errno));
  return 0;
}

static int cmd_dontneed(char **a, int n, char *out, size_t cap) {
  uint64_t first, count;
  (void)out, (void)cap;
  if (main_range_args(a, n, "dontneed", &first, &count)) return -1;
  if (count && madvise(g_main + first * PAGE, count * PAGE, MADV_DONTNEED)) return FAIL("madvise: %s", strerror(errno));
  return 0;
}

// madvise ADDR PAGES wipeonfork|dontfork: what fork() leaves out of a copy of this process.
static int cmd_madvise(char **a, int n, char *out, size_t cap) {
  uint64_t addr, pages;
  (void)out, (void)cap;
  if (n != 3 || parse_u64(a[0], &addr) || parse_u64(a[1], &pages) || (strcmp(a[2], "wipeonfork") && strcmp(a[2], "dontfork")))
    return FAIL("usage: madvise ADDR PAGES wipeonfork|dontfork");
  int advice = !strcmp(a[2], "wipeonfork") ? MADV_WIPEONFORK : MADV_DONTFORK;
  if (madvise((void *)(uintptr_t)addr, pages * PAGE, advice)) return FAIL("madvise: %s", strerror(errno));
  return 0;
}

static int cmd_brk(char **a, int n, char *out, size_t cap) {
  uint64_t pages;
  if (n != 1 || parse_u64(a[0], &pages) || !pages || pages > (1UL << 20)) return FAIL("usage: brk PAGES");
  // align the break to a page first so the filled pages are whole pages of the heap VMA
  uintptr_t cur = (uintptr_t)sbrk(0);
  uintptr_t pad = (PAGE - cur % PAGE) % PAGE;
  if (pad && sbrk((intptr_t)pad) == (void *)-1) return FAIL("sbrk: %s", strerror(errno));
  uint8_t *p = sbrk((intptr_t)(pages * PAGE));
  if (p == (void *)-1) return FAIL("sbrk: %s", strerror(errno));
  fill_area(p, pages);
  snprintf(out, cap, " addr=0x%lx", (unsigned long)(uintptr_t)p);
  return 0;
}

// Grow the main thread's stack: recurse one 1 KiB frame per level, filling each frame with a
// pattern, then return. The stack VMA stays grown and its pages stay populated.
static __attribute__((noinline)) uint64_t grow_stack(uint64_t levels) {
  volatile uint8_t frame[1024];
  for (size_t k = 0; k < sizeof frame; k++) frame[k] = (uint8_t)(levels * 131 + k);
  uint64_t sum = levels ? grow_stack(levels - 1) : 0;
  return sum + frame[levels % sizeof frame]; // use the frame after the call: no tail call
}

static int cmd_stack(char **a, int n, char *out, size_t cap) {
  uint64_t kib;
  if (n != 1 || parse_u64(a[0], &kib) || kib > 4096) return FAIL("usage: stack KIB (at most 4096)");
  volatile uint8_t here;
  uint64_t sum = grow_stack(kib);
  snprintf(out, cap, " sp=0x%lx sum=%" PRIu64, (unsigned long)(uintptr_t)&here, sum);
  return 0;
}

static int cmd_filewrite(char **a, int n, char *out, size_t cap) {
  uint64_t page;
  (void)out, (void)cap;
  if (n != 1 || parse_u64(a[0], &page)) return FAIL("usage: filewrite PAGE");
  if (!g_file) return FAIL("filewrite: no file mapping (start with --file)");
  if (page >= g_file_pages) return FAIL("filewrite: page out of range (file has %zu)", g_file_pages);
  rewrite_page(g_file + page * PAGE);
  return 0;
}

// ---------------------------------------------------------------- fork

static _Noreturn void child_main(pid_t parent) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(0);
  // the child must not read our commands nor keep the test's stdout pipe open
  int nul = open("/dev/null", O_RDWR);
  if (nul >= 0) {
    dup2(nul, 0);
    dup2(nul, 1);
    if (nul > 2) close(nul);
  }
  uint64_t rng = g_seed ^ (uint64_t)getpid();
  for (;;) {
    // only this thread exists in the child; a page lock held by a parent writer at fork time
    // stays held forever in this copy: skip such pages
    for (int k = 0; k < 16; k++) {
      size_t i = splitmix(&rng) % g_pages;
      if (!trylock_page(i)) continue;
      rewrite_page(g_main + i * PAGE);
      unlock_page(i);
    }
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

static int cmd_fork(char **a, int n, char *out, size_t cap) {
  (void)a;
  if (n) return FAIL("usage: fork");
  fflush(stdout);
  pid_t parent = getpid();
  pid_t c = fork();
  if (c < 0) return FAIL("fork: %s", strerror(errno));
  if (c == 0) child_main(parent);
  snprintf(out, cap, " pid=%d", (int)c);
  return 0;
}

// ---------------------------------------------------------------- child processes
// What a migration's snapshot must never show the process (docs/design.md, Verify off the
// freeze): a SIGCHLD (`sigchld` counts them), a child its wait() sees, child accounting
// (`childstats`), and any effect on its own fork()/wait() (`forkloop`: fork a child that exits
// 42, wait for any child, expect exactly that one, then expect no child left).

static atomic_uint_fast64_t g_sigchld, g_forks, g_fork_anomalies;
static atomic_int g_forkloop_on;

static void on_sigchld(int sig) {
  (void)sig;
  atomic_fetch_add(&g_sigchld, 1);
}

static int cmd_sigchld(char **a, int n, char *out, size_t cap) {
  (void)a, (void)out, (void)cap;
  if (n) return FAIL("usage: sigchld");
  struct sigaction sa = {0};
  sa.sa_handler = on_sigchld;
  sa.sa_flags = SA_RESTART;
  if (sigaction(SIGCHLD, &sa, NULL)) return FAIL("sigaction: %s", strerror(errno));
  return 0;
}

static void *forkloop_main(void *arg) {
  (void)arg;
  while (atomic_load(&g_forkloop_on)) {
    pid_t c = fork();
    if (c < 0) {
      atomic_fetch_add(&g_fork_anomalies, 1);
      continue;
    }
    if (c == 0) _exit(42);
    int st = 0;
    pid_t r;
    while ((r = waitpid(-1, &st, __WALL)) < 0 && errno == EINTR) {
    }
    if (r != c || !WIFEXITED(st) || WEXITSTATUS(st) != 42) atomic_fetch_add(&g_fork_anomalies, 1);
    if (waitpid(-1, &st, __WALL | WNOHANG) != -1 || errno != ECHILD) atomic_fetch_add(&g_fork_anomalies, 1);
    atomic_fetch_add(&g_forks, 1);
    usleep(200);
  }
  return NULL;
}

static int cmd_forkloop(char **a, int n, char *out, size_t cap) {
  (void)out, (void)cap;
  static pthread_t th;
  if (n != 1 || (strcmp(a[0], "on") && strcmp(a[0], "off"))) return FAIL("usage: forkloop on|off");
  int on = !strcmp(a[0], "on");
  if (on == atomic_load(&g_forkloop_on)) return 0;
  atomic_store(&g_forkloop_on, on);
  if (on) return pthread_create(&th, NULL, forkloop_main, NULL) ? FAIL("pthread_create") : 0;
  pthread_join(th, NULL);
  return 0;
}

// subreaper: become a child subreaper (orphaned descendants are reparented to us).
static int cmd_subreaper(char **a, int n, char *out, size_t cap) {
  (void)a, (void)out, (void)cap;
  if (n) return FAIL("usage: subreaper");
  if (prctl(PR_SET_CHILD_SUBREAPER, 1)) return FAIL("prctl: %s", strerror(errno));
  return 0;
}

static int cmd_childstats(char **a, int n, char *out, size_t cap) {
  (void)a;
  if (n) return FAIL("usage: childstats");
  struct rusage ru;
  getrusage(RUSAGE_CHILDREN, &ru);
  snprintf(out, cap, " sigchld=%" PRIu64 " forks=%" PRIu64 " anomalies=%" PRIu64 " maxrss_kib=%ld utime_us=%ld stime_us=%ld",
           (uint64_t)atomic_load(&g_sigchld), (uint64_t)atomic_load(&g_forks), (uint64_t)atomic_load(&g_fork_anomalies),
           ru.ru_maxrss, (long)(ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec),
           (long)(ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec));
  return 0;
}

// ---------------------------------------------------------------- blockers

static int g_ping_pipe[2] = {-1, -1};
static pthread_mutex_t g_bl_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_bl_cv = PTHREAD_COND_INITIALIZER;
static uint64_t g_pings_got;
static uint64_t g_sleep_count, g_sleep_max_over_ns, g_blocker_errors;
#define SLEEP_NS (50 * 1000 * 1000ULL)

static void *sleeper_main(void *arg) {
  (void)arg;
  for (;;) {
    uint64_t t0 = now_ns();
    struct timespec ts = {0, (long)SLEEP_NS};
    // a relative sleep: if an interruption made the kernel restart it wrongly, the elapsed time
    // shows it (an EINTR return is counted as an error, not retried)
    int rc = clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL);
    uint64_t el = now_ns() - t0;
    pthread_mutex_lock(&g_bl_mu);
    if (rc) g_blocker_errors++;
    else {
      g_sleep_count++;
      uint64_t over = el > SLEEP_NS ? el - SLEEP_NS : 0;
      if (el < SLEEP_NS) g_blocker_errors++; // woke early: must never happen
      if (over > g_sleep_max_over_ns) g_sleep_max_over_ns = over;
    }
    pthread_mutex_unlock(&g_bl_mu);
  }
  return NULL;
}

static void *reader_main(void *arg) {
  (void)arg;
  for (;;) {
    char c;
    ssize_t r = read(g_ping_pipe[0], &c, 1);
    pthread_mutex_lock(&g_bl_mu);
    if (r == 1) g_pings_got++;
    else g_blocker_errors++;
    pthread_cond_broadcast(&g_bl_cv);
    pthread_mutex_unlock(&g_bl_mu);
    if (r == 0) return NULL;
  }
}

static int cmd_blockers(char **a, int n, char *out, size_t cap) {
  (void)a, (void)out, (void)cap;
  if (n) return FAIL("usage: blockers");
  if (g_ping_pipe[0] >= 0) return FAIL("blockers already running");
  if (pipe2(g_ping_pipe, O_CLOEXEC)) return FAIL("pipe: %s", strerror(errno));
  pthread_t t;
  int rc = pthread_create(&t, NULL, sleeper_main, NULL);
  if (!rc) rc = pthread_create(&t, NULL, reader_main, NULL);
  if (rc) return FAIL("pthread_create: %s", strerror(rc));
  return 0;
}

static int cmd_ping(char **a, int n, char *out, size_t cap) {
  (void)a, (void)out, (void)cap;
  if (n) return FAIL("usage: ping");
  if (g_ping_pipe[1] < 0) return FAIL("ping: no blockers (send `blockers` first)");
  pthread_mutex_lock(&g_bl_mu);
  uint64_t want = g_pings_got + 1;
  pthread_mutex_unlock(&g_bl_mu);
  if (write(g_ping_pipe[1], "p", 1) != 1) return FAIL("ping: write: %s", strerror(errno));
  struct timespec dl;
  clock_gettime(CLOCK_REALTIME, &dl);
  dl.tv_sec += 10;
  pthread_mutex_lock(&g_bl_mu);
  int rc = 0;
  while (g_pings_got < want && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&g_bl_cv, &g_bl_mu, &dl);
  int got = g_pings_got >= want;
  pthread_mutex_unlock(&g_bl_mu);
  if (!got) return FAIL("ping: reader thread did not get the byte within 10 s");
  return 0;
}

static int cmd_sleepstats(char **a, int n, char *out, size_t cap) {
  (void)a;
  if (n) return FAIL("usage: sleepstats");
  if (g_ping_pipe[0] < 0) return FAIL("sleepstats: no blockers (send `blockers` first)");
  pthread_mutex_lock(&g_bl_mu);
  snprintf(out, cap, " count=%" PRIu64 " max_overshoot_us=%" PRIu64 " errors=%" PRIu64, g_sleep_count,
           g_sleep_max_over_ns / 1000, g_blocker_errors);
  pthread_mutex_unlock(&g_bl_mu);
  return 0;
}

// ---------------------------------------------------------------- info, fds

static int cmd_info(char **a, int n, char *out, size_t cap) {
  (void)a;
  if (n) return FAIL("usage: info");
  snprintf(out, cap, " base=0x%lx pages=%zu shared=0x%lx shared_pages=%zu file=0x%lx file_pages=%zu threads=%d", (unsigned long)(uintptr_t)g_main,
           g_pages, (unsigned long)(uintptr_t)g_shared, g_shared_pages, (unsigned long)(uintptr_t)g_file, g_file_pages, count_threads());
  return 0;
}

static int cmp_int(const void *x, const void *y) { return *(const int *)x - *(const int *)y; }

static int cmd_fds(char **a, int n, char *out, size_t cap) {
  (void)a;
  if (n) return FAIL("usage: fds");
  DIR *d = opendir("/proc/self/fd");
  if (!d) return FAIL("opendir: %s", strerror(errno));
  int fds[1024], nf = 0;
  struct dirent *e;
  while ((e = readdir(d)) && nf < 1024) {
    if (e->d_name[0] == '.') continue;
    int fd = atoi(e->d_name);
    if (fd != dirfd(d)) fds[nf++] = fd;
  }
  closedir(d);
  qsort(fds, nf, sizeof fds[0], cmp_int);
  size_t used = 0;
  out[0] = 0;
  for (int k = 0; k < nf; k++) {
    char link[64], target[256];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fds[k]);
    ssize_t r = readlink(link, target, sizeof target - 1);
    if (r < 0) continue; // closed meanwhile
    target[r] = 0;
    int w = snprintf(out + used, cap - used, " %d=%s", fds[k], target);
    if (w < 0 || (size_t)w >= cap - used) return FAIL("fds: too many");
    used += (size_t)w;
  }
  return 0;
}

// ---------------------------------------------------------------- exec

// Replace the program (execve: a new mm, every other thread gone, the same pid). With no argument,
// this program again with its original arguments: it prints a new `ready` line and answers commands
// (tests can ask it `check`/`fds`). With PATH [ARGS...]: that program (e.g. /bin/sleep 60).
// Nothing of ours runs after a successful execve, so `ok` goes out first: PATH is checked before.
static int cmd_exec(char **a, int n, char *out, size_t cap) {
  (void)out, (void)cap;
  char *self[] = {"/proc/self/exe", NULL};
  char **argv = n ? a : g_argv;
  const char *path = n ? a[0] : self[0];
  if (n) a[n] = NULL;
  if (access(path, X_OK)) return FAIL("exec: %s: %s", path, strerror(errno));
  printf("ok\n");
  fflush(stdout);
  execv(path, argv);
  // Only a race (PATH removed meanwhile) gets here: the reply already went out, so say it on stderr.
  fprintf(stderr, "target: exec %s: %s\n", path, strerror(errno));
  _exit(127);
}

// ---------------------------------------------------------------- main loop

struct command {
  const char *name;
  int (*fn)(char **args, int nargs, char *out, size_t cap);
};

static const struct command COMMANDS[] = {
    {"info", cmd_info},         {"write", cmd_write},       {"writep", cmd_writep},
    {"writers", cmd_writers},   {"stop-writers", cmd_stop_writers}, {"check", cmd_check},
    {"mmap", cmd_mmap},         {"mmapat", cmd_mmapat},     {"munmap", cmd_munmap},     {"mremap", cmd_mremap},
    {"mprotect", cmd_mprotect}, {"dontneed", cmd_dontneed}, {"brk", cmd_brk},
    {"stack", cmd_stack},       {"filewrite", cmd_filewrite}, {"fork", cmd_fork},
    {"blockers", cmd_blockers}, {"ping", cmd_ping},         {"sleepstats", cmd_sleepstats},
    {"fds", cmd_fds},           {"exec", cmd_exec},         {"sigchld", cmd_sigchld},
    {"forkloop", cmd_forkloop}, {"childstats", cmd_childstats}, {"madvise", cmd_madvise},
    {"subreaper", cmd_subreaper},
};

static _Noreturn void usage(const char *why) {
  fprintf(stderr, "target: %s\nusage: target [--mib N] [--seed S] [--thp] [--shared-mib N] [--file PATH --file-pages N]\n", why);
  exit(2);
}

static uint64_t flag_u64(int argc, char **argv, int *k) {
  uint64_t v;
  if (*k + 1 >= argc || parse_u64(argv[*k + 1], &v)) usage("bad or missing value");
  return (*k += 1), v;
}

static uint8_t *map_area(size_t bytes, int flags, int thp) {
  size_t len = thp ? bytes + HUGE_ALIGN : bytes;
  uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE, flags, -1, 0);
  if (p == MAP_FAILED) {
    perror("target: mmap");
    exit(1);
  }
  if (thp) { // trim to a 2 MiB-aligned start so whole huge pages fit
    uintptr_t al = ((uintptr_t)p + HUGE_ALIGN - 1) & ~(HUGE_ALIGN - 1);
    if (al > (uintptr_t)p) munmap(p, al - (uintptr_t)p);
    size_t tail = (uintptr_t)p + len - (al + bytes);
    if (tail) munmap((uint8_t *)al + bytes, tail);
    p = (uint8_t *)al;
    if (madvise(p, bytes, MADV_HUGEPAGE)) perror("target: madvise(MADV_HUGEPAGE)");
  }
  return p;
}

int main(int argc, char **argv) {
  uint64_t mib = 64, shared_mib = 0, file_pages = 0;
  int thp = 0;
  const char *file = NULL;
  pid_t parent = getppid();
  g_argv = argv;
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  // Only stdio is ours: an fd leaked by whatever started us (a pipe end) would make a
  // --restorable migration refuse the process.
  syscall(SYS_close_range, 3, ~0U, 0);
  if (getppid() != parent) return 0; // parent died before prctl

  for (int k = 1; k < argc; k++) {
    if (!strcmp(argv[k], "--mib")) mib = flag_u64(argc, argv, &k);
    else if (!strcmp(argv[k], "--seed")) g_seed = flag_u64(argc, argv, &k);
    else if (!strcmp(argv[k], "--thp")) thp = 1;
    else if (!strcmp(argv[k], "--shared-mib")) shared_mib = flag_u64(argc, argv, &k);
    else if (!strcmp(argv[k], "--file")) {
      if (k + 1 >= argc) usage("--file needs a path");
      file = argv[++k];
    } else if (!strcmp(argv[k], "--file-pages")) file_pages = flag_u64(argc, argv, &k);
    else usage("unknown flag");
  }
  if (!mib) usage("--mib must be > 0");
  if (!file != !file_pages) usage("--file and --file-pages go together");

  g_pages = mib * (1 << 20) / PAGE;
  g_main = map_area(g_pages * PAGE, MAP_PRIVATE | MAP_ANONYMOUS, thp);
  g_locks = calloc(g_pages, sizeof *g_locks);
  pthread_rwlockattr_t ra;
  pthread_rwlockattr_init(&ra);
  // writers hold the read side almost constantly: check must not starve behind them
  pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(&g_check_lock, &ra);
  fill_area(g_main, g_pages);

  if (shared_mib) {
    g_shared_pages = shared_mib * (1 << 20) / PAGE;
    g_shared = map_area(g_shared_pages * PAGE, MAP_SHARED | MAP_ANONYMOUS, 0);
    fill_area(g_shared, g_shared_pages);
  }
  if (file) {
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      fprintf(stderr, "target: open %s: %s\n", file, strerror(errno));
      return 1;
    }
    g_file_pages = file_pages;
    g_file = mmap(NULL, file_pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (g_file == MAP_FAILED) {
      perror("target: mmap file");
      return 1;
    }
    close(fd);
    // read every page once: the mapping holds present page-cache pages, none copied yet
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < file_pages; i++) sink ^= g_file[i * PAGE];
    (void)sink;
  }

  printf("ready pid=%d base=0x%lx pages=%zu pagesize=%lu shared=0x%lx file=0x%lx\n", (int)getpid(), (unsigned long)(uintptr_t)g_main, g_pages,
         PAGE, (unsigned long)(uintptr_t)g_shared, (unsigned long)(uintptr_t)g_file);
  fflush(stdout);

  char line[1024];
  static char out[65536];
  while (fgets(line, sizeof line, stdin)) {
    char *args[9]; // 8 arguments and room for exec's NULL terminator
    int n = 0;
    char *save, *name = strtok_r(line, " \t\r\n", &save);
    if (!name) continue;
    char *t;
    while (n < 8 && (t = strtok_r(NULL, " \t\r\n", &save))) args[n++] = t;
    if (!strcmp(name, "exit")) exit(0);
    const struct command *c = NULL;
    for (size_t k = 0; k < sizeof COMMANDS / sizeof COMMANDS[0]; k++)
      if (!strcmp(COMMANDS[k].name, name)) c = &COMMANDS[k];
    out[0] = 0;
    if (!c) printf("err unknown command %s\n", name);
    else if (c->fn(args, n, out, sizeof out)) printf("err %s\n", g_err);
    else printf("ok%s\n", out);
    fflush(stdout);
  }
  return 0;
}
