// bin/fdloop: a workload whose state lives in file descriptors, for the restore tests. It holds one
// of each kind a restore recreates, runs an epoll loop over them, and checks itself as it goes:
//   eventfd    (count 3 at start, semaphore mode: three reads of 1, then EAGAIN)
//   timerfd    every 20 ms, counted; a tick count that stops growing shows up in `status`
//   pipe       both ends held, 4 KiB written and left unread until `readpipe` checks them
//   memfd      4 KiB of a known pattern, its offset left at 100
//   signalfd   SIGUSR1 blocked and counted through the signalfd
//   /dev/null  open for writing
//   a file     opened O_APPEND; every 50 ticks a line "tick N" is appended (the progress log)
//   its binary opened read-only, 1000 bytes read: the offset must be 1000 after a restore
//   TCP        listening on 127.0.0.1:PORT (the control socket), reuseaddr, backlog 17
//   UDP        bound to 127.0.0.1:PORT+1; a datagram is echoed back with "udp " in front
//   Unix       listening on the abstract name "\0precopy-fdloop-PORT", backlog 5
// Control: connect to the TCP port, send one line, get one line back, connection closed:
//   status    "ticks=N sig=K errors=E" (E counts every self-check that failed)
//   readpipe  "pipe ok" or "pipe bad": reads the pipe's unread bytes and compares them
//   memfd     "memfd ok" or "memfd bad": reads the memfd from its offset and compares
//   eventfd   "eventfd ok" or "eventfd bad": three semaphore reads of 1, then EAGAIN
//   fileoff   "fileoff ok" or "fileoff bad": the read-only file is at offset 1000 and reads on from there
// Usage: bin/fdloop PORT LOGFILE [--inotify] [--child] [--lock FILE] [--seccomp] [--outpipe] [--connect]
// The extra flags add one thing a restore refuses, for the refusal tests. Prints "ready PID" when
// set up.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static int errors;
static unsigned long ticks, sigs;
static int pipefd[2], memfd, evfd, selffd;
static unsigned char pattern[4096];

static void die(const char* what) {
  perror(what);
  exit(1);
}

static int check(int ok) {
  if (!ok) errors++;
  return ok;
}

static int listenTcp(int port) {
  int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (bind(s, (struct sockaddr*)&a, sizeof a) || listen(s, 17)) die("tcp");
  return s;
}

static int bindUdp(int port) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (bind(s, (struct sockaddr*)&a, sizeof a)) die("udp");
  return s;
}

static int listenUnix(int port) {
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  int n = snprintf(a.sun_path + 1, sizeof a.sun_path - 1, "precopy-fdloop-%d", port);
  if (bind(s, (struct sockaddr*)&a, offsetof(struct sockaddr_un, sun_path) + 1 + n) || listen(s, 5)) die("unix");
  return s;
}

static const char* readPipe(void) {
  unsigned char got[4096];
  ssize_t n = read(pipefd[0], got, sizeof got);
  return check(n == 4096 && memcmp(got, pattern, 4096) == 0) ? "pipe ok" : "pipe bad";
}

static const char* readMemfd(void) {
  unsigned char got[4096];
  ssize_t n = read(memfd, got, sizeof got);  // from offset 100: 3996 bytes
  return check(n == 3996 && memcmp(got, pattern + 100, 3996) == 0) ? "memfd ok" : "memfd bad";
}

static const char* readEventfd(void) {
  uint64_t v;
  int ok = 1;
  for (int i = 0; i < 3; i++) ok &= read(evfd, &v, 8) == 8 && v == 1;
  ok &= read(evfd, &v, 8) < 0 && errno == EAGAIN;
  return check(ok) ? "eventfd ok" : "eventfd bad";
}

static const char* readOffset(void) {
  unsigned char a[16], b[16];
  off_t at = lseek(selffd, 0, SEEK_CUR);
  ssize_t n = read(selffd, a, sizeof a), m = pread(selffd, b, sizeof b, 1000);
  return check(at == 1000 && n == 16 && m == 16 && memcmp(a, b, 16) == 0) ? "fileoff ok" : "fileoff bad";
}

