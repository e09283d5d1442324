// Scratch memory for the pointer arguments of injected syscalls: a stopped thread's own stack
// below its red zone. The x86_64 ABI lets a signal handler frame clobber anything below rsp-128 at
// any moment, so the thread keeps nothing there; still, the bytes are read first and written back
// on destruction, so a thawed process (and an image, or a snapshot, of it) sees exactly what it
// had. No mapping is created or removed (an injected mmap would show up in the sender's VMA diff
// and could land where the process is about to map something).
#pragma once

#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <string>

#include "sys_error.h"

namespace precopy {

class StackScratch {
 public:
  static constexpr size_t kSize = 64;
  StackScratch(pid_t pid, pid_t tid, uint64_t rsp) : pid_(pid), addr_((rsp - 128 - kSize) & ~uint64_t{63}) {
    if (!transfer(false, saved_))
      throwSys(errno, "process_vm_readv",
               "thread " + std::to_string(tid) + " of process " + std::to_string(pid) +
                   " has no readable stack below rsp 0x" + hex(rsp) + " to hold the arguments of injected calls");
  }
  ~StackScratch() { transfer(true, saved_); }
  StackScratch(const StackScratch&) = delete;
  StackScratch& operator=(const StackScratch&) = delete;
  uint64_t addr() const { return addr_; }
  void read(void* out, size_t len, size_t at = 0) const { copy(false, out, len, at); }
  void write(const void* in, size_t len, size_t at = 0) const { copy(true, const_cast<void*>(in), len, at); }

 private:
  static std::string hex(uint64_t v) {
    char b[32];
    snprintf(b, sizeof b, "%llx", static_cast<unsigned long long>(v));
    return b;
  }
  void copy(bool write, void* buf, size_t len, size_t at) const {
    if (at + len > kSize) throwSys(EINVAL, "process_vm_readv", "stack scratch overflow");
    struct iovec l = {buf, len}, r = {reinterpret_cast<void*>(addr_ + at), len};
    ssize_t n = write ? ::process_vm_writev(pid_, &l, 1, &r, 1, 0) : ::process_vm_readv(pid_, &l, 1, &r, 1, 0);
    if (n != static_cast<ssize_t>(len))
      throwForPid(errno, write ? "process_vm_writev" : "process_vm_readv", pid_,
                  write ? "write the stack of" : "read the stack of");
  }
  bool transfer(bool write, uint8_t* buf) const {
    struct iovec l = {buf, kSize}, r = {reinterpret_cast<void*>(addr_), kSize};
    ssize_t n = write ? ::process_vm_writev(pid_, &l, 1, &r, 1, 0) : ::process_vm_readv(pid_, &l, 1, &r, 1, 0);
    return n == static_cast<ssize_t>(kSize);
  }
  pid_t pid_;
  uint64_t addr_;
  uint8_t saved_[kSize];
};

}  // namespace precopy
