// (Over 400 lines on purpose: all Node-API conversion is here and nowhere else.)
// The only Node-API file: converts JS values to the plain C++ calls of the feature files and
// back, and turns precopy::SysError into the JS NativeError class (errno, code, syscall).
// Argument checking with friendly messages lives in native/index.ts; the checks here only keep
// a wrong call from crashing the process.
#include <napi.h>
#include <string.h>
#include <sys/wait.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "capture_helper.h"
#include "inject.h"
#include "direct_write.h"
#include "fd_inspect.h"
#include "freeze.h"
#include "helper_process.h"
#include "malloc_tuning.h"
#include "restore_stub.h"
#include "page_hash.h"
#include "page_reader.h"
#include "page_stager.h"
#include "probe.h"
#include "sys_error.h"
#include "tracker.h"
#include "xsave_layout.h"

namespace {

using precopy::SysError;

struct AddonData {
  Napi::FunctionReference errorClass;  // NativeError from index.ts (setErrorClass)
  Napi::FunctionReference trackerClass;
  Napi::FunctionReference frozenClass;
  Napi::FunctionReference captureFrozenClass;
  Napi::FunctionReference restoreStubClass;
};

AddonData& data(Napi::Env env) {
  return *env.GetInstanceData<AddonData>();
}

// ---- errors ----

Napi::Value nativeError(Napi::Env env, const SysError& e) {
  const char* name = strerrorname_np(e.err);
  const std::string code = name ? name : "E" + std::to_string(e.err);
  AddonData& d = data(env);
  if (!d.errorClass.IsEmpty())
    return d.errorClass.New({Napi::String::New(env, e.message), Napi::Number::New(env, e.err),
                             Napi::String::New(env, code), Napi::String::New(env, e.syscall)});
  Napi::Error err = Napi::Error::New(env, e.message);
  err.Set("errno", Napi::Number::New(env, e.err));
  err.Set("code", Napi::String::New(env, code));
  err.Set("syscall", Napi::String::New(env, e.syscall));
  return err.Value();
}

[[noreturn]] void rethrow(Napi::Env env, const SysError& e) {
  throw Napi::Error(env, nativeError(env, e));
}

// Runs body, turning a SysError into a thrown NativeError.
template <typename F>
auto guarded(Napi::Env env, F&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const SysError& e) {
    rethrow(env, e);
  }
}

// ---- argument helpers ----

[[noreturn]] void typeError(Napi::Env env, const std::string& msg) {
  throw Napi::TypeError::New(env, msg);
}

int64_t intArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsNumber()) typeError(info.Env(), std::string(name) + " must be a number");
  return info[i].As<Napi::Number>().Int64Value();
}

uint64_t field(const Napi::Object& o, const char* name) {
  Napi::Value v = o.Get(name);
  if (v.IsUndefined()) return 0;
  if (!v.IsNumber()) typeError(o.Env(), std::string(name) + " must be a number");
  return static_cast<uint64_t>(v.As<Napi::Number>().Int64Value());
}

Napi::BigUint64Array bigU64Arg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array)
    typeError(info.Env(), std::string(name) + " must be a BigUint64Array");
  return info[i].As<Napi::BigUint64Array>();
}

Napi::Float64Array f64Arg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array)
    typeError(info.Env(), std::string(name) + " must be a Float64Array");
  return info[i].As<Napi::Float64Array>();
}

Napi::Buffer<uint8_t> bufferArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsBuffer()) typeError(info.Env(), std::string(name) + " must be a Buffer");
  return info[i].As<Napi::Buffer<uint8_t>>();
}

precopy::ScanRequest scanRequest(const Napi::CallbackInfo& info) {
  if (!info[0].IsObject()) typeError(info.Env(), "scan arguments must be an object");
  Napi::Object o = info[0].As<Napi::Object>();
  precopy::ScanRequest r;
  r.start = field(o, "start");
  r.end = field(o, "end");
  r.flags = field(o, "flags");
  r.categoryInverted = field(o, "categoryInverted");
  r.categoryMask = field(o, "categoryMask");
  r.categoryAnyofMask = field(o, "categoryAnyofMask");
  r.returnMask = field(o, "returnMask");
  r.maxPages = field(o, "maxPages");
  return r;
}

Napi::Object scanResult(Napi::Env env, const precopy::ScanResult& r) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("count", Napi::Number::New(env, static_cast<double>(r.count)));
  o.Set("walkEnd", Napi::Number::New(env, static_cast<double>(r.walkEnd)));
  return o;
}

Napi::Object readResult(Napi::Env env, const precopy::ReadOutcome& r) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("bytesRead", Napi::Number::New(env, static_cast<double>(r.bytesRead)));
  Napi::Array failed = Napi::Array::New(env, r.failed.size());
  for (size_t i = 0; i < r.failed.size(); i++)
    failed.Set(static_cast<uint32_t>(i), Napi::Number::New(env, r.failed[i]));
  o.Set("failed", failed);
  return o;
}

// ---- multi-range walk (pagemap_walk.h) ----

// The numbers of `ranges` and `cursor` by position: precopy::WalkRangeField and WalkCursorField
// (pagemap_walk.h), which native/index.ts spells the same way: the two must match.
using precopy::WalkCursorField;
using precopy::WalkRangeField;

std::vector<precopy::WalkRange> walkRanges(const Napi::Float64Array& a) {
  std::vector<precopy::WalkRange> out(a.ElementLength() / WalkRangeField::Length);
  const double* d = a.Data();
  for (size_t i = 0; i < out.size(); i++, d += WalkRangeField::Length) {
    precopy::ScanRequest& r = out[i].req;
    r.start = static_cast<uint64_t>(d[WalkRangeField::Start]);
    r.end = static_cast<uint64_t>(d[WalkRangeField::End]);
    r.flags = static_cast<uint64_t>(d[WalkRangeField::Flags]);
    r.categoryInverted = static_cast<uint64_t>(d[WalkRangeField::CategoryInverted]);
    r.categoryMask = static_cast<uint64_t>(d[WalkRangeField::CategoryMask]);
    r.categoryAnyofMask = static_cast<uint64_t>(d[WalkRangeField::CategoryAnyofMask]);
    r.returnMask = static_cast<uint64_t>(d[WalkRangeField::ReturnMask]);
    out[i].limited = d[WalkRangeField::Limited] != 0;
  }
  return out;
}

