// csrc/core/gpu.h on the CUDA runtime: the driver probe, one stream per device, the caching
// allocator, the op log that names ops in errors, timing events and async completion. Real builds
// link cudart_static, so this binary loads on machines without a driver: the first status() call
// probes, and a missing or old driver is a reason string, never a load failure or abort. In the
// LK_CUDA_EMULATED build the same file is compiled with g++ against csrc/simt (the runtime calls
// below are the emulator's shims, where every stream is synchronous) and the one device is
// "SIMT emulator (CPU)".
//
// Stream order is what keeps this simple. Each device has one stream (non-blocking, so nothing
// else in the process, e.g. another library on the legacy stream, serializes with it), and every
// use of the device's memory by this addon — kernels, copies, memsets — is enqueued on it. Hence:
//   * ops enqueue and return; the host waits only where it reads device data (copy_to_host),
//     in synchronize(), on an event, and in an async op's completion callback;
//   * a freed block goes back to the cache at once, without a sync: whoever gets it next enqueues
//     on the same stream, after every kernel and copy its previous owner enqueued;
//   * a fault inside a kernel surfaces at the next wait, which can only say which ops it covered:
//     the op log keeps their names.
#include <algorithm>
#include <cstdio>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "common.cuh"
#include "core/gpu.h"
#include "core/status.h"
#include "gemm.cuh"
#if defined(SIMT_EMU) && defined(__SANITIZE_ADDRESS__)  // GCC; clang below
#define LK_EMU_ASAN 1
#elif defined(SIMT_EMU) && defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LK_EMU_ASAN 1
#endif
#endif
#if defined(LK_EMU_ASAN)
#include <sanitizer/asan_interface.h>
#endif

namespace lk::gpu {
namespace {

std::string cuda_error_text(cudaError_t e) {
  return std::string(cudaGetErrorString(e)) + " (" + cudaGetErrorName(e) + ")";
}

std::string version_text(int v) { return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10); }

// "1.5 MiB": byte counts in error messages.
std::string bytes_text(size_t n) {
  static const char* const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 6) {
    v /= 1024;
    ++u;
  }
  char text[32];
  std::snprintf(text, sizeof text, u ? "%.1f %s" : "%.0f %s", v, units[u]);
  return text;
}

Status compiled_status() {
  Status st;
  st.compiled = true;
#if defined(SIMT_EMU)
  st.emulated = true;
#endif
  return st;
}

Status probe() {
  Status st = compiled_status();
  // A CUDA 13 runtime needs a driver that speaks CUDA 13 (minor version compatibility within 13.x).
  constexpr int kNeeded = (CUDART_VERSION / 1000) * 1000;
  int driver = 0;
  cudaError_t e = cudaDriverGetVersion(&driver);
  if (e != cudaSuccess) {
    st.reason = "cudaDriverGetVersion failed: " + cuda_error_text(e);
    return st;
  }
  if (driver == 0) {
    st.reason = "no CUDA driver found (libcuda.so.1 could not be loaded)";
    return st;
  }
  const std::string too_old = "driver too old for CUDA " + version_text(CUDART_VERSION) + " (needs a driver for CUDA ≥ " +
                              version_text(kNeeded) + ", found one for CUDA " + version_text(driver) + ")";
  if (driver < kNeeded) {
    st.reason = too_old;
    return st;
  }
  int count = 0;
  e = cudaGetDeviceCount(&count);
  if (e == cudaErrorNoDevice || (e == cudaSuccess && count == 0)) {
    st.reason = "no CUDA device (the driver reports none; check CUDA_VISIBLE_DEVICES)";
    return st;
  }
  if (e == cudaErrorInsufficientDriver) {
    st.reason = too_old;
    return st;
  }
  if (e != cudaSuccess) {
    st.reason = "CUDA initialisation failed: " + cuda_error_text(e);
    return st;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    e = cudaGetDeviceProperties(&prop, i);
    if (e != cudaSuccess) {
      st.devices.clear();
      st.reason = "cudaGetDeviceProperties(" + std::to_string(i) + ") failed: " + cuda_error_text(e);
      return st;
    }
    DeviceInfo d;
    d.name = prop.name;
    d.major = prop.major;
    d.minor = prop.minor;
    d.memory_bytes = prop.totalGlobalMem;
    d.gemm_mainloop = lk::cuda_ops::gemm::preferred_mainloop(prop.major * 10 + prop.minor);
    st.devices.push_back(d);
  }
  (void)cudaGetLastError();  // probing must not leave a sticky error for the first op
  st.available = true;
  return st;
}

