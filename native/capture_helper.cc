// Both sides of the capture helper: captureHelperMain (the helper process) and
// HelperFrozenProcess (the addon). Messages are fixed structs over SOCK_SEQPACKET; a thread's
// XSAVE area follows its struct in the same message.
#include "capture_helper.h"

#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <memory>
#include <string>

#include "cow_snapshot.h"
#include "helper_process.h"
#include "inject.h"
#include "proc_files.h"
#include "ptrace_threads.h"

#ifndef PTRACE_O_SUSPEND_SECCOMP
#define PTRACE_O_SUSPEND_SECCOMP (1 << 21)
#endif

namespace precopy {

namespace {

enum : uint32_t { kFrozenThread = 1, kFrozenDone = 2, kThread = 3, kProcess = 4, kDone = 5, kError = 6, kSnapshot = 7 };
enum : uint32_t {
  kCmdCapture = 1,
  kCmdThaw = 2,
  kCmdThawStopped = 3,
  kCmdKill = 4,
  kCmdSnapshot = 5,
  kCmdDropSnapshot = 6,
  kCmdFreeze = 7
};

struct WireStatus {
  uint32_t type;  // kFrozenDone, kDone or kError
  int32_t err;
  char syscall[64];
  char message[440];
};

struct WireFrozenThread {
  uint32_t type;
  int32_t tid;
  user_regs_struct regs;
  user_fpregs_struct fpregs;
};

struct WireThread {
  uint32_t type;
  int32_t tid;
  int32_t restart;
  int32_t altFlags;
  user_regs_struct regs, restoreRegs;
  user_fpregs_struct fpregs;
  uint64_t sigmask, rseqAddr;
  uint32_t rseqLen, rseqSig, rseqFlags, xstateLen;
  uint64_t robustHead, robustLen, clearChildTid, altSp, altSize;
  // xstateLen bytes follow
};

struct WireProcess {
  uint32_t type;
  int32_t dumpable, securebits, pad;
  uint64_t brk;
  KernelSigaction actions[64];
};

// Followed by `ranges` [start, end) u64 pairs: what the snapshot does not hold (cow_snapshot.h).
struct WireSnapshot {
  uint32_t type;
  int32_t pid;
  uint32_t ranges, pad;
};

constexpr size_t kMaxXstate = 64 * 1024;
constexpr size_t kMaxMessage = sizeof(WireThread) + kMaxXstate;

WireStatus status(uint32_t type, const SysError* e) {
  WireStatus s = {};
  s.type = type;
  if (e) {
    s.err = e->err ? e->err : EIO;
    snprintf(s.syscall, sizeof s.syscall, "%s", e->syscall.c_str());
    snprintf(s.message, sizeof s.message, "%s", e->message.c_str());
  }
  return s;
}

// ---- helper side ----

void sendThread(int sock, const ThreadCapture& c) {
  std::vector<uint8_t> buf(sizeof(WireThread) + c.xstate.size());
  WireThread w = {};
  w.type = kThread;
  w.tid = c.tid;
  w.restart = static_cast<int32_t>(c.restart);
  w.altFlags = c.altFlags;
  w.regs = c.regs;
  w.restoreRegs = c.restoreRegs;
  w.fpregs = c.fpregs;
  w.sigmask = c.sigmask;
  w.rseqAddr = c.rseqAddr;
  w.rseqLen = c.rseqLen;
  w.rseqSig = c.rseqSig;
  w.rseqFlags = c.rseqFlags;
  w.xstateLen = static_cast<uint32_t>(c.xstate.size());
  w.robustHead = c.robustHead;
  w.robustLen = c.robustLen;
  w.clearChildTid = c.clearChildTid;
  w.altSp = c.altSp;
  w.altSize = c.altSize;
  memcpy(buf.data(), &w, sizeof w);
  memcpy(buf.data() + sizeof w, c.xstate.data(), c.xstate.size());
  sendMessage(sock, buf.data(), buf.size());
}

void sendCapture(int sock, const ProcessCapture& pc) {
  for (const ThreadCapture& c : pc.threads) sendThread(sock, c);
  WireProcess p = {};
  p.type = kProcess;
  p.dumpable = pc.dumpable;
  p.securebits = pc.securebits;
  p.brk = pc.brk;
  memcpy(p.actions, pc.actions, sizeof p.actions);
  sendMessage(sock, &p, sizeof p);
}

void sendStatus(int sock, uint32_t type, const SysError* e) {
  WireStatus s = status(type, e);
  sendMessage(sock, &s, sizeof s);
}

void sendSnapshot(int sock, const CowSnapshot& snap) {
  const size_t pairs = snap.notHeld.size() / 2;
  if (sizeof(WireSnapshot) + pairs * 16 > kMaxMessage)
    throwSys(E2BIG, "clone",
             "the snapshot leaves out " + std::to_string(pairs) + " memory areas: too many to verify while frozen");
  std::vector<uint8_t> buf(sizeof(WireSnapshot) + pairs * 16);
  WireSnapshot w = {kSnapshot, snap.pid, static_cast<uint32_t>(pairs), 0};
  memcpy(buf.data(), &w, sizeof w);
  memcpy(buf.data() + sizeof w, snap.notHeld.data(), pairs * 16);
  sendMessage(sock, buf.data(), buf.size());
}

// Runs until told to let go or until the addon's end is closed (EOF): then thaws. A snapshot
// outlives the thaw: the helper serves until it is dropped (or EOF, which drops it too).
void serve(SeizedProcess& sp, uint64_t gadget, long options, int sock) {
  pid_t snapshot = -1;
  bool thawed = false;
  for (;;) {
    uint32_t cmd = 0;
    size_t n;
    try {
      n = recvMessage(sock, &cmd, sizeof cmd, "the addon");
    } catch (const SysError&) {
      n = 0;
    }
    if (n != sizeof cmd) {  // EOF (the sender died or dropped us) or garbage: let the target go
      sp.detachAll();
      dropCowSnapshot(snapshot);
      return;
    }
    switch (cmd) {
      case kCmdCapture:
        try {
          if (thawed) throwSys(EINVAL, "capture", "the process is no longer frozen");
          sendCapture(sock, captureProcess(sp, gadget));
          sendStatus(sock, kDone, nullptr);
        } catch (const SysError& e) {
          sendStatus(sock, kError, &e);
        }
        break;
      case kCmdSnapshot:
        try {
          if (thawed || snapshot > 0) throwSys(EINVAL, "clone", "a snapshot needs a frozen process and is taken once");
          CowSnapshot snap = takeCowSnapshot(sp, gadget, options);
          snapshot = snap.pid;
          sendSnapshot(sock, snap);
        } catch (const SysError& e) {
          if (snapshot > 0) dropCowSnapshot(std::exchange(snapshot, -1));
          sendStatus(sock, kError, &e);
        }
        break;
      case kCmdDropSnapshot:
        dropCowSnapshot(std::exchange(snapshot, -1));
        sendStatus(sock, kDone, nullptr);
        if (thawed) return;
        break;
      case kCmdThawStopped:
      case kCmdKill:
        ::kill(sp.pid(), cmd == kCmdKill ? SIGKILL : SIGSTOP);
        dropCowSnapshot(std::exchange(snapshot, -1));
        [[fallthrough]];
      case kCmdThaw:
      default: {
        sp.detachAll();
        thawed = true;
        sendStatus(sock, kDone, nullptr);
        if (snapshot < 0) return;
        break;
      }
    }
  }
}

}  // namespace

void captureHelperMain(pid_t pid, uint64_t gadgetHint, int sock) {
  // Started ahead of the freeze: wait for the word. EOF (the sender died, or dropped us before
  // freezing) or anything else: leave the target alone.
  uint32_t cmd = 0;
  try {
    if (recvMessage(sock, &cmd, sizeof cmd, "the addon") != sizeof cmd || cmd != kCmdFreeze) return;
  } catch (const SysError&) {
    return;
  }
  std::unique_ptr<SeizedProcess> sp;
  uint64_t gadget = 0;
  long options = PTRACE_O_TRACESYSGOOD;  // what SeizedProcess seizes with
  try {
    // The sender found the gadget before the freeze; checking it costs one read.
    gadget = gadgetHint && isSyscallGadget(pid, gadgetHint) ? gadgetHint : findSyscallGadget(pid);
    const bool seccomp = statusField(pid, "Seccomp") > 0;
    if (seccomp) options |= PTRACE_O_SUSPEND_SECCOMP;
    sp = std::make_unique<SeizedProcess>(pid);
    for (SeizedThread& t : sp->threads()) {
      if (t.exited) continue;
      if (seccomp && ::ptrace(PTRACE_SETOPTIONS, t.tid, nullptr, reinterpret_cast<void*>(options)) < 0)
        throwSys(errno, "ptrace(PTRACE_SETOPTIONS)",
                 "process " + std::to_string(pid) +
                     " runs under seccomp and it cannot be suspended for the capture: " + strerror(errno));
      WireFrozenThread w = {};
      w.type = kFrozenThread;
      w.tid = t.tid;
      if (::ptrace(PTRACE_GETREGS, t.tid, nullptr, &w.regs) < 0 ||
          ::ptrace(PTRACE_GETFPREGS, t.tid, nullptr, &w.fpregs) < 0) {
        if (errno == ESRCH) continue;  // killed while frozen
        throwForPid(errno, "ptrace(PTRACE_GETREGS)", pid, "read registers of");
      }
      sendMessage(sock, &w, sizeof w);
    }
  } catch (const SysError& e) {
    if (sp) sp->detachAll();
    WireStatus s = status(kError, &e);
    sendMessage(sock, &s, sizeof s);
    return;
  }
  WireStatus s = status(kFrozenDone, nullptr);
  sendMessage(sock, &s, sizeof s);
  serve(*sp, gadget, options, sock);
}

// ---- addon side ----

namespace {

[[noreturn]] void throwStatus(const WireStatus& s) {
  throwSys(s.err ? s.err : EIO, std::string(s.syscall, strnlen(s.syscall, sizeof s.syscall)),
           std::string(s.message, strnlen(s.message, sizeof s.message)));
}

[[noreturn]] void throwHelperGone(pid_t pid) {
  throwSys(EIO, "recv", "the capture helper of process " + std::to_string(pid) + " exited unexpectedly");
}

}  // namespace

HelperFrozenProcess::HelperFrozenProcess(pid_t pid, uint64_t gadgetHint, bool freezeNow) : pid_(pid) {
  checkTargetPid(pid);
  char hint[32];
  snprintf(hint, sizeof hint, "%llx", static_cast<unsigned long long>(gadgetHint));
  Helper h = spawnHelper(siblingExecutable(kCaptureHelperName), {std::to_string(pid), hint});
  helper_ = h.pid;
  sock_ = std::move(h.sock);
  finished_ = true;  // not frozen until freeze()
  if (freezeNow) freeze();
}

void HelperFrozenProcess::freeze() {
  if (!finished_ || helper_ < 0) throwSys(EINVAL, "ptrace", "process " + std::to_string(pid_) + " was frozen already");
  try {
    const uint32_t cmd = kCmdFreeze;
    if (!sendMessage(sock_.get(), &cmd, sizeof cmd)) throwHelperGone(pid_);
    std::vector<uint8_t> buf(kMaxMessage);
    for (;;) {
      size_t n = recvMessage(sock_.get(), buf.data(), buf.size(), "the capture helper");
      if (n == 0) throwHelperGone(pid_);
      uint32_t type;
      memcpy(&type, buf.data(), sizeof type);
      if (type == kFrozenThread && n == sizeof(WireFrozenThread)) {
        WireFrozenThread w;
        memcpy(&w, buf.data(), sizeof w);
        threads_.push_back(ThreadRegs{w.tid, w.regs, w.fpregs, {}});  // XSAVE comes with capture()
      } else if ((type == kFrozenDone || type == kError) && n == sizeof(WireStatus)) {
        WireStatus s;
        memcpy(&s, buf.data(), sizeof s);
        if (type == kError) throwStatus(s);
        break;
      } else {
        throwSys(EPROTO, "recv", "the capture helper sent an unexpected message");
      }
    }
    finished_ = false;
  } catch (...) {
    sock_.reset();
    reapHelper();
    throw;
  }
}

HelperFrozenProcess::~HelperFrozenProcess() {
  sock_.reset();  // EOF: the helper thaws (if still holding the target) and exits
  reapHelper();
}

void HelperFrozenProcess::reapHelper() {
  if (helper_ <= 0) return;
  int st;
  while (::waitpid(helper_, &st, 0) < 0 && errno == EINTR) {
  }
  helper_ = -1;
}

ProcessCapture HelperFrozenProcess::capture() {
  if (finished_) throwSys(EINVAL, "capture", "process " + std::to_string(pid_) + " is no longer frozen");
  const uint32_t cmd = kCmdCapture;
  if (!sendMessage(sock_.get(), &cmd, sizeof cmd)) throwHelperGone(pid_);
  ProcessCapture pc;
  bool gotProcess = false;
  std::vector<uint8_t> buf(kMaxMessage);
  for (;;) {
    size_t n = recvMessage(sock_.get(), buf.data(), buf.size(), "the capture helper");
    if (n == 0) throwHelperGone(pid_);
    uint32_t type;
    memcpy(&type, buf.data(), sizeof type);
    if (type == kThread && n >= sizeof(WireThread)) {
      WireThread w;
      memcpy(&w, buf.data(), sizeof w);
      if (n != sizeof w + w.xstateLen) throwSys(EPROTO, "recv", "the capture helper sent a malformed thread record");
      ThreadCapture c;
      c.tid = w.tid;
      c.regs = w.regs;
      c.restoreRegs = w.restoreRegs;
      c.fpregs = w.fpregs;
      c.restart = static_cast<SyscallRestart>(w.restart);
      c.xstate.assign(buf.data() + sizeof w, buf.data() + n);
      c.sigmask = w.sigmask;
      c.rseqAddr = w.rseqAddr;
      c.rseqLen = w.rseqLen;
      c.rseqSig = w.rseqSig;
      c.rseqFlags = w.rseqFlags;
      c.robustHead = w.robustHead;
      c.robustLen = w.robustLen;
      c.clearChildTid = w.clearChildTid;
      c.altSp = w.altSp;
      c.altFlags = w.altFlags;
      c.altSize = w.altSize;
      pc.threads.push_back(std::move(c));
    } else if (type == kProcess && n == sizeof(WireProcess)) {
      WireProcess p;
      memcpy(&p, buf.data(), sizeof p);
      pc.brk = p.brk;
      pc.dumpable = p.dumpable;
      pc.securebits = p.securebits;
      memcpy(pc.actions, p.actions, sizeof pc.actions);
      gotProcess = true;
    } else if ((type == kDone || type == kError) && n == sizeof(WireStatus)) {
      WireStatus s;
      memcpy(&s, buf.data(), sizeof s);
      if (type == kError) throwStatus(s);
      if (!gotProcess) throwSys(EPROTO, "recv", "the capture helper sent no process record");
      return pc;
    } else {
      throwSys(EPROTO, "recv", "the capture helper sent an unexpected message");
    }
  }
}

void HelperFrozenProcess::requestSnapshot() {
  if (finished_ || snapshotAsked_ || snapshotHeld_)
    throwSys(EINVAL, "clone", "a snapshot of process " + std::to_string(pid_) + " needs it frozen and is taken once");
  const uint32_t cmd = kCmdSnapshot;
  if (!sendMessage(sock_.get(), &cmd, sizeof cmd)) throwHelperGone(pid_);
  snapshotAsked_ = true;
}

SnapshotInfo HelperFrozenProcess::awaitSnapshot() {
  if (!snapshotAsked_) throwSys(EINVAL, "clone", "no snapshot was asked for");
  snapshotAsked_ = false;
  std::vector<uint8_t> buf(kMaxMessage);
  const size_t n = recvMessage(sock_.get(), buf.data(), buf.size(), "the capture helper");
  if (n == 0) throwHelperGone(pid_);
  uint32_t type;
  memcpy(&type, buf.data(), sizeof type);
  if (type == kError && n == sizeof(WireStatus)) {
    WireStatus s;
    memcpy(&s, buf.data(), sizeof s);
    throwStatus(s);
  }
  WireSnapshot w;
  if (type != kSnapshot || n < sizeof w) throwSys(EPROTO, "recv", "the capture helper sent an unexpected message");
  memcpy(&w, buf.data(), sizeof w);
  if (n != sizeof w + w.ranges * 16ull) throwSys(EPROTO, "recv", "the capture helper sent a malformed snapshot record");
  snapshotHeld_ = true;
  SnapshotInfo info{w.pid, std::vector<uint64_t>(w.ranges * 2)};
  memcpy(info.notHeld.data(), buf.data() + sizeof w, w.ranges * 16ull);
  return info;
}

void HelperFrozenProcess::dropSnapshot() {
  if (!snapshotHeld_) return;
  snapshotHeld_ = false;
  const uint32_t cmd = kCmdDropSnapshot;
  if (sendMessage(sock_.get(), &cmd, sizeof cmd)) {
    WireStatus s;
    try {
      recvMessage(sock_.get(), &s, sizeof s, "the capture helper");
    } catch (const SysError&) {
    }
  }
  if (finished_) {  // thawed already: the helper exits now
    sock_.reset();
    reapHelper();
  }
}

void HelperFrozenProcess::finish(uint32_t cmd) {
  if (finished_) {
    if (helper_ > 0 && !snapshotHeld_ && threads_.empty()) {  // started, never frozen: let it go
      sock_.reset();
      reapHelper();
    }
    return;
  }
  if (snapshotAsked_) {  // its answer comes first on the socket
    try {
      awaitSnapshot();
    } catch (const SysError&) {
    }
  }
  finished_ = true;
  bool ok = sendMessage(sock_.get(), &cmd, sizeof cmd);
  WireStatus s = {};
  size_t n = 0;
  if (ok) {
    try {
      n = recvMessage(sock_.get(), &s, sizeof s, "the capture helper");
    } catch (const SysError&) {
      n = 0;
    }
  }
  if (!(snapshotHeld_ && cmd == kCmdThaw && n == sizeof s)) {  // a snapshot outlives a thaw only
    snapshotHeld_ = false;
    sock_.reset();
    reapHelper();
  }
  if (n != sizeof s) throwHelperGone(pid_);
  if (s.type == kError) throwStatus(s);
}

void HelperFrozenProcess::thaw() {
  finish(kCmdThaw);
}
void HelperFrozenProcess::thawStopped() {
  finish(kCmdThawStopped);
}
void HelperFrozenProcess::kill() {
  finish(kCmdKill);
}

}  // namespace precopy