// Only where to resume and the ioctl count come in; the per-call counts start from 0.
precopy::WalkCursor readCursor(const double* c) {
  precopy::WalkCursor w;
  w.range = static_cast<size_t>(c[WalkCursorField::Range]);
  w.position = static_cast<uint64_t>(c[WalkCursorField::Position]);
  w.ioctls = static_cast<uint64_t>(c[WalkCursorField::Ioctls]);
  return w;
}

void writeCursor(const precopy::WalkCursor& w, double* c) {
  c[WalkCursorField::Range] = static_cast<double>(w.range);
  c[WalkCursorField::Position] = static_cast<double>(w.position);
  c[WalkCursorField::Regions] = static_cast<double>(w.regions);
  c[WalkCursorField::Ioctls] = static_cast<double>(w.ioctls);
  c[WalkCursorField::LimitedPages] = static_cast<double>(w.limitedPages);
  c[WalkCursorField::UnlimitedRegions] = static_cast<double>(w.unlimitedRegions);
}

// The arguments of walk/walkAsync: (ranges, cursor, runs, meta, budget), typed arrays from JS.
struct WalkArgs {
  std::vector<precopy::WalkRange> ranges;
  precopy::WalkCursor cursor;
  double* cursorData;
  precopy::WalkOut out;
  uint64_t budget;
};

WalkArgs walkArgs(const Napi::CallbackInfo& info) {
  Napi::Float64Array ranges = f64Arg(info, 0, "ranges"), cursor = f64Arg(info, 1, "cursor");
  Napi::Float64Array runs = f64Arg(info, 2, "runs"), meta = f64Arg(info, 3, "meta");
  const int64_t budget = intArg(info, 4, "budget");
  if (cursor.ElementLength() < WalkCursorField::Length) typeError(info.Env(), "cursor is too short");
  if (budget <= 0) typeError(info.Env(), "budget must be positive");
  const size_t cap = std::min(runs.ElementLength() / 2, meta.ElementLength() / precopy::WalkMetaField::Length);
  return WalkArgs{walkRanges(ranges),
                  readCursor(cursor.Data()),
                  cursor.Data(),
                  {runs.Data(), meta.Data(), cap},
                  static_cast<uint64_t>(budget)};
}

// ---- Tracker ----

// scanAsync and walkAsync run each walk on its own std::thread (a big walk can take tens of
// milliseconds; the libuv pool is kept for file and network work) and settle the promise through a
// thread-safe function. The thread scans through a duplicate of the pagemap fd, so close() during a
// walk cannot make it scan a recycled fd number; `keep` holds the JS arrays the thread fills.
// On the JS thread, done() runs first (also after a failure: a cursor is written back), then the
// promise resolves with its value or rejects with the error.
struct ThreadScan {
  precopy::Fd fd;
  Napi::Promise::Deferred deferred;
  std::vector<Napi::ObjectReference> keep;
  std::function<void(int)> work;
  std::function<Napi::Value(Napi::Env)> done;
  std::unique_ptr<SysError> error;
  explicit ThreadScan(Napi::Env env) : deferred(Napi::Promise::Deferred::New(env)) {}
};

Napi::Promise onScanThread(Napi::Env env, precopy::Tracker& tracker, const char* name,
                           std::initializer_list<Napi::Object> keep, std::function<void(int)> work,
                           std::function<Napi::Value(Napi::Env)> done) {
  auto job = std::make_unique<ThreadScan>(env);
  for (const Napi::Object& o : keep) job->keep.push_back(Napi::Persistent(o));
  job->work = std::move(work);
  job->done = std::move(done);
  try {
    job->fd = tracker.dupPagemap();
  } catch (const SysError& e) {
    job->deferred.Reject(nativeError(env, e));
    return job->deferred.Promise();
  }
  Napi::Promise promise = job->deferred.Promise();
  auto tsfn =
      Napi::ThreadSafeFunction::New(env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}), name, 0, 1);
  std::thread([tsfn, job = job.release()]() mutable {
    try {
      job->work(job->fd.get());
    } catch (const SysError& e) {
      job->error = std::make_unique<SysError>(e);
    } catch (const std::exception& e) {
      job->error = std::make_unique<SysError>(SysError{EIO, "ioctl(PAGEMAP_SCAN)", e.what()});
    }
    job->fd.reset();
    tsfn.BlockingCall([job](Napi::Env env, Napi::Function) {
      std::unique_ptr<ThreadScan> owned(job);
      Napi::Value value = owned->done(env);
      if (owned->error)
        owned->deferred.Reject(nativeError(env, *owned->error));
      else
        owned->deferred.Resolve(value);
    });
    tsfn.Release();
  }).detach();
  return promise;
}