std::mutex gate_mutex;
std::string disabled_reason;  // set by disable() before the first status(), under gate_mutex

// Errors after which the context is dead: NVIDIA documents each as leaving "the process in an
// inconsistent state": every later CUDA call returns the same error until the process restarts.
bool is_sticky(cudaError_t e) {
  switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchTimeout:
    case cudaErrorAssert:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorLaunchFailure:
    case cudaErrorTensorMemoryLeak:
    case cudaErrorECCUncorrectable:
      return true;
    default:
      return false;
  }
}

// ---- the op log ------------------------------------------------------------------------------
// The ops enqueued on a device since its last successful wait. A kernel fault is only seen at a
// later wait (or by a later CUDA call, once the context is dead), and all that wait knows is which
// ops it covered: their names go into the ERR_CUDA message. Every op gets a sequence number; a
// wait covers the ops up to the last number taken before it started (an op another thread
// enqueues meanwhile is not covered). Bounded: the last kKeep names and a count.
class OpLog {
 public:
  uint64_t record(const char* op) {
    std::lock_guard<std::mutex> lock(mutex_);
    recent_.emplace_back(++last_, op);
    if (recent_.size() > kKeep) recent_.pop_front();
    return last_;
  }

  uint64_t last() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return last_;
  }

  // A wait that covered the ops up to `through` succeeded (or its failure was reported).
  void done_through(uint64_t through) {
    std::lock_guard<std::mutex> lock(mutex_);
    done_ = std::max(done_, through);
    while (!recent_.empty() && recent_.front().first <= done_) recent_.pop_front();
  }

  // "lora.backward (or one of: lora.forward, lora.backward since the last wait)": the last op the
  // wait covered, then every distinct name among them (oldest first) and how many are not listed.
  std::string describe(uint64_t through, int device) const {
    std::lock_guard<std::mutex> lock(mutex_);
    const uint64_t count = through > done_ ? through - done_ : 0;
    std::vector<const char*> names;
    const char* latest = nullptr;
    uint64_t listed = 0;
    for (const auto& entry : recent_) {
      if (entry.first <= done_ || entry.first > through) continue;
      const std::string name = entry.second;
      ++listed;
      latest = entry.second;
      if (std::none_of(names.begin(), names.end(), [&](const char* n) { return name == n; })) names.push_back(entry.second);
    }
    if (!latest) return "the work on CUDA device " + std::to_string(device) + " (no op was enqueued since the last wait)";
    if (names.size() == 1 && count == listed) return latest;
    std::string text = std::string(latest) + " (or one of: ";
    for (size_t i = 0; i < names.size(); ++i) text += (i ? ", " : "") + std::string(names[i]);
    if (count > listed) text += " and " + std::to_string(count - listed) + " earlier ops";
    return text + " since the last wait)";
  }

 private:
  static constexpr size_t kKeep = 8;
  mutable std::mutex mutex_;
  std::deque<std::pair<uint64_t, const char*>> recent_;
  uint64_t last_ = 0;  // the last sequence number taken
  uint64_t done_ = 0;  // every op up to this one is known to have finished (or was blamed)
};

