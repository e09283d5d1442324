// (Over 400 lines on purpose: one program, each thread's self-check next to the others.)
// bin/restore_target: the workload the restore tests freeze, kill and restore. It checks its own
// state all the time and reports through a status file that it rewrites by path (open, write,
// close, rename) every ~20 ms: a restored process has no file descriptors of the original, so
// that is the one channel that survives a restore. See README.md ("restore_target").
//
//   restore_target DIR [--workers N] [--mib N] [--map-file PATH] [--drop UID GID G1,G2,...]
//                  [--max-seconds S]
//
// Threads and what each one proves after a restore:
//   worker i (N of them): rewrites and verifies its own 256 KiB heap buffer each round, keeps a
//       __thread copy of its id and generation, adds to a mutex-protected sum (registers, TLS via
//       fs_base, heap, futexes); sleeps 2 ms per round (often frozen inside nanosleep).
//   avx: holds canaries in ymm8..ymm15 inside one asm loop that never reloads them, compares
//       them against memory every round and sleeps 1 ms with a raw nanosleep between rounds:
//       any lost bit of the XSAVE state (upper halves included) shows as avx_errors.
//   sleeper: nanosleep(100 ms) in a loop, counting sleeps that end early or fail (EINTR).
//   joinee: blocked in pthread_cond_wait until the first "grow" request; then exits and the main
//       thread joins it (needs the restored clear_child_tid).
//   main: SIGUSR1 handler on an alternate signal stack (usr1_ok / usr1_bad); SIGUSR2 asks for a
//       "grow": brk +64 KiB, a new 1 MiB mmap, a new thread created and joined, the joinee
//       released and joined; checks the sum of the workers and a slice of the --mib area.
// The process exits by itself after --max-seconds (default 120) of CLOCK_MONOTONIC.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_WORKERS 16
#define WORKER_BYTES (256 * 1024)
#define ALTSTACK_BYTES (64 * 1024)

static const char *g_dir;
static int g_workers = 3;
static size_t g_mib;
static uint8_t *g_area;
static const char *g_map_file;
static const uint8_t *g_file;
static size_t g_file_len;
static uint64_t g_file_sum;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cond = PTHREAD_COND_INITIALIZER;
static int g_release;
static uint64_t g_sum, g_part[MAX_WORKERS];

static atomic_ulong g_rounds[MAX_WORKERS], g_worker_errors, g_sum_errors;
static atomic_ulong g_avx_rounds, g_avx_errors;
static atomic_ulong g_sleeps, g_sleep_errors;
static volatile sig_atomic_t g_usr1_ok, g_usr1_bad, g_grow_requests;
static unsigned long g_grow_done, g_grow_errors, g_area_errors, g_file_errors;
static int g_joined = -1;  // -1: joinee still waiting; 1: joined with the right value; 0: wrong
static uint8_t *g_altstack;
static atomic_int g_started;

static __thread int t_id = -1;
static __thread uint64_t t_gen;

static uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

// ---------------------------------------------------------------- workers

static void fill_words(uint64_t *w, size_t n, uint64_t seed) {
  for (size_t i = 0; i < n; i++) w[i] = mix(seed ^ i);
}

static size_t bad_words(const uint64_t *w, size_t n, uint64_t seed) {
  size_t bad = 0;
  for (size_t i = 0; i < n; i++) bad += w[i] != mix(seed ^ i);
  return bad;
}

static void *worker(void *arg) {
  const int id = (int)(intptr_t)arg;
  t_id = id;
  uint64_t *buf = malloc(WORKER_BYTES);
  const size_t n = WORKER_BYTES / 8;
  t_gen = 0;
  fill_words(buf, n, (uint64_t)id << 40);
  atomic_fetch_add(&g_started, 1);
  for (;;) {
    if (bad_words(buf, n, (uint64_t)id << 40 | t_gen) || t_id != id) atomic_fetch_add(&g_worker_errors, 1);
    t_gen++;
    fill_words(buf, n, (uint64_t)id << 40 | t_gen);
    pthread_mutex_lock(&g_lock);
    g_sum++;
    g_part[id]++;
    pthread_mutex_unlock(&g_lock);
    atomic_fetch_add(&g_rounds[id], 1);
    sleep_ms(2);
  }
  return NULL;
}

// ---------------------------------------------------------------- avx