class TrackerWrap : public Napi::ObjectWrap<TrackerWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(
        env, "Tracker",
        {InstanceAccessor<&TrackerWrap::Pid>("pid"), InstanceMethod<&TrackerWrap::Register>("register"),
         InstanceMethod<&TrackerWrap::Unregister>("unregister"), InstanceMethod<&TrackerWrap::Scan>("scan"),
         InstanceMethod<&TrackerWrap::ScanAsync>("scanAsync"), InstanceMethod<&TrackerWrap::Walk>("walk"),
         InstanceMethod<&TrackerWrap::WalkAsync>("walkAsync"), InstanceMethod<&TrackerWrap::Close>("close")});
  }

  explicit TrackerWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TrackerWrap>(info) {
    const pid_t pid = static_cast<pid_t>(intArg(info, 0, "pid"));
    tracker_ = guarded(info.Env(), [&] { return std::make_unique<precopy::Tracker>(pid); });
  }

 private:
  Napi::Value Pid(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), tracker_->pid()); }

  void Register(const Napi::CallbackInfo& info) {
    const uint64_t start = static_cast<uint64_t>(intArg(info, 0, "start")),
                   end = static_cast<uint64_t>(intArg(info, 1, "end"));
    guarded(info.Env(), [&] { tracker_->registerWp(start, end); });
  }

  void Unregister(const Napi::CallbackInfo& info) {
    const uint64_t start = static_cast<uint64_t>(intArg(info, 0, "start")),
                   end = static_cast<uint64_t>(intArg(info, 1, "end"));
    guarded(info.Env(), [&] { tracker_->unregister(start, end); });
  }

  Napi::Value Scan(const Napi::CallbackInfo& info) {
    const precopy::ScanRequest req = scanRequest(info);
    Napi::BigUint64Array vec = bigU64Arg(info, 1, "vec");
    return guarded(info.Env(),
                   [&] { return scanResult(info.Env(), tracker_->scan(req, vec.Data(), vec.ElementLength() / 3)); });
  }

  Napi::Value ScanAsync(const Napi::CallbackInfo& info) {
    const precopy::ScanRequest req = scanRequest(info);
    Napi::BigUint64Array vec = bigU64Arg(info, 1, "vec");
    uint64_t* v = vec.Data();
    const uint64_t len = vec.ElementLength() / 3;
    auto result = std::make_shared<precopy::ScanResult>();
    return onScanThread(
        info.Env(), *tracker_, "precopy.scanAsync", {vec},
        [=](int fd) { *result = precopy::pagemapScan(fd, req, v, len); },
        [result](Napi::Env env) { return scanResult(env, *result); });
  }

  // Returns the regions written to out; the cursor is written back also when the walk throws.
  Napi::Value Walk(const Napi::CallbackInfo& info) {
    WalkArgs a = walkArgs(info);
    try {
      tracker_->walk(a.ranges, a.budget, a.out, a.cursor);
    } catch (const SysError& e) {
      writeCursor(a.cursor, a.cursorData);
      rethrow(info.Env(), e);
    }
    writeCursor(a.cursor, a.cursorData);
    return Napi::Number::New(info.Env(), static_cast<double>(a.cursor.regions));
  }

  Napi::Value WalkAsync(const Napi::CallbackInfo& info) {
    auto a = std::make_shared<WalkArgs>(walkArgs(info));
    return onScanThread(
        info.Env(), *tracker_, "precopy.walkAsync",
        {info[1].As<Napi::Object>(), info[2].As<Napi::Object>(), info[3].As<Napi::Object>()},
        [a](int fd) { precopy::pagemapWalk(fd, a->ranges, a->budget, a->out, a->cursor); },
        [a](Napi::Env env) {
          writeCursor(a->cursor, a->cursorData);
          return Napi::Number::New(env, static_cast<double>(a->cursor.regions));
        });
  }

  void Close(const Napi::CallbackInfo&) { tracker_->close(); }

  std::unique_ptr<precopy::Tracker> tracker_;
};

// ---- register sets ----

Napi::Value bytes(Napi::Env env, const void* p, size_t n) {
  return Napi::Buffer<uint8_t>::Copy(env, static_cast<const uint8_t*>(p), n);
}
Napi::Value u64(Napi::Env env, uint64_t v) {
  return Napi::BigInt::New(env, v);
}

Napi::Array threadRegsArray(Napi::Env env, const std::vector<precopy::ThreadRegs>& threads) {
  Napi::Array out = Napi::Array::New(env, threads.size());
  for (size_t i = 0; i < threads.size(); i++) {
    Napi::Object t = Napi::Object::New(env);
    t.Set("tid", Napi::Number::New(env, threads[i].tid));
    t.Set("regs", bytes(env, &threads[i].regs, sizeof threads[i].regs));
    t.Set("fpregs", bytes(env, &threads[i].fpregs, sizeof threads[i].fpregs));
    if (!threads[i].xstate.empty()) t.Set("xstate", bytes(env, threads[i].xstate.data(), threads[i].xstate.size()));
    out.Set(static_cast<uint32_t>(i), t);
  }
  return out;
}

// ---- Frozen ----

class FrozenWrap : public Napi::ObjectWrap<FrozenWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(
        env, "Frozen",
        {InstanceAccessor<&FrozenWrap::Pid>("pid"), InstanceMethod<&FrozenWrap::Threads>("threads"),
         InstanceMethod<&FrozenWrap::Thaw>("thaw"), InstanceMethod<&FrozenWrap::ThawStopped>("thawStopped")});
  }

  explicit FrozenWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FrozenWrap>(info) {
    const pid_t pid = static_cast<pid_t>(intArg(info, 0, "pid"));
    const bool capture = info[1].ToBoolean();
    frozen_ = guarded(info.Env(), [&] { return std::make_unique<precopy::FrozenProcess>(pid, capture); });
  }

 private:
  Napi::Value Pid(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), frozen_->pid()); }

  Napi::Value Threads(const Napi::CallbackInfo& info) { return threadRegsArray(info.Env(), frozen_->threads()); }

  void Thaw(const Napi::CallbackInfo&) { frozen_->thaw(); }
  void ThawStopped(const Napi::CallbackInfo& info) {
    guarded(info.Env(), [&] { frozen_->thawStopped(); });
  }

  std::unique_ptr<precopy::FrozenProcess> frozen_;
};

// ---- restorable freeze (capture_helper.h) ----