// ---- per-device state ------------------------------------------------------------------------
// The caching allocator. cudaMalloc takes tens of µs or more and cudaFree waits for the whole
// device, so neither may sit on an op's path: a decode step is a few ops of ~20 µs, each with an
// output and often a scratch buffer. Freed blocks stay cached per device and are handed out again.
//
// Sizes are rounded so that a repeated request finds its block again and nearly equal ones share:
//   * up to 1 MiB, to 512 bytes (cudaMalloc aligns to 256): < 512 B wasted per block, under 3%
//     above 16 KiB; a [1, 4096] float32 activation (16 KiB) fits exactly;
//   * above 1 MiB, to 2 MiB, the granularity the driver maps device memory in
//     (cuMemGetAllocationGranularity), so the driver would take it anyway: < 3% of a 64 MiB
//     [4096, 4096] float32 weight; the worst case, 1 MiB + 1 byte → 2 MiB, only at the edge.
// Reuse is best fit among cached blocks at most 1/4 larger than the rounded request; a block is
// never split, so a cached 64 MiB block does not serve a 512-byte request (and leave the next
// 64 MiB request to cudaMalloc). Blocks no request fits stay cached until the cache is emptied:
// by emptyCache(), or when cudaMalloc fails — then every cached block is freed and the allocation
// retried once before it is ERR_OUT_OF_MEMORY.
constexpr size_t kSmallLimit = size_t{1} << 20;
constexpr size_t kSmallStep = 512;
constexpr size_t kLargeStep = size_t{2} << 20;

// The emulated build under ASan (device memory is host memory there) must keep catching a kernel
// that reads or writes past the end of a tensor byte-exactly, as when every tensor was its own
// exact-size cudaMalloc: the slack of a block beyond the request is poisoned, and so is a cached
// block (a kernel touching a disposed tensor is a use-after-poison report).
void poison(void* ptr, size_t bytes) {
#if defined(LK_EMU_ASAN)
  ASAN_POISON_MEMORY_REGION(ptr, bytes);
#else
  (void)ptr, (void)bytes;
#endif
}

void unpoison(void* ptr, size_t bytes) {
#if defined(LK_EMU_ASAN)
  ASAN_UNPOISON_MEMORY_REGION(ptr, bytes);
#else
  (void)ptr, (void)bytes;
#endif
}

struct DeviceState {
  std::mutex mutex;                // the stream's creation and `failure`
  cudaStream_t stream = nullptr;   // created on first use, never destroyed
  std::string failure;             // set by the first sticky error: the device refuses all work
  OpLog log;
  std::mutex alloc_mutex;          // the JS thread, workers and finalizers all allocate and free
  std::multimap<size_t, void*> cached;       // free blocks by size
  std::unordered_map<void*, size_t> in_use;  // blocks handed out, with their size
  MemoryStats stats;
};

// One state per device, made on first use and never destroyed: a finalizer or a CUDA callback may
// still reach it while the process exits, after static destructors ran.
DeviceState* device_states() {
  static DeviceState* states = new DeviceState[std::max<size_t>(1, status().devices.size())];
  return states;
}

// The device's state after checking that CUDA is available and the index exists (ERR_DEVICE).
DeviceState& known(int device, const char* what) {
  const Status& st = status();
  if (!st.available) throw Error(ErrorCode::Device, std::string(what) + ": CUDA is not available: " + st.reason);
  if (device < 0 || static_cast<size_t>(device) >= st.devices.size())
    throw Error(ErrorCode::Device, std::string(what) + ": CUDA device " + std::to_string(device) + " does not exist (" +
                                       std::to_string(st.devices.size()) + " device(s))");
  return device_states()[device];
}

[[noreturn]] void fail(cudaError_t e, const std::string& what) {
  (void)cudaGetLastError();  // clear a non-sticky error so that later calls start clean
  throw Error(e == cudaErrorMemoryAllocation ? ErrorCode::OutOfMemory : ErrorCode::Cuda, what + " failed: " + cuda_error_text(e));
}

std::string unusable(int device, const std::string& failure) {
  return "CUDA device " + std::to_string(device) + " is unusable after an earlier error (the process must restart to use it again): " + failure;
}

