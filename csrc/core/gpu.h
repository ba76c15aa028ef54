// The CUDA runtime as the rest of the core sees it. Implemented by cuda/runtime.cu (real CUDA
// through cudart_static, or the SIMT emulation when that file is compiled with g++) and by
// csrc/core/gpu_none.cpp in builds without CUDA. Every failure throws lk::Error; nothing aborts.
//
// Stream-ordered: each device has one stream, and everything below that touches device memory is
// enqueued on it. Only copy_to_host, synchronize, event_elapsed_ms and an async op's completion
// wait for the device; a kernel fault surfaces there as ERR_CUDA naming the ops it may have been
// in (cuda/runtime.cu explains the details).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace lk::gpu {

struct DeviceInfo {
  std::string name;
  int major = 0;
  int minor = 0;
  size_t memory_bytes = 0;
  std::string gemm_mainloop;  // what the GEMM engine runs on it: "wgmma", "mma.sync" or "fma" (cuda/gemm.cu)
};

struct Status {
  bool compiled = false;   // CUDA kernels are part of this binary
  bool emulated = false;   // kernels run on the CPU through the SIMT emulation layer
  bool available = false;  // at least one device answered
  std::string reason;      // why not available (not compiled, no driver, driver too old, no device)
  std::vector<DeviceInfo> devices;
};

// Probed once, on first use; never throws.
const Status& status();

// Makes CUDA unavailable with `reason` before anything touches the driver: the host probed the
// driver in a child process and that probe crashed, hung or found no usable device, so this
// process must never load it. No effect once status() has run.
void disable(const std::string& reason);

// Device memory from the device's caching allocator: release() returns the block to the cache at
// once, without waiting (its next owner enqueues on the same stream, after the last user).
// A cudaMalloc that fails empties the cache and retries once, then throws ERR_OUT_OF_MEMORY.
void* alloc(int device, size_t bytes);
void release(int device, void* ptr) noexcept;

// Enqueued on the device's stream; `src` may be reused as soon as copy_to_device returns.
void copy_to_device(int device, void* dst, const void* src, size_t bytes);
void copy_on_device(int device, void* dst, const void* src, size_t bytes);
void fill_bytes(int device, void* dst, int value, size_t bytes);
// The host reads: enqueues the copy and waits for the stream.
void copy_to_host(int device, void* dst, const void* src, size_t bytes);
// Waits for everything enqueued on the device so far.
void synchronize(int device);

struct MemoryStats {
  size_t allocated_bytes = 0;       // blocks held by tensors and running ops (rounded block sizes)
  size_t cached_bytes = 0;          // free blocks kept for reuse
  size_t peak_allocated_bytes = 0;  // the most allocated_bytes has been
  uint64_t device_allocations = 0;  // cudaMalloc calls (cache misses)
  uint64_t cache_hits = 0;          // allocations served from the cache
};
// Host-side bookkeeping only: answers even after the device failed.
MemoryStats memory_stats(int device);
// Returns every cached block to the driver (waits for the stream first).
void empty_cache(int device);

// Timing events on a device's stream (benchmarks). event_elapsed_ms waits for `stop`.
struct Event;
Event* event_record(int device);
double event_elapsed_ms(const Event* start, const Event* stop);
void event_destroy(Event* event) noexcept;

// Completion of the work enqueued on a device so far, for the …Async ops. `ready(user)` is called
// once when it has finished or failed — on a CUDA driver thread, so `ready` must not call CUDA
// or wait for anything that waits for the GPU: it hands `completion` over to the thread that then
// calls finish(), which throws like a failed wait. `completion` must stay alive until then.
struct Completion {
  int device = -1;
  uint64_t through = 0;  // the last op it covers (see the op log in cuda/runtime.cu)
  int status = 0;        // the stream's cudaError_t, written before ready() is called
};
void notify_when_done(Completion& completion, int device, void (*ready)(void* user), void* user);
void finish(const Completion& completion);

// The CUDA ops this host thread enqueued since the last call (at most the last 8) and the kernels
// each chose, e.g. "lora.dora: mma.sync bfloat16 128x128 KN row-norm | lora.doraForward: mma.sync
// bfloat16 128x32 KK; mma.sync bfloat16 128x256 KK"; empty when none. Ops enqueue on the calling
// thread, so taking it before and after a call names what that call ran: benchmark rows and tests
// report it. Never touches the driver.
std::string take_op_plans();

// Test hook (the native export testKernelFault, not public API): enqueues a kernel that traps,
// which kills the device's CUDA context for the rest of the process.
void test_kernel_fault(int device);

}  // namespace lk::gpu