Napi::Object captureObject(Napi::Env env, const precopy::ProcessCapture& pc) {
  Napi::Object o = Napi::Object::New(env);
  Napi::Array threads = Napi::Array::New(env, pc.threads.size());
  for (size_t i = 0; i < pc.threads.size(); i++) {
    const precopy::ThreadCapture& c = pc.threads[i];
    Napi::Object t = Napi::Object::New(env);
    t.Set("tid", Napi::Number::New(env, c.tid));
    t.Set("regs", bytes(env, &c.regs, sizeof c.regs));
    t.Set("restoreRegs", bytes(env, &c.restoreRegs, sizeof c.restoreRegs));
    t.Set("fpregs", bytes(env, &c.fpregs, sizeof c.fpregs));
    t.Set("restart", Napi::Number::New(env, static_cast<int>(c.restart)));
    t.Set("xstate", bytes(env, c.xstate.data(), c.xstate.size()));
    t.Set("sigmask", u64(env, c.sigmask));
    t.Set("rseqAddr", u64(env, c.rseqAddr));
    t.Set("rseqLen", Napi::Number::New(env, c.rseqLen));
    t.Set("rseqSig", Napi::Number::New(env, c.rseqSig));
    t.Set("rseqFlags", Napi::Number::New(env, c.rseqFlags));
    t.Set("robustHead", u64(env, c.robustHead));
    t.Set("robustLen", u64(env, c.robustLen));
    t.Set("clearChildTid", u64(env, c.clearChildTid));
    t.Set("altSp", u64(env, c.altSp));
    t.Set("altFlags", Napi::Number::New(env, c.altFlags));
    t.Set("altSize", u64(env, c.altSize));
    threads.Set(static_cast<uint32_t>(i), t);
  }
  o.Set("threads", threads);
  Napi::Array actions = Napi::Array::New(env, 64);
  for (uint32_t i = 0; i < 64; i++) {
    Napi::Object a = Napi::Object::New(env);
    a.Set("handler", u64(env, pc.actions[i].handler));
    a.Set("flags", u64(env, pc.actions[i].flags));
    a.Set("restorer", u64(env, pc.actions[i].restorer));
    a.Set("mask", u64(env, pc.actions[i].mask));
    actions.Set(i, a);
  }
  o.Set("sigactions", actions);
  o.Set("brk", u64(env, pc.brk));
  o.Set("dumpable", Napi::Number::New(env, pc.dumpable));
  o.Set("securebits", Napi::Number::New(env, pc.securebits));
  return o;
}

class CaptureFrozenWrap : public Napi::ObjectWrap<CaptureFrozenWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(
        env, "CaptureFrozen",
        {InstanceAccessor<&CaptureFrozenWrap::Pid>("pid"), InstanceMethod<&CaptureFrozenWrap::Threads>("threads"),
         InstanceMethod<&CaptureFrozenWrap::Capture>("capture"), InstanceMethod<&CaptureFrozenWrap::Thaw>("thaw"),
         InstanceMethod<&CaptureFrozenWrap::ThawStopped>("thawStopped"),
         InstanceMethod<&CaptureFrozenWrap::Kill>("kill"),
         InstanceMethod<&CaptureFrozenWrap::RequestSnapshot>("requestSnapshot"),
         InstanceMethod<&CaptureFrozenWrap::AwaitSnapshot>("awaitSnapshot"),
         InstanceMethod<&CaptureFrozenWrap::DropSnapshot>("dropSnapshot"),
         InstanceMethod<&CaptureFrozenWrap::FreezeNow>("freeze")});
  }

  explicit CaptureFrozenWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<CaptureFrozenWrap>(info) {
    const pid_t pid = static_cast<pid_t>(intArg(info, 0, "pid"));
    // (pid[, gadgetHint, prepareOnly]): prepareOnly starts the helper; freeze() freezes.
    const uint64_t hint =
        info.Length() > 1 && info[1].IsNumber() ? static_cast<uint64_t>(info[1].As<Napi::Number>().Int64Value()) : 0;
    const bool prepareOnly = info.Length() > 2 && info[2].ToBoolean();
    frozen_ =
        guarded(info.Env(), [&] { return std::make_unique<precopy::HelperFrozenProcess>(pid, hint, !prepareOnly); });
  }

 private:
  Napi::Value Pid(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), frozen_->pid()); }
  Napi::Value Threads(const Napi::CallbackInfo& info) { return threadRegsArray(info.Env(), frozen_->threads()); }
  Napi::Value Capture(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&] { return captureObject(info.Env(), frozen_->capture()); });
  }
  void Thaw(const Napi::CallbackInfo& info) {
    guarded(info.Env(), [&] { frozen_->thaw(); });
  }
  void ThawStopped(const Napi::CallbackInfo& info) {
    guarded(info.Env(), [&] { frozen_->thawStopped(); });
  }
  void Kill(const Napi::CallbackInfo& info) {
    guarded(info.Env(), [&] { frozen_->kill(); });
  }
  void RequestSnapshot(const Napi::CallbackInfo& info) {
    guarded(info.Env(), [&] { frozen_->requestSnapshot(); });
  }
  // { pid, notHeld: Float64Array of [start, end) pairs }
  Napi::Value AwaitSnapshot(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&] {
      const precopy::SnapshotInfo s = frozen_->awaitSnapshot();
      Napi::Env env = info.Env();
      Napi::Object o = Napi::Object::New(env);
      o.Set("pid", Napi::Number::New(env, s.pid));
      Napi::Float64Array ranges = Napi::Float64Array::New(env, s.notHeld.size());
      for (size_t i = 0; i < s.notHeld.size(); i++) ranges[i] = static_cast<double>(s.notHeld[i]);
      o.Set("notHeld", ranges);
      return o;
    });
  }
  void DropSnapshot(const Napi::CallbackInfo&) { frozen_->dropSnapshot(); }
  void FreezeNow(const Napi::CallbackInfo& info) {
    guarded(info.Env(), [&] { frozen_->freeze(); });
  }

  std::unique_ptr<precopy::HelperFrozenProcess> frozen_;
};

// ---- restore stub (restore_stub.h) ----

uint64_t bigArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info[i].IsNumber()) return static_cast<uint64_t>(info[i].As<Napi::Number>().Int64Value());
  if (!info[i].IsBigInt()) typeError(info.Env(), std::string(name) + " must be a bigint");
  bool lossless = true;
  return info[i].As<Napi::BigInt>().Uint64Value(&lossless);
}