static uint8_t g_canary[8][32] __attribute__((aligned(32)));

static void *avx(void *arg) {
  (void)arg;
  for (int r = 0; r < 8; r++)
    for (int i = 0; i < 32; i++) g_canary[r][i] = (uint8_t)mix((uint64_t)r * 32 + i + 77);
  struct timespec ts = {0, 1000000};
  atomic_fetch_add(&g_started, 1);
  // Loads the canaries once, then loops forever: compare every register with memory (all 32
  // bytes: vpcmpeqb + vpmovmskb must give all ones), count, sleep 1 ms via a raw syscall (the
  // kernel keeps vector registers across syscalls). Clobbers: ymm0, rax, rcx, rdx, rdi, rsi, r11.
  __asm__ volatile(
      "vmovdqa 0(%[c]), %%ymm8\n\t"
      "vmovdqa 32(%[c]), %%ymm9\n\t"
      "vmovdqa 64(%[c]), %%ymm10\n\t"
      "vmovdqa 96(%[c]), %%ymm11\n\t"
      "vmovdqa 128(%[c]), %%ymm12\n\t"
      "vmovdqa 160(%[c]), %%ymm13\n\t"
      "vmovdqa 192(%[c]), %%ymm14\n\t"
      "vmovdqa 224(%[c]), %%ymm15\n\t"
      "1:\n\t"
      "xor %%edx, %%edx\n\t"
#define CHECK(reg, off)                      \
  "vpcmpeqb " #off "(%[c]), %%" #reg ", %%ymm0\n\t" \
  "vpmovmskb %%ymm0, %%eax\n\t"              \
  "cmp $-1, %%eax\n\t"                       \
  "setne %%al\n\t"                           \
  "movzbl %%al, %%eax\n\t"                   \
  "or %%eax, %%edx\n\t"
      CHECK(ymm8, 0) CHECK(ymm9, 32) CHECK(ymm10, 64) CHECK(ymm11, 96) CHECK(ymm12, 128) CHECK(ymm13, 160)
          CHECK(ymm14, 192) CHECK(ymm15, 224)
#undef CHECK
      "lock addq %%rdx, (%[err])\n\t"
      "lock incq (%[rounds])\n\t"
      "mov $35, %%eax\n\t"  // nanosleep(&ts, NULL)
      "mov %[ts], %%rdi\n\t"
      "xor %%esi, %%esi\n\t"
      "syscall\n\t"
      "jmp 1b\n\t"
      :
      : [c] "r"(g_canary), [err] "r"(&g_avx_errors), [rounds] "r"(&g_avx_rounds), [ts] "r"(&ts)
      : "rax", "rcx", "rdx", "rdi", "rsi", "r11", "memory", "xmm0", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13",
        "xmm14", "xmm15");
  return NULL;
}

// ---------------------------------------------------------------- sleeper, joinee, new thread

static void *sleeper(void *arg) {
  (void)arg;
  atomic_fetch_add(&g_started, 1);
  for (;;) {
    double t0 = now_s();
    struct timespec ts = {0, 100 * 1000000L};
    int r = nanosleep(&ts, NULL);
    if (r != 0 || now_s() - t0 < 0.0999) atomic_fetch_add(&g_sleep_errors, 1);
    atomic_fetch_add(&g_sleeps, 1);
  }
  return NULL;
}

static void *joinee(void *arg) {
  (void)arg;
  atomic_fetch_add(&g_started, 1);
  pthread_mutex_lock(&g_lock);
  while (!g_release) pthread_cond_wait(&g_cond, &g_lock);
  pthread_mutex_unlock(&g_lock);
  return (void *)0x1234;
}

static void *fresh_thread(void *arg) {
  t_id = 1000;
  t_gen = (uint64_t)(uintptr_t)arg;
  uint64_t *w = malloc(64 * 1024);
  fill_words(w, 8192, t_gen);
  uintptr_t ok = !bad_words(w, 8192, t_gen) && t_id == 1000;
  free(w);
  return (void *)ok;
}

// ---------------------------------------------------------------- main-thread checks

static void on_usr1(int sig, siginfo_t *si, void *uc) {
  (void)sig, (void)si, (void)uc;
  uint8_t here;
  if (&here >= g_altstack && &here < g_altstack + ALTSTACK_BYTES)
    g_usr1_ok++;
  else
    g_usr1_bad++;
}

