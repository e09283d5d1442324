// The copy-on-write snapshot (see cow_snapshot.h for the what and why; docs/design.md, Verify off
// the freeze, for the choice against a userfaultfd snapshot).
#include "cow_snapshot.h"

#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <sys/wait.h>

#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <utility>

#include "inject.h"
#include "kernel_abi.h"
#include "pagemap_scan.h"
#include "proc_files.h"
#include "stack_scratch.h"
#include "thread_state.h"

namespace precopy {

namespace {

[[noreturn]] void notHere(pid_t pid, const std::string& why) {
  throwSys(ENOTSUP, "clone", "no snapshot of process " + std::to_string(pid) + ": " + why);
}

void checkInjected(long r, const char* call, pid_t pid) {
  if (r < 0)
    throwErrno(static_cast<int>(-r), call,
               std::string(call) + " injected into process " + std::to_string(pid) + " failed");
}

// A "Name:\t<hex>" line of a status file.
uint64_t hexStatusField(const std::string& status, const std::string& name) {
  std::istringstream in(status);
  std::string line;
  while (std::getline(in, line))
    if (line.compare(0, name.size() + 1, name + ":") == 0) return strtoull(line.c_str() + name.size() + 1, nullptr, 16);
  return 0;
}

// Ignoring SIGCHLD discards a pending one (POSIX). That loses nothing when the process would
// ignore it anyway (no handler, not blocked: a frozen, traced process gets even ignored signals
// queued); otherwise a handler, sigwait() or a signalfd would miss it, and the target is left alone.
bool sigchldWouldBeLost(pid_t pid) {
  const uint64_t bit = uint64_t{1} << (SIGCHLD - 1);
  const std::string status = readProcFile(pid, "status");
  bool pending = hexStatusField(status, "ShdPnd") & bit, blocked = false;
  for (pid_t tid : listThreads(pid)) {
    const std::string ts = readProcFile(pid, "task/" + std::to_string(tid) + "/status");
    pending = pending || (hexStatusField(ts, "SigPnd") & bit);
    blocked = blocked || (hexStatusField(ts, "SigBlk") & bit);
  }
  return pending && (blocked || (hexStatusField(status, "SigCgt") & bit));
}

// The last NSpid is the pid in the target's own namespace: 1 makes it that namespace's reaper.
bool pidNamespaceInit(pid_t pid) {
  std::istringstream in(readProcFile(pid, "status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, 6, "NSpid:") != 0) continue;
    std::istringstream f(line.substr(6));
    std::string last, tok;
    while (f >> tok) last = tok;
    return last == "1";
  }
  return false;
}

std::vector<pid_t> liveChildren(pid_t pid) {
  std::vector<pid_t> out;
  for (pid_t tid : listThreads(pid)) {
    std::string text;
    try {
      text = readProcFile(pid, "task/" + std::to_string(tid) + "/children");
    } catch (const SysError&) {
      continue;  // the thread exited
    }
    std::istringstream in(text);
    for (pid_t c; in >> c;) {
      const char st = threadState(c, c);
      if (st != 0 && st != 'Z' && st != 'X') out.push_back(c);
    }
  }
  return out;
}

// A traced child that must never run a user instruction: should its tracer die and let it go,
// its first instruction is exit_group(0).
void pointAtExit(pid_t tid, uint64_t gadget) {
  user_regs_struct r;
  if (::ptrace(PTRACE_GETREGS, tid, nullptr, &r) < 0)
    throwForPid(errno, "ptrace(PTRACE_GETREGS)", tid, "read registers of");
  r.rip = gadget;
  r.rax = SYS_exit_group;
  r.rdi = 0;
  r.orig_rax = ~0ull;  // no syscall restart
  if (::ptrace(PTRACE_SETREGS, tid, nullptr, &r) < 0)
    throwForPid(errno, "ptrace(PTRACE_SETREGS)", tid, "set registers of");
}

// A child the borrowed thread just forked: auto-attached, it reports its first stop.
void awaitBirth(SeizedProcess& sp, pid_t child, uint64_t gadget) {
  if (sp.waitStop(child).kind != StopKind::Event)
    throwSys(ESRCH, "clone",
             "the snapshot process " + std::to_string(child) + " of " + std::to_string(sp.pid()) + " died at birth");
  pointAtExit(child, gadget);
}

void killAndWait(pid_t child) noexcept {
  ::kill(child, SIGKILL);
  int st;
  while (::waitpid(child, &st, __WALL) < 0 && errno == EINTR) {
  }
}

struct Injector {
  SeizedProcess& sp;
  SeizedThread& t;
  uint64_t gadget;
};

// Scratch on the borrowed thread's stack for pointer arguments. Only ever while no snapshot is
// being forked: a fork would copy the scratch bytes, not the thread's own (they are put back
// when the scratch goes out of scope).
StackScratch scratchOf(const Injector& in) {
  user_regs_struct regs;
  if (::ptrace(PTRACE_GETREGS, in.t.tid, nullptr, &regs) < 0)
    throwForPid(errno, "ptrace(PTRACE_GETREGS)", in.sp.pid(), "read registers of");
  return StackScratch(in.sp.pid(), in.t.tid, regs.rsp);
}

// Kill a child of the target (traced by us) so that the kernel reaps it: with the target's
// SIGCHLD ignored, reaping it as its tracer releases it at once (no signal, no zombie, nothing
// added to the target's child accounting). The target is frozen and its live children are held
// still, so no other child can die while SIGCHLD is ignored.
void reapQuietly(const Injector& in, pid_t child) {
  const pid_t pid = in.sp.pid();
  const StackScratch scratch = scratchOf(in);
  const KernelSigaction ignore = {reinterpret_cast<uint64_t>(SIG_IGN), 0, 0, 0};
  KernelSigaction old = {};
  scratch.write(&ignore, sizeof ignore, 0);
  checkInjected(
      injectSyscall(in.sp, in.t, in.gadget, SYS_rt_sigaction, {SIGCHLD, scratch.addr(), scratch.addr() + 32, 8}),
      "rt_sigaction", pid);
  scratch.read(&old, sizeof old, 32);
  killAndWait(child);
  scratch.write(&old, sizeof old, 0);
  checkInjected(injectSyscall(in.sp, in.t, in.gadget, SYS_rt_sigaction, {SIGCHLD, scratch.addr(), 0, 8}),
                "rt_sigaction", pid);
  // Released, not a zombie (should the kernel ever keep it, the target reaps it now).
  if (::kill(child, 0) == 0)
    injectSyscall(in.sp, in.t, in.gadget, SYS_wait4, {static_cast<uint64_t>(child), 0, __WALL, 0});
}

struct Area {
  uint64_t start, end;
  bool shared;
};

std::vector<Area> areas(pid_t pid) {
  std::vector<Area> out;
  std::istringstream in(readProcFile(pid, "maps"));
  std::string line;
  while (std::getline(in, line)) {
    unsigned long lo, hi;
    char perms[8] = {0};
    if (sscanf(line.c_str(), "%lx-%lx %7s", &lo, &hi, perms) == 3) out.push_back({lo, hi, perms[3] == 's'});
  }
  return out;
}

// What the snapshot does not hold as the target had it: shared mappings (the same pages, not a
// copy), mappings fork leaves out (MADV_DONTFORK) or empty (MADV_WIPEONFORK). A private mapping
// fork copied holds every page table entry of the target's, so one present (or swapped) page
// found in it tells it apart from a wiped one.
std::vector<uint64_t> notHeldBy(pid_t pid, pid_t snap) {
  std::set<std::pair<uint64_t, uint64_t>> copied;
  for (const Area& a : areas(snap)) copied.insert({a.start, a.end});
  Fd pagemap = openPagemap(snap);
  std::vector<uint64_t> out;
  for (const Area& a : areas(pid)) {
    bool held = !a.shared && copied.count({a.start, a.end}) > 0;
    if (held) {
      ScanRequest rq;
      rq.start = a.start;
      rq.end = a.end;
      rq.categoryAnyofMask = rq.returnMask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED;
      rq.maxPages = 1;
      uint64_t vec[3];
      try {
        held = pagemapScan(pagemap.get(), rq, vec, 1).count > 0;
      } catch (const SysError&) {
        held = false;
      }
    }
    if (held) continue;
    if (!out.empty() && out.back() == a.start)
      out.back() = a.end;
    else
      out.insert(out.end(), {a.start, a.end});
  }
  return out;
}

}  // namespace

CowSnapshot takeCowSnapshot(SeizedProcess& sp, uint64_t gadget, long options) {
  const pid_t pid = sp.pid();
  if (sigchldWouldBeLost(pid))
    notHere(pid, "a SIGCHLD is pending for it (ignoring SIGCHLD for an instant would discard it)");
  if (pidNamespaceInit(pid)) notHere(pid, "it is the init of its pid namespace (the snapshot would become its child)");
  SeizedThread& t = sp.anyLiveThread();
  const Injector in{sp, t, gadget};
  int subreaper = 0;
  {
    const StackScratch scratch = scratchOf(in);
    checkInjected(injectSyscall(sp, t, gadget, SYS_prctl, {PR_GET_CHILD_SUBREAPER, scratch.addr()}),
                  "prctl(PR_GET_CHILD_SUBREAPER)", pid);
    scratch.read(&subreaper, sizeof subreaper);
  }
  if (subreaper) notHere(pid, "it is a child subreaper (the snapshot would become its child)");

  // The target's running children are held still until the helper child is reaped (reapQuietly).
  std::vector<std::unique_ptr<SeizedProcess>> held;
  for (pid_t c : liveChildren(pid)) {
    try {
      held.push_back(std::make_unique<SeizedProcess>(c));
    } catch (const SysError& e) {
      notHere(pid, "its child process " + std::to_string(c) + " cannot be held still (" + e.message + ")");
    }
  }

  // Trace what the borrowed thread forks, and what that child forks (options are inherited).
  if (::ptrace(PTRACE_SETOPTIONS, t.tid, nullptr, reinterpret_cast<void*>(options | PTRACE_O_TRACEFORK)) < 0)
    throwForPid(errno, "ptrace(PTRACE_SETOPTIONS)", pid, "trace");
  struct RestoreOptions {
    pid_t tid;
    long options;
    ~RestoreOptions() { ::ptrace(PTRACE_SETOPTIONS, tid, nullptr, reinterpret_cast<void*>(options)); }
  } restoreOptions{t.tid, options};

  // A: the target's memory, files and fs shared (nothing copied, no file reference taken).
  const long a = injectSyscall(sp, t, gadget, SYS_clone, {CLONE_VM | CLONE_FS | CLONE_FILES | SIGCHLD, 0, 0, 0, 0});
  if (a < 0) notHere(pid, std::string("clone() in it failed: ") + strerror(static_cast<int>(-a)));
  CowSnapshot snap;
  try {
    awaitBirth(sp, static_cast<pid_t>(a), gadget);
    // B, the snapshot: forked by A, so a copy-on-write copy of the target's memory whose parent
    // is A (B shares the fd table: it never runs, and holds no extra reference to any file).
    SeizedThread ta{static_cast<pid_t>(a), false, {}};
    const long b = injectSyscall(sp, ta, gadget, SYS_clone, {CLONE_FS | CLONE_FILES | SIGCHLD, 0, 0, 0, 0});
    if (b < 0)
      throwErrno(static_cast<int>(-b), "clone", "fork() of the snapshot of process " + std::to_string(pid) + " failed");
    snap.pid = static_cast<pid_t>(b);
    awaitBirth(sp, snap.pid, gadget);
  } catch (...) {
    if (snap.pid > 0) killAndWait(snap.pid);  // still A's child: reaped with A below
    reapQuietly(in, static_cast<pid_t>(a));
    throw;
  }
  reapQuietly(in, static_cast<pid_t>(a));  // B is an orphan now: init's (or a subreaper's) child
  held.clear();
  try {
    if (statusField(snap.pid, "PPid") == pid) notHere(pid, "the snapshot was handed back to it as its child");
    snap.notHeld = notHeldBy(pid, snap.pid);
  } catch (...) {
    if (statusField(snap.pid, "PPid") == pid)
      reapQuietly(in, snap.pid);
    else
      killAndWait(snap.pid);
    throw;
  }
  return snap;
}

void dropCowSnapshot(pid_t snapshot) noexcept {
  if (snapshot > 0) killAndWait(snapshot);
}

}  // namespace precopy