class RestoreStubWrap : public Napi::ObjectWrap<RestoreStubWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(
        env, "RestoreStub",
        {InstanceAccessor<&RestoreStubWrap::Pid>("pid"), InstanceMethod<&RestoreStubWrap::Tids>("tids"),
         InstanceMethod<&RestoreStubWrap::Gadget>("gadget"), InstanceMethod<&RestoreStubWrap::SetGadget>("setGadget"),
         InstanceMethod<&RestoreStubWrap::Syscall>("syscall"),
         InstanceMethod<&RestoreStubWrap::WriteMemory>("writeMemory"),
         InstanceMethod<&RestoreStubWrap::WritePages>("writePages"),
         InstanceMethod<&RestoreStubWrap::ReadMemory>("readMemory"),
         InstanceMethod<&RestoreStubWrap::CreateThread>("createThread"),
         InstanceMethod<&RestoreStubWrap::SetThreadState>("setThreadState"),
         InstanceMethod<&RestoreStubWrap::DetachAll>("detachAll"), InstanceMethod<&RestoreStubWrap::Kill>("kill")});
  }

  explicit RestoreStubWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<RestoreStubWrap>(info) {
    const pid_t pid = static_cast<pid_t>(intArg(info, 0, "pid"));
    stub_ = guarded(info.Env(), [&] {
      return std::make_unique<precopy::RestoreStub>(precopy::siblingExecutable(precopy::kRestoreStubName), pid);
    });
  }

 private:
  Napi::Value Pid(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), stub_->pid()); }
  Napi::Value Tids(const Napi::CallbackInfo& info) {
    const auto& t = stub_->tids();
    Napi::Array a = Napi::Array::New(info.Env(), t.size());
    for (size_t i = 0; i < t.size(); i++) a.Set(static_cast<uint32_t>(i), Napi::Number::New(info.Env(), t[i]));
    return a;
  }
  Napi::Value Gadget(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(stub_->gadget()));
  }
  void SetGadget(const Napi::CallbackInfo& info) { stub_->setGadget(static_cast<uint64_t>(intArg(info, 0, "gadget"))); }

  // syscall(tid, nr, args: BigUint64Array) -> bigint (negative errno on failure)
  Napi::Value Syscall(const Napi::CallbackInfo& info) {
    const pid_t tid = static_cast<pid_t>(intArg(info, 0, "tid"));
    const long nr = static_cast<long>(intArg(info, 1, "nr"));
    Napi::BigUint64Array args = bigU64Arg(info, 2, "args");
    if (args.ElementLength() > 6) typeError(info.Env(), "a syscall takes at most six arguments");
    return guarded(info.Env(), [&] {
      return Napi::BigInt::New(info.Env(),
                               static_cast<int64_t>(stub_->syscall(tid, nr, args.Data(), args.ElementLength())));
    });
  }
  void WriteMemory(const Napi::CallbackInfo& info) {
    const uint64_t addr = static_cast<uint64_t>(intArg(info, 0, "addr"));
    Napi::Buffer<uint8_t> b = bufferArg(info, 1, "data");
    guarded(info.Env(), [&] { stub_->writeMemory(addr, b.Data(), b.Length()); });
  }
  // writePages(runs: Float64Array, zeroMap: Buffer | null, data: Buffer, pageSize)
  void WritePages(const Napi::CallbackInfo& info) {
    Napi::Float64Array runs = f64Arg(info, 0, "runs");
    const bool zeros = !info[1].IsNull();
    Napi::Buffer<uint8_t> zeroMap = zeros ? bufferArg(info, 1, "zeroMap") : Napi::Buffer<uint8_t>();
    Napi::Buffer<uint8_t> data = bufferArg(info, 2, "data");
    const size_t pageSize = static_cast<size_t>(intArg(info, 3, "pageSize"));
    guarded(info.Env(), [&] {
      stub_->writePages(runs.Data(), runs.ElementLength(), zeros ? zeroMap.Data() : nullptr,
                        zeros ? zeroMap.Length() : 0, data.Data(), data.Length(), pageSize);
    });
  }
  void ReadMemory(const Napi::CallbackInfo& info) {
    const uint64_t addr = static_cast<uint64_t>(intArg(info, 0, "addr"));
    Napi::Buffer<uint8_t> b = bufferArg(info, 1, "into");
    guarded(info.Env(), [&] { stub_->readMemory(addr, b.Data(), b.Length()); });
  }
  Napi::Value CreateThread(const Napi::CallbackInfo& info) {
    const pid_t tid = static_cast<pid_t>(intArg(info, 0, "tid"));
    const uint64_t scratch = static_cast<uint64_t>(intArg(info, 1, "scratch"));
    return guarded(info.Env(), [&] { return Napi::Number::New(info.Env(), stub_->createThread(tid, scratch)); });
  }
  void SetThreadState(const Napi::CallbackInfo& info) {
    const pid_t tid = static_cast<pid_t>(intArg(info, 0, "tid"));
    Napi::Buffer<uint8_t> regs = bufferArg(info, 1, "regs");
    Napi::Buffer<uint8_t> xstate = bufferArg(info, 2, "xstate");
    const uint64_t sigmask = bigArg(info, 3, "sigmask");
    if (regs.Length() != sizeof(user_regs_struct)) typeError(info.Env(), "regs must be a user_regs_struct (216 bytes)");
    user_regs_struct r;
    memcpy(&r, regs.Data(), sizeof r);
    guarded(info.Env(), [&] { stub_->setThreadState(tid, r, xstate.Data(), xstate.Length(), sigmask); });
  }
  void DetachAll(const Napi::CallbackInfo& info) {
    guarded(info.Env(), [&] { stub_->detachAll(); });
  }
  void Kill(const Napi::CallbackInfo&) { stub_->kill(); }

  std::unique_ptr<precopy::RestoreStub> stub_;
};

// ---- work on the libuv pool ----