static void on_usr2(int sig) {
  (void)sig;
  g_grow_requests++;
}

static void grow(pthread_t joinee_thread) {
  // brk
  uint8_t *b = sbrk(64 * 1024);
  if (b == (void *)-1) {
    g_grow_errors++;
  } else {
    fill_words((uint64_t *)b, 8192, 0xb0b + g_grow_done);
    if (bad_words((uint64_t *)b, 8192, 0xb0b + g_grow_done)) g_grow_errors++;
  }
  // mmap
  uint64_t *m = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) {
    g_grow_errors++;
  } else {
    fill_words(m, (1 << 20) / 8, 0x3a3a);
    if (bad_words(m, (1 << 20) / 8, 0x3a3a)) g_grow_errors++;
    munmap(m, 1 << 20);
  }
  // a thread created and joined now
  pthread_t t;
  void *ret = NULL;
  if (pthread_create(&t, NULL, fresh_thread, (void *)(uintptr_t)(g_grow_done + 5)) != 0 || pthread_join(t, &ret) != 0 || ret != (void *)1)
    g_grow_errors++;
  // the joinee, blocked since before the freeze
  if (g_joined < 0) {
    pthread_mutex_lock(&g_lock);
    g_release = 1;
    pthread_cond_broadcast(&g_cond);
    pthread_mutex_unlock(&g_lock);
    void *jr = NULL;
    g_joined = pthread_join(joinee_thread, &jr) == 0 && jr == (void *)0x1234;
  }
  g_grow_done++;
}

static void check_sum(void) {
  pthread_mutex_lock(&g_lock);
  uint64_t s = 0;
  for (int i = 0; i < g_workers; i++) s += g_part[i];
  if (s != g_sum) atomic_fetch_add(&g_sum_errors, 1);
  pthread_mutex_unlock(&g_lock);
}

static void check_area(unsigned long round) {
  if (!g_mib) return;
  const size_t slices = g_mib, slice = 1 << 20;
  const size_t k = round % slices;
  if (bad_words((uint64_t *)(g_area + k * slice), slice / 8, 0xa4ea0000ULL + k)) g_area_errors++;
}

static void check_file(void) {
  if (!g_file) return;
  uint64_t s = 0;
  for (size_t i = 0; i < g_file_len; i += 8) s = mix(s ^ *(const uint64_t *)(g_file + i));
  if (s != g_file_sum) g_file_errors++;
}

static void write_status(unsigned long iter, int ready) {
  char path[4096], tmp[4096], buf[4096];
  int n = 0;
  n += snprintf(buf + n, sizeof buf - n, "ready=%d\npid=%d\niter=%lu\nworkers=", ready, getpid(), iter);
  for (int i = 0; i < g_workers; i++) n += snprintf(buf + n, sizeof buf - n, "%s%lu", i ? "," : "", atomic_load(&g_rounds[i]));
  n += snprintf(buf + n, sizeof buf - n,
                "\nworker_errors=%lu\nsum_errors=%lu\navx=%lu\navx_errors=%lu\nsleeps=%lu\nsleep_errors=%lu\n"
                "usr1_ok=%d\nusr1_bad=%d\ngrow_done=%lu\ngrow_errors=%lu\njoined=%d\narea_errors=%lu\nfile_errors=%lu\n"
                "uid=%d\neuid=%d\ngid=%d\negid=%d\n",
                atomic_load(&g_worker_errors), atomic_load(&g_sum_errors), atomic_load(&g_avx_rounds),
                atomic_load(&g_avx_errors), atomic_load(&g_sleeps), atomic_load(&g_sleep_errors), (int)g_usr1_ok,
                (int)g_usr1_bad, g_grow_done, g_grow_errors, g_joined, g_area_errors, g_file_errors, getuid(), geteuid(),
                getgid(), getegid());
  snprintf(path, sizeof path, "%s/status", g_dir);
  snprintf(tmp, sizeof tmp, "%s/status.tmp", g_dir);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return;
  ssize_t w = write(fd, buf, (size_t)n);
  close(fd);
  if (w == n) rename(tmp, path);
}