// A failed wait, or a sticky error seen by any call: the fault happened in one of the ops enqueued
// since the last successful wait, up to `through`. Throws ERR_CUDA naming them. A sticky error
// also marks the device failed: from then on every call refuses with this first message (a
// completion that arrives later still names the op that faulted, not "no op since the last wait").
[[noreturn]] void fault(int device, DeviceState& d, cudaError_t e, uint64_t through) {
  {
    std::lock_guard<std::mutex> lock(d.mutex);
    if (!d.failure.empty()) throw Error(ErrorCode::Cuda, unusable(device, d.failure));
  }
  const std::string message = "CUDA error in " + d.log.describe(through, device) + ": " + cuda_error_text(e);
  d.log.done_through(through);  // reported once; a later wait does not blame these ops again
  (void)cudaGetLastError();
  if (is_sticky(e)) {
    std::lock_guard<std::mutex> lock(d.mutex);
    if (d.failure.empty()) d.failure = message;
  }
  throw Error(ErrorCode::Cuda, message);
}

// A call that enqueues work or touches the device failed: a sticky error means some earlier
// kernel faulted (blamed on the ops since the last wait); anything else is this call's own failure.
[[noreturn]] void failed(int device, DeviceState& d, cudaError_t e, const std::string& what) {
  if (is_sticky(e)) fault(device, d, e, d.log.last());
  fail(e, what);
}

// Checks the device, makes it current for this host thread and creates its stream on first use.
// A device that saw a sticky error refuses everything. `what` names the call in errors.
DeviceState& enter(int device, const char* what) {
  DeviceState& d = known(device, what);
  cudaError_t e;
  {
    std::lock_guard<std::mutex> lock(d.mutex);
    if (!d.failure.empty()) throw Error(ErrorCode::Cuda, std::string(what) + ": " + unusable(device, d.failure));
    e = cudaSetDevice(device);
    if (e == cudaSuccess && !d.stream) e = cudaStreamCreateWithFlags(&d.stream, cudaStreamNonBlocking);
  }
  if (e != cudaSuccess) failed(device, d, e, std::string(what) + ": selecting CUDA device " + std::to_string(device) + " and its stream");
  return d;
}

// Waits for everything enqueued on the device's stream so far.
void wait(int device, DeviceState& d) {
  const uint64_t through = d.log.last();
  const cudaError_t e = cudaStreamSynchronize(d.stream);
  if (e != cudaSuccess) fault(device, d, e, through);
  d.log.done_through(through);
}

size_t rounded_size(size_t bytes) {
  if (bytes <= kSmallLimit) return std::max(kSmallStep, (bytes + kSmallStep - 1) / kSmallStep * kSmallStep);
  if (bytes > SIZE_MAX - kLargeStep) return 0;
  return (bytes + kLargeStep - 1) / kLargeStep * kLargeStep;
}

// Returns every cached block to the driver; the caller holds d.alloc_mutex. The stream is drained
// first: a cached block may still be in use by the last kernels of its previous owner (cudaFree
// would wait for the device too, but that is an implementation detail to not lean on).
void free_cached(int device, DeviceState& d) {
  if (d.cached.empty()) return;
  wait(device, d);
  while (!d.cached.empty()) {
    const auto block = d.cached.begin();
    void* ptr = block->second;
    unpoison(ptr, block->first);
    d.stats.cached_bytes -= block->first;
    d.cached.erase(block);
    const cudaError_t e = cudaFree(ptr);
    if (e != cudaSuccess) failed(device, d, e, "cudaFree");
  }
}

// A kernel launched by test_kernel_fault: traps (a GPU kills the context; the emulator records a
// sticky error), as a faulting kernel of any op would.
__global__ void trap_kernel() {
#if defined(SIMT_DEVICE_PATH)
  simt_trap();
#endif
}

// An async op's callback, on a CUDA driver thread once everything before it on the stream has
// finished or failed (`status` is the stream's error then). It must not call CUDA, nor take a lock
// that a thread waiting for the GPU may hold: the stream stalls until it returns.
struct Pending {
  Completion* completion;
  void (*ready)(void*);
  void* user;
};

void CUDART_CB stream_done(cudaStream_t, cudaError_t status, void* data) {
  const std::unique_ptr<Pending> pending(static_cast<Pending*>(data));
  pending->completion->status = status;
  pending->ready(pending->user);
}

}  // namespace