// Bounded byte work (one batch of pages) run on a libuv pool thread, settling a promise. `run`
// must only touch memory the kept values own (their Data() pointers, taken before queueing);
// `result` converts its outcome on the JS thread. A SysError rejects with a NativeError.
template <typename R>
class PoolJob : public Napi::AsyncWorker {
 public:
  PoolJob(Napi::Env env, const char* name, std::vector<Napi::Value> keep, std::function<R()> run,
          std::function<Napi::Value(Napi::Env, const R&)> result)
      : Napi::AsyncWorker(env, name),
        deferred_(Napi::Promise::Deferred::New(env)),
        run_(std::move(run)),
        result_(std::move(result)) {
    for (Napi::Value& v : keep)
      if (v.IsObject()) keep_.push_back(Napi::Persistent(v));  // (null: nothing to keep alive)
  }

  // Queue the job; the worker deletes itself once settled.
  static Napi::Promise start(Napi::Env env, const char* name, std::vector<Napi::Value> keep, std::function<R()> run,
                             std::function<Napi::Value(Napi::Env, const R&)> result) {
    auto* job = new PoolJob(env, name, std::move(keep), std::move(run), std::move(result));
    Napi::Promise p = job->deferred_.Promise();
    job->Queue();
    return p;
  }

 protected:
  void Execute() override {
    try {
      out_ = run_();
    } catch (const SysError& e) {
      error_ = std::make_unique<SysError>(e);
    } catch (const std::exception& e) {
      error_ = std::make_unique<SysError>(SysError{EIO, Name(), e.what()});
    }
  }
  void OnOK() override {
    if (error_)
      deferred_.Reject(nativeError(Env(), *error_));
    else
      deferred_.Resolve(result_(Env(), out_));
  }

 private:
  const char* Name() const { return "pool job"; }
  Napi::Promise::Deferred deferred_;
  std::function<R()> run_;
  std::function<Napi::Value(Napi::Env, const R&)> result_;
  std::vector<Napi::Reference<Napi::Value>> keep_;
  R out_{};
  std::unique_ptr<SysError> error_;
};

Napi::Object stageResult(Napi::Env env, const precopy::StageOutcome& r) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("pages", Napi::Number::New(env, static_cast<double>(r.pages)));
  o.Set("dataBytes", Napi::Number::New(env, static_cast<double>(r.dataBytes)));
  o.Set("lz4Bytes", Napi::Number::New(env, static_cast<double>(r.lz4Bytes)));
  o.Set("zeroPages", Napi::Number::New(env, r.zeroPages));
  o.Set("unreadablePages", Napi::Number::New(env, r.unreadablePages));
  o.Set("procMemPages", Napi::Number::New(env, r.procMemPages));
  o.Set("lz4Skipped", Napi::Boolean::New(env, r.lz4Skipped));
  return o;
}

// ---- module functions ----

void SetErrorClass(const Napi::CallbackInfo& info) {
  if (!info[0].IsFunction()) typeError(info.Env(), "setErrorClass needs a class");
  data(info.Env()).errorClass = Napi::Persistent(info[0].As<Napi::Function>());
}

Napi::Value ProbeKernel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const precopy::KernelProbe p = precopy::probeKernel();
  Napi::Object o = Napi::Object::New(env);
  o.Set("kernelRelease", Napi::String::New(env, p.kernelRelease));
  o.Set("pageSize", Napi::Number::New(env, static_cast<double>(p.pageSize)));
  o.Set("pagemapScan", p.pagemapScan);
  o.Set("userfaultfd", p.userfaultfd);
  o.Set("uffdWpAsync", p.uffdWpAsync);
  o.Set("uffdWpUnpopulated", p.uffdWpUnpopulated);
  o.Set("acceptedCategories", Napi::Number::New(env, static_cast<double>(p.acceptedCategories)));
  Napi::Array missing = Napi::Array::New(env, p.missing.size());
  for (size_t i = 0; i < p.missing.size(); i++)
    missing.Set(static_cast<uint32_t>(i), Napi::String::New(env, p.missing[i]));
  o.Set("missing", missing);
  return o;
}

Napi::Value Arm(const Napi::CallbackInfo& info) {
  return data(info.Env()).trackerClass.New({info[0]});
}

Napi::Value Freeze(const Napi::CallbackInfo& info) {
  return data(info.Env()).frozenClass.New({info[0], info[1]});
}

Napi::Value FreezeForRestore(const Napi::CallbackInfo& info) {
  return data(info.Env()).captureFrozenClass.New({info[0]});
}

// prepareFreezeForRestore(pid, gadgetHint): the helper started, the target not frozen yet.
Napi::Value PrepareFreezeForRestore(const Napi::CallbackInfo& info) {
  return data(info.Env()).captureFrozenClass.New({info[0], info[1], Napi::Boolean::New(info.Env(), true)});
}

// findSyscallGadget(pid) -> address of a `syscall` instruction in its executable memory.
Napi::Value FindSyscallGadget(const Napi::CallbackInfo& info) {
  const pid_t pid = static_cast<pid_t>(intArg(info, 0, "pid"));
  return guarded(info.Env(),
                 [&] { return Napi::Number::New(info.Env(), static_cast<double>(precopy::findSyscallGadget(pid))); });
}

Napi::Value StartRestoreStub(const Napi::CallbackInfo& info) {
  return data(info.Env()).restoreStubClass.New({info[0]});
}

// reapChild(pid, block) -> null while it runs, else { exitCode, signal } (one of them null).
Napi::Value ReapChild(const Napi::CallbackInfo& info) {
  const pid_t pid = static_cast<pid_t>(intArg(info, 0, "pid"));
  const bool block = info[1].ToBoolean();
  return guarded(info.Env(), [&]() -> Napi::Value {
    int st = 0;
    if (!precopy::reapChild(pid, block, &st)) return info.Env().Null();
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("exitCode", WIFEXITED(st) ? Napi::Number::New(info.Env(), WEXITSTATUS(st)) : info.Env().Null());
    o.Set("signal", WIFSIGNALED(st) ? Napi::Number::New(info.Env(), WTERMSIG(st)) : info.Env().Null());
    return o;
  });
}

