// See fd_inspect.h. Every descriptor taken with pidfd_getfd is ours alone and closed on return;
// the target's descriptor, its file offset and its data are never changed.
#include "fd_inspect.h"

#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>

#include "sys_error.h"

namespace precopy {

namespace {

Fd takeFd(pid_t pid, int fd) {
  Fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd.valid()) throwForPid(errno, "pidfd_open", pid, "open a pidfd for");
  Fd ours(static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd.get(), fd, 0)));
  if (!ours.valid()) {
    if (errno == EBADF)
      throwSys(EBADF, "pidfd_getfd", "process " + std::to_string(pid) + " has no fd " + std::to_string(fd));
    throwForPid(errno, "pidfd_getfd", pid, "take a file descriptor from");
  }
  return ours;
}

int intOpt(int s, int level, int name) {
  int v = 0;
  socklen_t len = sizeof v;
  if (getsockopt(s, level, name, &v, &len) != 0) return -1;
  return v;
}

// A listening Unix socket's backlog: unix_diag (UDIAG_SHOW_RQLEN) reports sk_max_ack_backlog as
// the write queue of a listener; getsockopt has no way to read it.
int unixBacklog(ino_t inode) {
  Fd nl(socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (!nl.valid()) return -1;
  struct {
    nlmsghdr nh;
    unix_diag_req req;
  } msg{};
  msg.nh.nlmsg_len = sizeof msg;
  msg.nh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  msg.nh.nlmsg_flags = NLM_F_REQUEST;
  msg.req.sdiag_family = AF_UNIX;
  msg.req.udiag_states = ~0u;
  msg.req.udiag_ino = static_cast<uint32_t>(inode);
  msg.req.udiag_show = UDIAG_SHOW_RQLEN;
  msg.req.udiag_cookie[0] = msg.req.udiag_cookie[1] = ~0u;  // INET_DIAG_NOCOOKIE: match by inode
  if (send(nl.get(), &msg, sizeof msg, 0) != static_cast<ssize_t>(sizeof msg)) return -1;
  alignas(nlmsghdr) char buf[8192];
  ssize_t n = recv(nl.get(), buf, sizeof buf, 0);
  for (auto* h = reinterpret_cast<nlmsghdr*>(buf); n > 0 && NLMSG_OK(h, static_cast<unsigned>(n));
       h = NLMSG_NEXT(h, n)) {
    if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY) return -1;
    auto* m = static_cast<unix_diag_msg*>(NLMSG_DATA(h));
    int len = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof *m));
    for (auto* a = reinterpret_cast<rtattr*>(m + 1); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
      if (a->rta_type == UNIX_DIAG_RQLEN)
        return static_cast<int>(static_cast<unix_diag_rqlen*>(RTA_DATA(a))->udiag_wqueue);
    }
  }
  return -1;
}

}  // namespace

size_t peekPipe(pid_t pid, int fd, uint8_t* into, size_t cap) {
  Fd theirs = takeFd(pid, fd);
  int waiting = 0;
  if (ioctl(theirs.get(), FIONREAD, &waiting) != 0)
    throwErrno(errno, "ioctl(FIONREAD)", "cannot count the bytes in a pipe");
  if (waiting == 0 || cap == 0) return static_cast<size_t>(waiting);
  int p[2];
  if (pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) throwErrno(errno, "pipe2", "cannot make a pipe");
  Fd r(p[0]), w(p[1]);
  // tee copies at most what our pipe can hold: make it as big as what waits (pipe-max-size allows
  // 1 MiB by default, as much as a pipe can hold unless raised).
  fcntl(w.get(), F_SETPIPE_SZ, waiting);
  size_t want = std::min(static_cast<size_t>(waiting), cap), got = 0;
  ssize_t t = tee(theirs.get(), w.get(), want, SPLICE_F_NONBLOCK);
  if (t < 0) throwErrno(errno, "tee", "cannot copy the bytes waiting in a pipe");
  while (got < static_cast<size_t>(t)) {
    ssize_t k = read(r.get(), into + got, static_cast<size_t>(t) - got);
    if (k <= 0) throwErrno(k < 0 ? errno : EIO, "read", "cannot read the copy of a pipe's bytes");
    got += static_cast<size_t>(k);
  }
  if (got < want) throwSys(EAGAIN, "tee", "a pipe's bytes changed while they were copied (is the process running?)");
  return static_cast<size_t>(waiting);
}

SocketFacts socketFacts(pid_t pid, int fd) {
  Fd s = takeFd(pid, fd);
  SocketFacts f;
  f.family = intOpt(s.get(), SOL_SOCKET, SO_DOMAIN);
  f.type = intOpt(s.get(), SOL_SOCKET, SO_TYPE);
  f.protocol = intOpt(s.get(), SOL_SOCKET, SO_PROTOCOL);
  f.listening = intOpt(s.get(), SOL_SOCKET, SO_ACCEPTCONN) == 1;
  f.reuseAddr = intOpt(s.get(), SOL_SOCKET, SO_REUSEADDR) == 1;
  f.reusePort = intOpt(s.get(), SOL_SOCKET, SO_REUSEPORT) == 1;
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  if (getsockname(s.get(), reinterpret_cast<sockaddr*>(&a), &len) == 0)
    f.localAddress.assign(reinterpret_cast<char*>(&a), len);
  sockaddr_storage peer{};
  len = sizeof peer;
  f.connected = getpeername(s.get(), reinterpret_cast<sockaddr*>(&peer), &len) == 0;
  if (f.listening && (f.family == AF_INET || f.family == AF_INET6)) {
    // For a listener, tcp_get_info reports sk_max_ack_backlog in tcpi_sacked.
    tcp_info ti{};
    len = sizeof ti;
    if (getsockopt(s.get(), IPPROTO_TCP, TCP_INFO, &ti, &len) == 0) f.backlog = static_cast<int>(ti.tcpi_sacked);
  } else if (f.listening && f.family == AF_UNIX) {
    struct stat st {};
    if (fstat(s.get(), &st) == 0) f.backlog = unixBacklog(st.st_ino);
  }
  return f;
}

}  // namespace precopy