void disable(const std::string& reason) {
  std::lock_guard<std::mutex> lock(gate_mutex);
  disabled_reason = reason;
}

const Status& status() {
  static const Status s = [] {
    {
      std::lock_guard<std::mutex> lock(gate_mutex);
      if (!disabled_reason.empty()) {
        Status st = compiled_status();
        st.reason = disabled_reason;
        return st;
      }
    }
    try {
      return probe();
    } catch (...) {  // status() never throws
      Status st = compiled_status();
      st.reason = "CUDA probe failed unexpectedly";
      return st;
    }
  }();
  return s;
}

// ---- memory ------------------------------------------------------------------------------------
void* alloc(int device, size_t bytes) {
  DeviceState& d = enter(device, "deviceAlloc");
  const size_t size = rounded_size(bytes);
  std::lock_guard<std::mutex> lock(d.alloc_mutex);
  auto oom = [&](size_t freed) {
    return Error(ErrorCode::OutOfMemory, "deviceAlloc: out of memory on CUDA device " + std::to_string(device) + " allocating " +
                                             bytes_text(bytes) + " (" + std::to_string(bytes) + " bytes): " +
                                             bytes_text(d.stats.allocated_bytes) + " in use by tensors and ops, " +
                                             bytes_text(d.stats.cached_bytes) + " cached (" + bytes_text(freed) +
                                             " of cached blocks were freed and the allocation retried)");
  };
  if (size == 0) throw oom(0);
  size_t block = size;
  void* ptr = nullptr;
  const auto fit = d.cached.lower_bound(size);
  if (fit != d.cached.end() && fit->first - size <= size / 4) {
    block = fit->first;
    ptr = fit->second;
    d.cached.erase(fit);
    d.stats.cached_bytes -= block;
    ++d.stats.cache_hits;
  } else {
    cudaError_t e = cudaMalloc(&ptr, size);
    if (e == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      const size_t freed = d.stats.cached_bytes;
      free_cached(device, d);
      e = cudaMalloc(&ptr, size);
      if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        throw oom(freed);
      }
    }
    if (e != cudaSuccess) failed(device, d, e, "cudaMalloc(" + std::to_string(size) + " bytes) on CUDA device " + std::to_string(device));
    ++d.stats.device_allocations;
  }
  unpoison(ptr, bytes);
  poison(static_cast<char*>(ptr) + bytes, block - bytes);
  d.in_use.emplace(ptr, block);
  d.stats.allocated_bytes += block;
  d.stats.peak_allocated_bytes = std::max(d.stats.peak_allocated_bytes, d.stats.allocated_bytes);
  return ptr;
}

// Back to the cache, without a sync (see the top of this file): any thread, even a finalizer.
void release(int device, void* ptr) noexcept {
  if (!ptr || device < 0 || static_cast<size_t>(device) >= status().devices.size()) return;
  DeviceState& d = device_states()[device];
  std::lock_guard<std::mutex> lock(d.alloc_mutex);
  const auto used = d.in_use.find(ptr);
  if (used == d.in_use.end()) return;
  poison(ptr, used->second);
  d.cached.emplace(used->second, ptr);
  d.stats.allocated_bytes -= used->second;
  d.stats.cached_bytes += used->second;
  d.in_use.erase(used);
}

MemoryStats memory_stats(int device) {
  DeviceState& d = known(device, "memoryStats");
  std::lock_guard<std::mutex> lock(d.alloc_mutex);
  return d.stats;
}

void empty_cache(int device) {
  DeviceState& d = enter(device, "emptyCache");
  std::lock_guard<std::mutex> lock(d.alloc_mutex);
  free_cached(device, d);
}