Napi::Value ReadPages(const Napi::CallbackInfo& info) {
  const pid_t pid = static_cast<pid_t>(intArg(info, 0, "pid"));
  Napi::Float64Array ranges = f64Arg(info, 1, "ranges");
  Napi::Buffer<uint8_t> into = bufferArg(info, 2, "into");
  return guarded(info.Env(), [&] {
    return readResult(info.Env(),
                      precopy::readPages(pid, ranges.Data(), ranges.ElementLength() / 2, into.Data(), into.Length()));
  });
}

Napi::Value ReadPagesAsync(const Napi::CallbackInfo& info) {
  const pid_t pid = static_cast<pid_t>(intArg(info, 0, "pid"));
  Napi::Float64Array ranges = f64Arg(info, 1, "ranges");
  Napi::Buffer<uint8_t> into = bufferArg(info, 2, "into");
  const double* r = ranges.Data();
  const size_t count = ranges.ElementLength() / 2;
  uint8_t* to = into.Data();
  const size_t len = into.Length();
  return PoolJob<precopy::ReadOutcome>::start(
      info.Env(), "precopy.readPagesAsync", {ranges, into}, [=] { return precopy::readPages(pid, r, count, to, len); },
      readResult);
}

// stagePages(pid, memFd, ranges, buf, lz4Out | null, pageSize, hashes, flags, lz4SampleRatio) -> Promise<outcome>
Napi::Value StagePages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  precopy::StageJob job{};
  job.pid = static_cast<pid_t>(intArg(info, 0, "pid"));
  job.memFd = static_cast<int>(intArg(info, 1, "memFd"));
  Napi::Float64Array ranges = f64Arg(info, 2, "ranges");
  Napi::Buffer<uint8_t> buf = bufferArg(info, 3, "buf");
  Napi::Value lz4 = info[4];
  if (!lz4.IsNull() && !lz4.IsBuffer()) typeError(env, "lz4Out must be a Buffer or null");
  const int64_t pageSize = intArg(info, 5, "pageSize");
  Napi::BigUint64Array hashes = bigU64Arg(info, 6, "hashes");
  if (!info[7].IsTypedArray() || info[7].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    typeError(env, "flags must be a Uint8Array");
  Napi::Uint8Array flags = info[7].As<Napi::Uint8Array>();
  if (pageSize <= 0 || pageSize % 32 != 0) typeError(env, "pageSize must be a positive multiple of 32");
  job.pageSize = static_cast<size_t>(pageSize);
  if (!info[8].IsNumber()) typeError(env, "lz4SampleRatio must be a number");
  job.lz4SampleRatio = info[8].As<Napi::Number>().DoubleValue();
  const size_t maxPages = buf.Length() / job.pageSize;
  if (hashes.ElementLength() < maxPages || flags.ElementLength() < maxPages)
    typeError(env, "hashes and flags must hold one entry per page of buf");
  job.ranges = ranges.Data();
  job.rangeCount = ranges.ElementLength() / 2;
  job.buf = buf.Data();
  job.bufLen = buf.Length();
  if (lz4.IsBuffer()) {
    job.lz4Out = lz4.As<Napi::Buffer<uint8_t>>().Data();
    job.lz4Cap = lz4.As<Napi::Buffer<uint8_t>>().Length();
  }
  job.hashes = hashes.Data();
  job.flags = flags.Data();
  return PoolJob<precopy::StageOutcome>::start(
      env, "precopy.stagePages", {ranges, buf, lz4, hashes, flags}, [job] { return precopy::stagePages(job); },
      stageResult);
}

// writeStaged(fd, src, srcOffset, length, position, staging) -> Promise<bytes written>
Napi::Value WriteStaged(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int fd = static_cast<int>(intArg(info, 0, "fd"));
  Napi::Buffer<uint8_t> src = bufferArg(info, 1, "src");
  const int64_t off = intArg(info, 2, "srcOffset"), len = intArg(info, 3, "length"), pos = intArg(info, 4, "position");
  Napi::Buffer<uint8_t> staging = bufferArg(info, 5, "staging");
  if (off < 0 || len < 0 || pos < 0 || static_cast<uint64_t>(off + len) > src.Length())
    typeError(env, "srcOffset and length must lie inside src, position must not be negative");
  const uint8_t* from = src.Data() + off;
  uint8_t* stage = staging.Data();
  const size_t stageLen = staging.Length();
  return PoolJob<size_t>::start(
      env, "precopy.writeStaged", {src, staging},
      [=] {
        return precopy::writeStaged(fd, from, static_cast<size_t>(len), static_cast<uint64_t>(pos), stage, stageLen);
      },
      [](Napi::Env e, const size_t& n) { return Napi::Number::New(e, static_cast<double>(n)); });
}

// writeRuns(fd, src, runs: Float64Array of (srcOffset, length, position) triples) -> Promise<bytes>
Napi::Value WriteRuns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int fd = static_cast<int>(intArg(info, 0, "fd"));
  Napi::Buffer<uint8_t> src = bufferArg(info, 1, "src");
  Napi::Float64Array runs = f64Arg(info, 2, "runs");
  const size_t count = runs.ElementLength() / 3;
  if (runs.ElementLength() % 3 != 0) typeError(env, "runs must hold (srcOffset, length, position) triples");
  for (size_t i = 0; i < count; i++) {
    const double off = runs[3 * i], len = runs[3 * i + 1], pos = runs[3 * i + 2];
    if (!(off >= 0 && len >= 0 && pos >= 0 && off + len <= static_cast<double>(src.Length())) ||
        off != static_cast<double>(static_cast<uint64_t>(off)) ||
        len != static_cast<double>(static_cast<uint64_t>(len)) ||
        pos != static_cast<double>(static_cast<uint64_t>(pos)))
      typeError(env, "each run must be whole numbers lying inside src");
  }
  const uint8_t* from = src.Data();
  const double* table = runs.Data();
  return PoolJob<size_t>::start(
      env, "precopy.writeRuns", {src, runs}, [=] { return precopy::writeRuns(fd, from, table, count); },
      [](Napi::Env e, const size_t& n) { return Napi::Number::New(e, static_cast<double>(n)); });
}