static void drop_privileges(const char *uid, const char *gid, const char *groups) {
  gid_t list[64];
  int count = 0;
  char *copy = strdup(groups), *save = NULL;
  for (char *g = strtok_r(copy, ",", &save); g && count < 64; g = strtok_r(NULL, ",", &save)) list[count++] = (gid_t)atoi(g);
  free(copy);
  if (setgroups((size_t)count, list) || setresgid(atoi(gid), atoi(gid), atoi(gid)) || setresuid(atoi(uid), atoi(uid), atoi(uid))) {
    perror("drop privileges");
    exit(3);
  }
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s DIR [--workers N] [--mib N] [--map-file PATH] [--drop UID GID G1,G2] [--max-seconds S]\n", argv[0]);
    return 2;
  }
  g_dir = argv[1];
  // Only stdio: a descriptor leaked by whatever started the test would be refused by the capture.
  syscall(SYS_close_range, 3, ~0U, 0);
  double max_seconds = 120;
  for (int i = 2; i < argc; i++) {
    if (!strcmp(argv[i], "--workers") && i + 1 < argc) {
      g_workers = atoi(argv[++i]);
      if (g_workers < 1 || g_workers > MAX_WORKERS) return 2;
    } else if (!strcmp(argv[i], "--mib") && i + 1 < argc) {
      g_mib = (size_t)atol(argv[++i]);
    } else if (!strcmp(argv[i], "--map-file") && i + 1 < argc) {
      g_map_file = argv[++i];
    } else if (!strcmp(argv[i], "--drop") && i + 3 < argc) {
      drop_privileges(argv[i + 1], argv[i + 2], argv[i + 3]);
      i += 3;
    } else if (!strcmp(argv[i], "--max-seconds") && i + 1 < argc) {
      max_seconds = atof(argv[++i]);
    } else {
      fprintf(stderr, "bad argument %s\n", argv[i]);
      return 2;
    }
  }
  const double start = now_s();

  if (g_mib) {
    g_area = mmap(NULL, g_mib << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g_area == MAP_FAILED) return 4;
    for (size_t k = 0; k < g_mib; k++) fill_words((uint64_t *)(g_area + (k << 20)), (1 << 20) / 8, 0xa4ea0000ULL + k);
  }
  if (g_map_file) {
    int fd = open(g_map_file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 5;
    g_file_len = (size_t)lseek(fd, 0, SEEK_END) & ~(size_t)7;
    g_file = mmap(NULL, g_file_len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (g_file == MAP_FAILED) return 5;
    for (size_t i = 0; i < g_file_len; i += 8) g_file_sum = mix(g_file_sum ^ *(const uint64_t *)(g_file + i));
  }

  // SIGUSR1/2 go to the main thread only: every other thread is created with them blocked.
  sigset_t usr;
  sigemptyset(&usr);
  sigaddset(&usr, SIGUSR1);
  sigaddset(&usr, SIGUSR2);
  pthread_sigmask(SIG_BLOCK, &usr, NULL);
  g_altstack = malloc(ALTSTACK_BYTES);
  stack_t ss = {.ss_sp = g_altstack, .ss_size = ALTSTACK_BYTES, .ss_flags = 0};
  sigaltstack(&ss, NULL);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_usr1;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
  sigaction(SIGUSR1, &sa, NULL);
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr2;
  sa.sa_flags = SA_RESTART;
  sigaction(SIGUSR2, &sa, NULL);

  pthread_t t, joinee_thread;
  for (int i = 0; i < g_workers; i++) pthread_create(&t, NULL, worker, (void *)(intptr_t)i);
  int expected = g_workers + 2;
  if (__builtin_cpu_supports("avx2")) {
    pthread_create(&t, NULL, avx, NULL);
    expected++;
  } else {
    atomic_store(&g_avx_errors, 999999);  // reported as a failure: the test needs AVX2
  }
  pthread_create(&t, NULL, sleeper, NULL);
  pthread_create(&joinee_thread, NULL, joinee, NULL);
  while (atomic_load(&g_started) < expected) sleep_ms(1);
  pthread_sigmask(SIG_UNBLOCK, &usr, NULL);

  unsigned long grow_seen = 0;
  for (unsigned long iter = 0;; iter++) {
    check_sum();
    check_area(iter);
    check_file();
    while (grow_seen < (unsigned long)g_grow_requests) {
      grow(joinee_thread);
      grow_seen++;
    }
    write_status(iter, 1);
    if (now_s() - start > max_seconds) exit(0);
    sleep_ms(20);
  }
}