static void serve(int lsock) {
  int c = accept4(lsock, NULL, NULL, SOCK_CLOEXEC);
  if (c < 0) return;
  char line[64] = {0};
  ssize_t n = read(c, line, sizeof line - 1);
  char out[128];
  if (n > 0 && strncmp(line, "status", 6) == 0) snprintf(out, sizeof out, "ticks=%lu sig=%lu errors=%d\n", ticks, sigs, errors);
  else if (n > 0 && strncmp(line, "readpipe", 8) == 0) snprintf(out, sizeof out, "%s\n", readPipe());
  else if (n > 0 && strncmp(line, "memfd", 5) == 0) snprintf(out, sizeof out, "%s\n", readMemfd());
  else if (n > 0 && strncmp(line, "eventfd", 7) == 0) snprintf(out, sizeof out, "%s\n", readEventfd());
  else if (n > 0 && strncmp(line, "fileoff", 7) == 0) snprintf(out, sizeof out, "%s\n", readOffset());
  else snprintf(out, sizeof out, "unknown\n");
  if (write(c, out, strlen(out)) < 0) errors++;
  close(c);
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: fdloop PORT LOGFILE [--inotify] [--child] [--lock FILE] [--seccomp] [--outpipe] [--connect]\n");
    return 2;
  }
  int port = atoi(argv[1]);
  // Only the fds made here (and stdio): whatever the test runner leaked to us would be refused.
  syscall(SYS_close_range, 3, ~0U, 0);
  for (int i = 0; i < 4096; i++) pattern[i] = (unsigned char)(i * 7 + 3);

  evfd = eventfd(3, EFD_NONBLOCK | EFD_SEMAPHORE);
  int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
  struct itimerspec its = {.it_interval = {0, 20 * 1000 * 1000}, .it_value = {0, 20 * 1000 * 1000}};
  timerfd_settime(tfd, 0, &its, NULL);
  if (pipe(pipefd) || write(pipefd[1], pattern, 4096) != 4096) die("pipe");
  memfd = memfd_create("fdloop", 0);
  if (write(memfd, pattern, 4096) != 4096 || lseek(memfd, 100, SEEK_SET) != 100) die("memfd");
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  sigprocmask(SIG_BLOCK, &usr1, NULL);
  int sfd = signalfd(-1, &usr1, SFD_NONBLOCK);
  int devnull = open("/dev/null", O_WRONLY);
  int logfd = open(argv[2], O_WRONLY | O_CREAT | O_APPEND, 0644);
  unsigned char skip[1000];
  selffd = open("/proc/self/exe", O_RDONLY);
  if (selffd < 0 || read(selffd, skip, sizeof skip) != sizeof skip) die("self");
  int lsock = listenTcp(port), usock = bindUdp(port + 1), xsock = listenUnix(port);
  if (evfd < 0 || tfd < 0 || memfd < 0 || sfd < 0 || devnull < 0 || logfd < 0) die("setup");

  for (int i = 3; i < argc; i++) {
    if (!strcmp(argv[i], "--inotify")) inotify_add_watch(inotify_init1(0), "/tmp", IN_CREATE);
    else if (!strcmp(argv[i], "--child")) {
      if (fork() == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the test's workload
        for (;;) pause();
      }
    } else if (!strcmp(argv[i], "--lock")) {
      int lf = open(argv[++i], O_RDWR | O_CREAT, 0644);
      if (flock(lf, LOCK_EX)) die("flock");
      struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
      fcntl(lf, F_SETLK, &fl);
    } else if (!strcmp(argv[i], "--seccomp")) {
      prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
      static struct sock_filter allow[] = {{0x06, 0, 0, 0x7fff0000}};  // BPF_RET|BPF_K SECCOMP_RET_ALLOW
      struct sock_fprog prog = {.len = 1, .filter = allow};
      if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) die("seccomp");
    } else if (!strcmp(argv[i], "--connect")) {
      int c = socket(AF_INET, SOCK_DGRAM, 0);
      struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port + 1), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
      if (connect(c, (struct sockaddr*)&a, sizeof a)) die("connect");
    } else if (!strcmp(argv[i], "--outpipe")) {
      close(pipefd[1]);  // the write end now belongs to nobody here: a pipe to "another process"
    }
  }

  int ep = epoll_create1(EPOLL_CLOEXEC);
  int watched[] = {tfd, sfd, lsock, usock, evfd};
  for (int i = 0; i < 5; i++) {
    struct epoll_event e = {.events = EPOLLIN, .data.u64 = 0x1000000000ULL + (uint64_t)watched[i]};
    if (i == 4) e.events = EPOLLIN | EPOLLET;  // readable from the start: report the edge only
    if (epoll_ctl(ep, EPOLL_CTL_ADD, watched[i], &e)) die("epoll_ctl");
  }
  printf("ready %d\n", getpid());
  fflush(stdout);

  for (;;) {
    struct epoll_event ev[8];
    int n = epoll_wait(ep, ev, 8, 1000);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die("epoll_wait");
    for (int i = 0; i < n; i++) {
      if ((ev[i].data.u64 >> 32) != 0x10) errors++;  // the registration's data must survive
      int fd = (int)(ev[i].data.u64 & 0xffffffff);
      if (fd == tfd) {
        uint64_t t;
        if (read(tfd, &t, 8) == 8) {
          ticks += t;
          if (ticks / 50 != (ticks - t) / 50) dprintf(logfd, "tick %lu\n", ticks);
        }
      } else if (fd == sfd) {
        struct signalfd_siginfo si;
        while (read(sfd, &si, sizeof si) == sizeof si) sigs += si.ssi_signo == SIGUSR1;
      } else if (fd == lsock) {
        serve(lsock);
      } else if (fd == usock) {
        char buf[256] = "udp ";
        struct sockaddr_in from;
        socklen_t fl = sizeof from;
        ssize_t k = recvfrom(usock, buf + 4, sizeof buf - 4, 0, (struct sockaddr*)&from, &fl);
        if (k > 0) sendto(usock, buf, (size_t)k + 4, 0, (struct sockaddr*)&from, fl);
      } else if (fd != evfd) {
        errors++;
      }
    }
    if (write(devnull, "x", 1) != 1) errors++;
    (void)xsock;
  }
}