// ---- copies and waits --------------------------------------------------------------------------
// From pageable memory, cudaMemcpyAsync returns once the driver has staged the source (CUDA's
// "API synchronization behavior"; PyTorch's non-pinned copies rely on the same), so the caller may
// reuse it at once while the copy itself runs in stream order.
void copy_to_device(int device, void* dst, const void* src, size_t bytes) {
  DeviceState& d = enter(device, "copyToDevice");
  const cudaError_t e = bytes ? cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, d.stream) : cudaSuccess;
  if (e != cudaSuccess) failed(device, d, e, "cudaMemcpyAsync host→device (" + std::to_string(bytes) + " bytes)");
}

void copy_on_device(int device, void* dst, const void* src, size_t bytes) {
  DeviceState& d = enter(device, "copyOnDevice");
  const cudaError_t e = bytes ? cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, d.stream) : cudaSuccess;
  if (e != cudaSuccess) failed(device, d, e, "cudaMemcpyAsync device→device (" + std::to_string(bytes) + " bytes)");
}

void fill_bytes(int device, void* dst, int value, size_t bytes) {
  DeviceState& d = enter(device, "fillBytes");
  const cudaError_t e = bytes ? cudaMemsetAsync(dst, value, bytes, d.stream) : cudaSuccess;
  if (e != cudaSuccess) failed(device, d, e, "cudaMemsetAsync(" + std::to_string(bytes) + " bytes)");
}

// The host reads: the copy waits for the work that wrote the source, then for itself.
void copy_to_host(int device, void* dst, const void* src, size_t bytes) {
  DeviceState& d = enter(device, "copyToHost");
  const cudaError_t e = bytes ? cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, d.stream) : cudaSuccess;
  if (e != cudaSuccess) failed(device, d, e, "cudaMemcpyAsync device→host (" + std::to_string(bytes) + " bytes)");
  wait(device, d);
}

void synchronize(int device) {
  DeviceState& d = enter(device, "synchronize");
  wait(device, d);
}

// ---- events ------------------------------------------------------------------------------------
struct Event {
  int device;
  cudaEvent_t event;
  uint64_t through;  // the op log's last op when recorded: waiting on the event covers those
};

Event* event_record(int device) {
  DeviceState& d = enter(device, "eventRecord");
  cudaEvent_t event = nullptr;
  cudaError_t e = cudaEventCreate(&event);
  if (e != cudaSuccess) failed(device, d, e, "cudaEventCreate");
  const uint64_t through = d.log.last();
  e = cudaEventRecord(event, d.stream);
  if (e != cudaSuccess) {
    (void)cudaEventDestroy(event);
    failed(device, d, e, "cudaEventRecord");
  }
  return new Event{device, event, through};
}

double event_elapsed_ms(const Event* start, const Event* stop) {
  if (start->device != stop->device)
    throw Error(ErrorCode::Argument, "eventElapsedMs: the events were recorded on different devices (" + std::to_string(start->device) +
                                         " and " + std::to_string(stop->device) + ")");
  DeviceState& d = enter(stop->device, "eventElapsedMs");
  const cudaError_t e = cudaEventSynchronize(stop->event);
  if (e != cudaSuccess) fault(stop->device, d, e, stop->through);
  d.log.done_through(stop->through);
  float ms = 0;
  const cudaError_t elapsed = cudaEventElapsedTime(&ms, start->event, stop->event);
  if (elapsed != cudaSuccess) failed(stop->device, d, elapsed, "cudaEventElapsedTime");
  return ms;
}

void event_destroy(Event* event) noexcept {
  if (!event) return;
  (void)cudaEventDestroy(event->event);  // fails only on a dead context, where nothing is left to free
  (void)cudaGetLastError();
  delete event;
}

// ---- async completion --------------------------------------------------------------------------
// cudaStreamAddCallback, not cudaLaunchHostFunc: after a fault a host function is never called,
// and the promise would never settle; a stream callback always runs, with the error as `status`.
void notify_when_done(Completion& completion, int device, void (*ready)(void*), void* user) {
  DeviceState& d = enter(device, "completion");
  completion.device = device;
  completion.through = d.log.last();
  completion.status = cudaSuccess;
  auto pending = std::make_unique<Pending>(Pending{&completion, ready, user});
  const cudaError_t e = cudaStreamAddCallback(d.stream, stream_done, pending.get(), 0);
  if (e != cudaSuccess) failed(device, d, e, "cudaStreamAddCallback");
  (void)pending.release();  // stream_done owns it now (the emulator has already run it)
}