Napi::Value KeepFreedMemory(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), precopy::keepFreedMemory());
}

void HashPages(const Napi::CallbackInfo& info) {
  Napi::Buffer<uint8_t> buf = bufferArg(info, 0, "buf");
  const int64_t pageSize = intArg(info, 1, "pageSize");
  Napi::BigUint64Array out = bigU64Arg(info, 2, "out");
  if (pageSize <= 0 || pageSize % 32 != 0) typeError(info.Env(), "pageSize must be a positive multiple of 32");
  const size_t ps = static_cast<size_t>(pageSize), pages = buf.Length() / ps;
  if (out.ElementLength() < pages) typeError(info.Env(), "out is shorter than the number of pages");
  const uint8_t* p = buf.Data();
  uint64_t* o = out.Data();
  for (size_t i = 0; i < pages; i++) o[i] = precopy::hashPage(p + i * ps, ps);
}

Napi::Value DigestPages(const Napi::CallbackInfo& info) {
  Napi::Float64Array addrs = f64Arg(info, 0, "addrs");
  Napi::BigUint64Array hashes = bigU64Arg(info, 1, "hashes");
  const int64_t count = intArg(info, 2, "count");
  if (count < 0 || static_cast<size_t>(count) > addrs.ElementLength() ||
      static_cast<size_t>(count) > hashes.ElementLength())
    typeError(info.Env(), "count exceeds the arrays");
  const double* a = addrs.Data();
  const uint64_t* h = hashes.Data();
  uint64_t sum = 0;  // wraps mod 2^64 by design
  for (int64_t i = 0; i < count; i++) sum += precopy::digestTerm(static_cast<uint64_t>(a[i]), h[i]);
  return Napi::BigInt::New(info.Env(), sum);
}

// ---- CPU (xsave_layout.h) ----

// xsaveLayout() -> [{ index, offset, size }]
Napi::Value XsaveLayout(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const auto layout = precopy::xsaveLayout();
  Napi::Array out = Napi::Array::New(env, layout.size());
  for (size_t i = 0; i < layout.size(); i++) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("index", layout[i].index);
    o.Set("offset", layout[i].offset);
    o.Set("size", layout[i].size);
    out.Set(static_cast<uint32_t>(i), o);
  }
  return out;
}

// ---- fd inspection (fd_inspect.h) ----

// peekPipe(pid, fd, into: Buffer) -> bytes waiting (only min(waiting, into.length) copied)
Napi::Value PeekPipe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const pid_t pid = static_cast<pid_t>(intArg(info, 0, "pid"));
  const int fd = static_cast<int>(intArg(info, 1, "fd"));
  if (!info[2].IsBuffer()) typeError(env, "into must be a Buffer");
  auto into = info[2].As<Napi::Buffer<uint8_t>>();
  return guarded(env, [&] {
    return Napi::Number::New(env, static_cast<double>(precopy::peekPipe(pid, fd, into.Data(), into.Length())));
  });
}

// socketFacts(pid, fd) -> { family, type, protocol, listening, connected, reuseAddr, reusePort, backlog, localAddress:
// Buffer }
Napi::Value SocketFacts(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const pid_t pid = static_cast<pid_t>(intArg(info, 0, "pid"));
  const int fd = static_cast<int>(intArg(info, 1, "fd"));
  return guarded(env, [&] {
    const precopy::SocketFacts f = precopy::socketFacts(pid, fd);
    Napi::Object o = Napi::Object::New(env);
    o.Set("family", f.family);
    o.Set("type", f.type);
    o.Set("protocol", f.protocol);
    o.Set("listening", f.listening);
    o.Set("connected", f.connected);
    o.Set("reuseAddr", f.reuseAddr);
    o.Set("reusePort", f.reusePort);
    o.Set("backlog", f.backlog);
    o.Set("localAddress", Napi::Buffer<char>::Copy(env, f.localAddress.data(), f.localAddress.size()));
    return o;
  });
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* d = new AddonData();
  env.SetInstanceData(d);
  d->trackerClass = Napi::Persistent(TrackerWrap::Define(env));
  d->frozenClass = Napi::Persistent(FrozenWrap::Define(env));
  d->captureFrozenClass = Napi::Persistent(CaptureFrozenWrap::Define(env));
  d->restoreStubClass = Napi::Persistent(RestoreStubWrap::Define(env));
  exports.Set("xsaveLayout", Napi::Function::New<XsaveLayout>(env));
  exports.Set("peekPipe", Napi::Function::New<PeekPipe>(env));
  exports.Set("socketFacts", Napi::Function::New<SocketFacts>(env));
  exports.Set("setErrorClass", Napi::Function::New<SetErrorClass>(env));
  exports.Set("probeKernel", Napi::Function::New<ProbeKernel>(env));
  exports.Set("arm", Napi::Function::New<Arm>(env));
  exports.Set("freeze", Napi::Function::New<Freeze>(env));
  exports.Set("freezeForRestore", Napi::Function::New<FreezeForRestore>(env));
  exports.Set("prepareFreezeForRestore", Napi::Function::New<PrepareFreezeForRestore>(env));
  exports.Set("findSyscallGadget", Napi::Function::New<FindSyscallGadget>(env));
  exports.Set("startRestoreStub", Napi::Function::New<StartRestoreStub>(env));
  exports.Set("reapChild", Napi::Function::New<ReapChild>(env));
  exports.Set("readPages", Napi::Function::New<ReadPages>(env));
  exports.Set("readPagesAsync", Napi::Function::New<ReadPagesAsync>(env));
  exports.Set("stagePages", Napi::Function::New<StagePages>(env));
  exports.Set("writeStaged", Napi::Function::New<WriteStaged>(env));
  exports.Set("writeRuns", Napi::Function::New<WriteRuns>(env));
  exports.Set("keepFreedMemory", Napi::Function::New<KeepFreedMemory>(env));
  exports.Set("hashPages", Napi::Function::New<HashPages>(env));
  exports.Set("digestPages", Napi::Function::New<DigestPages>(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(precopy, Init)