void finish(const Completion& completion) {
  DeviceState& d = device_states()[completion.device];
  if (completion.status == cudaSuccess) return d.log.done_through(completion.through);
  fault(completion.device, d, static_cast<cudaError_t>(completion.status), completion.through);
}

void test_kernel_fault(int device) {
  const cudaStream_t stream = cuda_ops::begin_op(device, "test.kernelFault");
  simt_launch(trap_kernel, dim3(1), dim3(1), 0, stream);
  // A launch error is reported now; the trap itself (sticky, whether the emulator already ran the
  // kernel or a GPU runs it later) at the next wait, like a fault in any op's kernel.
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess && !is_sticky(e)) fail(e, "trap_kernel launch");
}

}  // namespace lk::gpu

namespace lk::cuda_ops {
namespace {
thread_local int op_device = -1;  // the device of this thread's last begin_op: throw_cuda blames its ops
thread_local std::deque<std::string> op_plans;  // "op: kernels; kernels" of this thread's recent ops
}  // namespace

cudaStream_t begin_op(int device, const char* op) {
  gpu::DeviceState& d = gpu::enter(device, op);
  d.log.record(op);
  op_device = device;
  if (op_plans.size() == 8) op_plans.pop_front();  // nobody is reading them: keep a few
  op_plans.push_back(std::string(op) + ":");
  return d.stream;
}

void note_plan(const std::string& kernels) {
  if (op_plans.empty()) op_plans.emplace_back("(no op):");
  op_plans.back() += (op_plans.back().back() == ':' ? " " : "; ") + kernels;
}

void throw_cuda(cudaError_t e, const char* what, const char* file, int line) {
  if (gpu::is_sticky(e) && op_device >= 0) {
    gpu::DeviceState& d = gpu::device_states()[op_device];
    gpu::fault(op_device, d, e, d.log.last());
  }
  (void)cudaGetLastError();  // a non-sticky error must not fail the next launch check
  const ErrorCode code = e == cudaErrorMemoryAllocation ? ErrorCode::OutOfMemory
                         : e == cudaErrorInvalidDevice  ? ErrorCode::Device
                                                        : ErrorCode::Cuda;
  throw Error(code, std::string(what) + " failed: " + gpu::cuda_error_text(e) + " at " + file + ":" + std::to_string(line));
}

DeviceScratch::DeviceScratch(int device, size_t bytes) : device_(device), ptr_(gpu::alloc(device, bytes)) {}
DeviceScratch::~DeviceScratch() { gpu::release(device_, ptr_); }

ptx::TensorMap tma_map_16bit(const char* what, const void* base, std::initializer_list<long long> dims,
                             std::initializer_list<long long> strides, std::initializer_list<uint32_t> box) {
  uint64_t d[5] = {}, st[4] = {};
  uint32_t b[5] = {};
  std::copy(dims.begin(), dims.end(), d);
  std::transform(strides.begin(), strides.end(), st, [](long long v) { return static_cast<uint64_t>(v) * 2; });
  std::copy(box.begin(), box.end(), b);
  ptx::TensorMap map;
  const char* why = "";
  if (ptx::tensor_map_encode_tiled(&map, 2, static_cast<uint32_t>(dims.size()), base, d, st, b, ptx::kTmaSwizzle128B,
                                   ptx::kTmaOobFillZero, &why) != 0)
    throw Error(ErrorCode::Cuda, std::string(what) + " (cuda): a TMA tensor map was refused: " + why);
  return map;
}

}  // namespace lk::cuda_ops

namespace lk::gpu {

std::string take_op_plans() {
  std::string text;
  for (const std::string& op : cuda_ops::op_plans) text += (text.empty() ? "" : " | ") + op;
  cuda_ops::op_plans.clear();
  return text;
}

}  // namespace lk::gpu
