// simt_emu.h — runs the documented CUDA kernel subset (see simt.h) on the CPU.
//
// Included by simt.h when the compiler is not nvcc (the LK_CUDA_EMULATED build compiles cuda/*.cu
// as C++ with g++ against this header). It is a correctness oracle for kernels, not a simulator
// of GPU timing: the same kernel source runs here and on the GPU, and bugs that depend on the
// execution model show up on a CPU with an exact source line:
//   * data races between barriers — rerun with SIMT_EMU_SCHED=reverse|shuffle (the order in which
//     threads run between two barriers changes), or build the threads backend under TSan;
//   * divergent __syncthreads() (threads of a block waiting at different barriers) → abort with
//     file:line; a barrier some threads never reach → DEADLOCK report;
//   * divergent warp collectives, wrong WMMA pointer alignment / ldm, out-of-bounds accesses
//     (ASan: device memory is exact-size host memory), fragment-layout assumptions (our WMMA
//     layout is deliberately not the hardware one);
//   * cp.async data read before its cp.async.wait_group (simt_ptx.h: a copy lands in shared memory
//     only at the wait that covers its commit group, or when its thread exits), misaligned
//     cp.async / ldmatrix addresses. ldmatrix and mma.sync (simt_ptx.h) use the hardware's
//     register layouts, checked bit for bit against recordings from an H200.
//
// simt_trap() (__trap()) inside a kernel ends that CUDA thread only (the others still complete
// their barriers and warp collectives) and leaves simt::sticky_error = cudaErrorLaunchFailure, the
// error a GPU context reports after a fault; the runtime shims return it from then on.
//
// Execution model. A launch hands its blocks to a pool of OS workers (SIMT_EMU_WORKERS, default
// = number of cores; the launching thread is one of them). A worker runs one block at a time.
//   fibers backend (default; boost.context fcontext): each CUDA thread of the block is a fiber with
//     its own guard-paged stack (SIMT_EMU_STACK_KB, default 64). Fibers switch only at
//     __syncthreads(), warp collectives (shuffles, ballots, WMMA ops, ldmatrix, mma.sync) and thread exit; the
//     scheduler resumes runnable fibers in SIMT_EMU_SCHED order: forward (default), reverse or
//     shuffle (seeded by blockIdx, reproducible).
//   threads backend (-DSIMT_EMU_BACKEND_THREADS, CMake LK_SIMT_BACKEND=threads): each CUDA thread
//     is an OS thread, barriers are mutex + condition variable, blocks run one after another. ~100× slower, but
//     ThreadSanitizer understands it, so shared-memory races are reported with both stacks.
//   __shared__ variables are `static thread_local` (fibers: one copy per worker = per resident
//   block) or `static` (threads backend: one block at a time).
//
// Device memory is host memory (cudaMalloc → 256-byte aligned malloc of the exact size), streams
// are synchronous, one device "SIMT emulator (CPU)" with compute capability SIMT_EMU_CC (default
// 8.0; e.g. SIMT_EMU_CC=7.5 exercises the paths a Turing GPU takes). Launches are serialized.
//
// Cannot be emulated: timing, occupancy, register/shared-memory limits, memory-model subtleties
// beyond "barriers order everything" (a warp is not lock-step here — code relying on implicit warp
// synchrony is a bug anyway), inter-block communication (spin waits deadlock), grid sync, dynamic
// parallelism, clusters, exact floating-point rounding of GPU intrinsics (FMA
// contraction, fast-math functions, tensor-core accumulation order), the timing of cp.async (here a
// copy lands exactly at its wait, the latest moment a GPU may make it visible).
// (mbarrier / TMA / wgmma: simt_hopper.h, emulator only: a TMA tile lands at the mbarrier wait, a
// wgmma's accumulators at its wgmma.wait_group; threads blocked on an mbarrier are state kAtMbarrier.)
#pragma once
#if defined(__CUDACC__)
#error "simt_emu.h is for host compilers; nvcc uses the real CUDA headers (include simt.h)"
#endif

#define SIMT_EMU 1
#if !defined(SIMT_EMU_BACKEND_THREADS)
#define SIMT_EMU_BACKEND_FIBERS 1
#endif
// Device features the emulated kernels may use (WMMA fp16/bf16/tf32 → sm_80 level).
#define SIMT_CUDA_ARCH 800

// NVIDIA's headers give the host-side types: __half / __nv_bfloat16 with host conversions,
// dim3 / uint3 / float4 …, cudaError_t, cudaDeviceProp and the runtime API declarations that the
// shims below define.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>
#include <sys/mman.h>
#include <unistd.h>
#if defined(SIMT_EMU_BACKEND_FIBERS)
#include <boost/context/detail/fcontext.hpp>
#endif
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

// ------------------------------------------------------------------------------ qualifiers
#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __constant__
#undef __forceinline__
#undef __noinline__
#undef __launch_bounds__
#undef __grid_constant__
#define __global__
#define __device__
#define __host__
#define __constant__
#define __grid_constant__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#if defined(SIMT_EMU_BACKEND_FIBERS)
#define __shared__ static thread_local
#else
#define __shared__ static
#endif
#define SIMT_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(::simt::dynamic_smem())
#define simt_trap() ::simt::trap(__FILE__, __LINE__)

// ------------------------------------------------------------------------------ built-ins
inline thread_local uint3 threadIdx, blockIdx;
inline thread_local dim3 blockDim, gridDim;
constexpr int warpSize = 32;

namespace simt {

// ---- knobs (read once)
inline int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}
enum Sched { kForward, kReverse, kShuffle };
inline Sched sched_order() {
  static const Sched s = [] {
    const char* v = std::getenv("SIMT_EMU_SCHED");
    if (!v || !*v || !std::strcmp(v, "forward")) return kForward;
    if (!std::strcmp(v, "reverse")) return kReverse;
    if (!std::strcmp(v, "shuffle")) return kShuffle;
    std::fprintf(stderr, "simt_emu: unknown SIMT_EMU_SCHED=%s (forward|reverse|shuffle); using forward\n", v);
    return kForward;
  }();
  return s;
}
inline unsigned worker_count() {
  static const unsigned n = [] {
    int w = env_int("SIMT_EMU_WORKERS", static_cast<int>(std::thread::hardware_concurrency()));
    return static_cast<unsigned>(std::max(1, w));
  }();
  return n;
}
inline size_t stack_bytes() {
  static const size_t s = static_cast<size_t>(std::max(16, env_int("SIMT_EMU_STACK_KB", 64))) * 1024;
  return s;
}
// Compute capability reported for the emulated device, e.g. SIMT_EMU_CC=7.5 or 75.
inline void emulated_cc(int& major, int& minor) {
  static const int cc = [] {
    const char* v = std::getenv("SIMT_EMU_CC");
    if (!v || !*v) return 80;
    double d = std::atof(v);
    int c = d < 20 ? static_cast<int>(d * 10 + 0.5) : static_cast<int>(d);
    return c >= 50 && c < 200 ? c : 80;
  }();
  major = cc / 10;
  minor = cc % 10;
}

[[noreturn]] inline void die(const char* what, const char* detail = "", long value = -1) {
  std::fprintf(stderr, "simt_emu: %s %s %ld (block %u,%u,%u thread %u,%u,%u)\n", what, detail, value, blockIdx.x,
               blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z);
  std::fflush(stderr);
  std::abort();
}
// Thrown by simt_trap() inside a kernel; caught where the CUDA thread's kernel body runs (fiber
// entry / backend thread), which then treats the thread as exited. Never seen by kernel code
// unless it catches everything (don't: kernels have no exceptions on a GPU).
struct TrapExit {};

// ---- per-launch / per-block state
struct WarpState;
using WarpOp = void (*)(WarpState&, uint32_t lanes);
enum ThreadState : uint8_t { kRunnable, kAtBarrier, kAtWarpOp, kAtMbarrier, kAtNamedBarrier, kExited };

// One cp.async (simt_ptx.h) issued by a CUDA thread and not yet written to shared memory.
struct AsyncCopy {
  unsigned char* dst;
  uint32_t group;            // its commit group: the number of commit_groups its thread did before it
  unsigned char bytes[16];   // the source as read at issue, zero-filled from src_bytes on
};

// One wgmma.mma_async (simt_hopper.h) issued by a CUDA thread and not yet retired by a
// wgmma.wait_group: its accumulator registers d are NaN-poisoned until then.
struct WgmmaPending {
  uint32_t group;    // its wgmma-group: the number of commit_groups its thread did before it
  float* d;          // the thread's accumulator registers
  int nregs;         // N / 2
  bool chain;        // d was already the accumulator of an older pending op: C = that op's result
  bool scale_d;      // false: D = A·B (C ignored)
  uint8_t kind;      // simt_hopper.h WgKind
  bool trans_a, trans_b;
  int8_t scale_a, scale_b;
  uint64_t desc_a, desc_b;
  float c[128];      // C as it was at issue (when !chain)
};

// One cp.async.bulk[.tensor] (simt_hopper.h) issued by a thread of the block and not yet landed.
struct BulkCopy {
  uint64_t* bar;                     // its mbarrier: complete_tx(bytes.size()) when it lands
  unsigned char* dst;                // shared memory
  std::vector<unsigned char> bytes;  // the destination image, built at issue (swizzle and zero fill applied)
};

// One of a block's 16 hardware barriers used by count (bar.sync / bar.arrive id, n; simt_hopper.h):
// a generation completes when n threads arrived in it.
struct NamedBarrier {
  uint32_t expected = 0, arrived = 0, generation = 0;
};

struct Thread {
  uint3 tid;
  int lane = 0, warp = 0;
  ThreadState state = kRunnable;
  std::vector<AsyncCopy> async_copies;  // pending cp.async copies, in issue (= group) order
  uint32_t async_commits = 0;           // cp.async.commit_group count; copies of group == this are uncommitted
  // sm_90 state (simt_hopper.h)
  const void* mbar_wait = nullptr;      // the mbarrier (state kAtMbarrier) or NamedBarrier (kAtNamedBarrier) it blocks on
  uint32_t mbar_spins = 0;              // consecutive failed mbarrier.test_wait probes
  std::vector<WgmmaPending> wgmma;      // issued, not yet retired by wgmma.wait_group
  uint32_t wgmma_commits = 0;
  bool wgmma_fenced = false;            // a wgmma.fence since the last wgmma.wait_group
  void reset_async() {
    async_copies.clear();
    async_commits = 0;
    mbar_wait = nullptr;
    mbar_spins = 0;
    wgmma.clear();
    wgmma_commits = 0;
    wgmma_fenced = false;
  }
  // A thread must not end with wgmma ops in flight (their accumulators would never be written).
  void check_wgmma_retired() const {
    if (wgmma.empty()) return;
    std::fprintf(stderr,
                 "simt_emu: wgmma: the thread ended with %zu wgmma.mma_async not retired by a wgmma.wait_group "
                 "(missing wgmma.commit_group / wait_group)\n",
                 wgmma.size());
    std::fflush(stderr);
    std::abort();
  }
  // Writes every pending copy of a group < groups to shared memory (in issue order).
  void land_async(uint32_t groups) {
    size_t n = 0;
    while (n < async_copies.size() && async_copies[n].group < groups) {
      std::memcpy(async_copies[n].dst, async_copies[n].bytes, 16);
      ++n;
    }
    async_copies.erase(async_copies.begin(), async_copies.begin() + static_cast<std::ptrdiff_t>(n));
  }
#if defined(SIMT_EMU_BACKEND_FIBERS)
  boost::context::detail::fcontext_t ctx = nullptr;
#endif
};

// Exchange area of one warp. Lane L writes only in_*[L] (or its own WMMA elements); the lane that
// completes a collective runs the op once for all participants, which fills out_*[].
struct WarpState {
  uint64_t in_val[32], out_val[32];
  int32_t in_src[32];
  uint32_t in_reg[32][10], out_reg[32][4];  // per-lane registers of ldmatrix / mma.sync (simt_ptx.h)
  WarpOp lane_op[32];
  float mat[4][512];  // WMMA operands A, B, C and result D in logical row-major order
  uint32_t live = 0, expect = 0, arrived = 0;
  Thread* lanes = nullptr;
#if defined(SIMT_EMU_BACKEND_THREADS)
  std::atomic<uint32_t> arrived_mask{0};
#endif
  void complete(uint32_t participants) {
    WarpOp op = nullptr;
    for (int l = 0; l < 32; ++l) {
      if (!(participants >> l & 1)) continue;
      if (!op) op = lane_op[l];
      else if (lane_op[l] != op) die("lanes of one warp met at DIFFERENT warp collectives (divergent warp code)");
    }
    if (op) op(*this, participants);
  }
};

struct Launch {
  dim3 grid, block;
  size_t smem;
  void (*body)(void*);  // runs the kernel once for the current thread
  void* args;
  unsigned nthreads, nwarps;
};

inline unsigned lanes_of_warp(const Launch& L, unsigned w) { return std::min(32u, L.nthreads - w * 32); }

#if defined(SIMT_EMU_BACKEND_THREADS)
// A reusable barrier (C++17 has no std::barrier); for a warp, the last arriver runs the warp op.
// arrive_and_drop: arrive once more and leave the participant set for good.
class Barrier {
 public:
  Barrier(unsigned n, WarpState* warp = nullptr) : expected_(n), warp_(warp) {}
  void arrive_and_wait() { arrive(false); }
  void arrive_and_drop() { arrive(true); }

 private:
  void arrive(bool drop) {
    std::unique_lock<std::mutex> g(m_);
    const unsigned long gen = generation_;
    if (drop) --expected_;
    else ++arrived_;
    if (arrived_ >= expected_ && (arrived_ > 0 || drop)) {
      if (warp_ && arrived_ > 0) warp_->complete(warp_->arrived_mask.exchange(0));
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    if (drop) return;
    cv_.wait(g, [&] { return generation_ != gen; });
  }
  std::mutex m_;
  std::condition_variable cv_;
  unsigned expected_, arrived_ = 0;
  unsigned long generation_ = 0;
  WarpState* warp_;
};
#endif

// Fiber stacks go back to the OS; under ASan their shadow is cleared first, or the poison of the
// fibers' last frames outlives the mapping and a later user of the addresses (V8) gets a false
// stack-buffer-underflow report.
inline void unmap_stacks(char* stacks, size_t len) {
#if defined(__SANITIZE_ADDRESS__)
  ASAN_UNPOISON_MEMORY_REGION(stacks, len);
#endif
  munmap(stacks, len);
}

struct Block {
  const Launch* L = nullptr;
  std::vector<Thread> threads;
  std::vector<WarpState> warps;
  std::vector<unsigned char> dsmem_storage;
  unsigned char* dsmem = nullptr;
  std::vector<BulkCopy> bulk;  // pending TMA / bulk copies (simt_hopper.h); dropped with the block
  NamedBarrier named[16];      // bar.sync / bar.arrive by id (0 stays __syncthreads()'s)
  std::vector<unsigned> order;
  unsigned live = 0, barrier_arrived = 0;
  const char* barrier_file = nullptr;
  int barrier_line = 0;
#if defined(SIMT_EMU_BACKEND_FIBERS)
  char* stacks = nullptr;
  size_t stacks_len = 0, stack_size = 0;
  boost::context::detail::fcontext_t scheduler = nullptr;
  ~Block() {
    if (stacks) unmap_stacks(stacks, stacks_len);
  }
#else
  std::unique_ptr<Barrier> barrier;
  std::vector<std::unique_ptr<Barrier>> warp_barriers;
#endif
  void size_dynamic_smem(size_t bytes) {
    if (dsmem_storage.size() < bytes + 1024) dsmem_storage.assign(bytes + 1024, 0);
    uintptr_t p = reinterpret_cast<uintptr_t>(dsmem_storage.data());
    // 1024-byte aligned: the start of the emulated shared window (address 0 for wgmma descriptors
    // and the swizzle patterns of simt_hopper.h, whose period is up to 1024 bytes)
    dsmem = dsmem_storage.data() + ((1024 - p % 1024) % 1024);
  }
};

inline thread_local Thread* cur = nullptr;   // CUDA thread running on this OS thread
inline thread_local Block* blk = nullptr;    // its block
inline void* dynamic_smem() { return blk->dsmem; }
inline WarpState& my_warp() { return blk->warps[cur->warp]; }
inline int my_lane() { return cur->lane; }

inline uint3 unflatten(unsigned i, dim3 d) { return make_uint3(i % d.x, (i / d.x) % d.y, i / (d.x * d.y)); }

#if defined(SIMT_EMU_BACKEND_FIBERS)
// ------------------------------------------------------------------------------ fibers backend
namespace ctx = boost::context::detail;

inline void yield_to_scheduler() {
  ctx::transfer_t t = ctx::jump_fcontext(blk->scheduler, nullptr);
  blk->scheduler = t.fctx;
}
inline void resume(Thread& t) {
  cur = &t;
  threadIdx = t.tid;  // built-ins are per OS thread: swap them on every switch
  ctx::transfer_t r = ctx::jump_fcontext(t.ctx, nullptr);
  t.ctx = r.fctx;
}
inline void release_barrier(Block& B) {
  for (auto& t : B.threads)
    if (t.state == kAtBarrier) t.state = kRunnable;
  B.barrier_arrived = 0;
  B.barrier_file = nullptr;
}
inline void finish_warp_op(WarpState& W, uint32_t participants, int skip_lane) {
  W.complete(participants);
  for (int l = 0; l < 32; ++l)
    if ((participants >> l & 1) && l != skip_lane) W.lanes[l].state = kRunnable;
  W.arrived = 0;
}
inline void on_thread_exit() {
  Block& B = *blk;
  Thread& t = *cur;
  WarpState& W = B.warps[t.warp];
  const uint32_t bit = 1u << t.lane;
  t.state = kExited;
  t.land_async(UINT32_MAX);  // cp.async copies still pending land when their thread exits
  t.check_wgmma_retired();
  --B.live;
  W.live &= ~bit;
  W.expect &= ~bit;
  // Exited threads no longer count: a pending warp op / barrier may now be complete.
  if (W.arrived && W.arrived == W.expect) finish_warp_op(W, W.arrived, -1);
  if (B.barrier_arrived && B.barrier_arrived == B.live) release_barrier(B);
}
inline void fiber_entry(ctx::transfer_t t) {
  blk->scheduler = t.fctx;
  try {
    blk->L->body(blk->L->args);
  } catch (const TrapExit&) {
    cur->reset_async();  // a trapped thread's copies never land (the context is dead anyway)
  }
  on_thread_exit();
  yield_to_scheduler();  // never resumed
  die("a finished fiber was resumed");
}

// Set by simt_hopper.h: lands the TMA / bulk copies pending on the mbarriers that blocked threads
// wait on; true if any landed. The scheduler calls it only when no thread can run: a copy issued
// after its waiters blocked lands then, the latest moment a GPU may complete it.
inline bool (*land_for_blocked_waiters)() = nullptr;

inline void run_block(Block& B) {
  const Launch& L = *B.L;
  B.live = L.nthreads;
  B.barrier_arrived = 0;
  B.barrier_file = nullptr;
  B.bulk.clear();
  for (NamedBarrier& nb : B.named) nb = NamedBarrier{};
  if (L.smem) std::memset(B.dsmem, 0xff, L.smem);  // poison: reads before writes give NaN / -1
  for (unsigned w = 0; w < L.nwarps; ++w) {
    WarpState& W = B.warps[w];
    const unsigned n = lanes_of_warp(L, w);
    W.live = n == 32 ? 0xffffffffu : ((1u << n) - 1);
    W.arrived = W.expect = 0;
    W.lanes = &B.threads[w * 32];
  }
  for (unsigned i = 0; i < L.nthreads; ++i) {
    Thread& t = B.threads[i];
    t.state = kRunnable;
    t.reset_async();
    char* lo = B.stacks + i * B.stack_size + 4096;            // lowest page is the guard page
    const size_t size = B.stack_size - 4096 - (i % 64) * 64;   // stagger stack tops (L1 aliasing)
    t.ctx = ctx::make_fcontext(lo + size, size, fiber_entry);
  }
  const Sched sched = sched_order();
  B.order.resize(L.nthreads);
  for (unsigned i = 0; i < L.nthreads; ++i) B.order[i] = sched == kReverse ? L.nthreads - 1 - i : i;
  if (sched == kShuffle) {
    uint64_t x = 0x9E3779B97F4A7C15ull * (1 + blockIdx.x + 7919ull * blockIdx.y + 104729ull * blockIdx.z);
    for (unsigned i = L.nthreads - 1; i > 0; --i) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      std::swap(B.order[i], B.order[x % (i + 1)]);
    }
  }
  while (B.live) {
    bool progressed = false;
    for (unsigned i : B.order)
      if (B.threads[i].state == kRunnable) {
        resume(B.threads[i]);
        progressed = true;
      }
    if (!progressed && land_for_blocked_waiters && land_for_blocked_waiters()) continue;
    if (!progressed) {
      unsigned at_barrier = 0, at_warp = 0, at_mbar = 0, at_named = 0;
      for (auto& t : B.threads) {
        at_barrier += t.state == kAtBarrier;
        at_warp += t.state == kAtWarpOp;
        at_mbar += t.state == kAtMbarrier;
        at_named += t.state == kAtNamedBarrier;
      }
      std::fprintf(stderr,
                   "simt_emu: DEADLOCK in block (%u,%u,%u): %u threads wait in __syncthreads() (%s:%d), %u in warp "
                   "collectives, %u on an mbarrier phase that never completes, %u in a named barrier (bar.sync) "
                   "short of its thread count, %u exited\n",
                   blockIdx.x, blockIdx.y, blockIdx.z, at_barrier, B.barrier_file ? B.barrier_file : "?",
                   B.barrier_line, at_warp, at_mbar, at_named, L.nthreads - B.live);
      std::fflush(stderr);
      std::abort();
    }
  }
  cur = nullptr;
}

// Fibers and their stacks are allocated once per worker and reused across launches.
inline void prepare(Block& B, const Launch& L) {
  B.L = &L;
  if (B.warps.size() < L.nwarps) B.warps = std::vector<WarpState>(L.nwarps);
  B.size_dynamic_smem(L.smem);
  const size_t ss = stack_bytes();
  if (B.threads.size() < L.nthreads || B.stack_size != ss) {
    if (B.stacks) unmap_stacks(B.stacks, B.stacks_len);
    B.threads.resize(L.nthreads);
    B.stack_size = ss;
    B.stacks_len = ss * L.nthreads;
    void* p = mmap(nullptr, B.stacks_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) die("mmap of fiber stacks failed");
    B.stacks = static_cast<char*>(p);
    for (unsigned i = 0; i < L.nthreads; ++i) mprotect(B.stacks + i * ss, 4096, PROT_NONE);  // overflow → SIGSEGV
  }
  for (unsigned i = 0; i < L.nthreads; ++i) {
    B.threads[i].tid = unflatten(i, L.block);
    B.threads[i].lane = static_cast<int>(i % 32);
    B.threads[i].warp = static_cast<int>(i / 32);
  }
  blk = &B;
  blockDim = L.block;
  gridDim = L.grid;
}

// Persistent worker pool; blocks are handed out through an atomic counter.
class Pool {
 public:
  explicit Pool(unsigned extra_workers) {
    for (unsigned i = 0; i < extra_workers; ++i) workers_.emplace_back([this] { loop(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> g(m_);
      quit_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  void run(const Launch& L) {
    {
      std::lock_guard<std::mutex> g(m_);
      job_ = &L;
      nblocks_ = L.grid.x * L.grid.y * L.grid.z;
      next_ = 0;
      busy_ = static_cast<unsigned>(workers_.size());
      ++epoch_;
    }
    cv_.notify_all();
    work(L);
    std::unique_lock<std::mutex> g(m_);
    done_.wait(g, [&] { return busy_ == 0; });
  }

 private:
  void loop() {
    unsigned long seen = 0;
    for (;;) {
      const Launch* L;
      {
        std::unique_lock<std::mutex> g(m_);
        cv_.wait(g, [&] { return quit_ || epoch_ != seen; });
        if (quit_) return;
        seen = epoch_;
        L = job_;
      }
      work(*L);
      std::lock_guard<std::mutex> g(m_);
      if (--busy_ == 0) done_.notify_all();
    }
  }
  void work(const Launch& L) {
    static thread_local Block B;
    prepare(B, L);
    for (unsigned b; (b = next_.fetch_add(1)) < nblocks_;) {
      blockIdx = unflatten(b, L.grid);
      run_block(B);
    }
    blk = nullptr;
    cur = nullptr;
  }
  std::vector<std::thread> workers_;
  std::mutex m_;
  std::condition_variable cv_, done_;
  const Launch* job_ = nullptr;
  unsigned long epoch_ = 0;
  unsigned busy_ = 0, nblocks_ = 0;
  std::atomic<unsigned> next_{0};
  bool quit_ = false;
};

inline void execute(const Launch& L) {
  static Pool pool(worker_count() - 1);  // + the launching thread
  pool.run(L);
}

#else
// ------------------------------------------------------------------------------ threads backend
inline void execute(const Launch& L) {
  const unsigned nblocks = L.grid.x * L.grid.y * L.grid.z;
  Block B;
  B.L = &L;
  B.warps = std::vector<WarpState>(L.nwarps);
  B.size_dynamic_smem(L.smem);
  B.threads.resize(L.nthreads);
  for (unsigned w = 0; w < L.nwarps; ++w) {
    const unsigned n = lanes_of_warp(L, w);
    B.warps[w].live = n == 32 ? 0xffffffffu : ((1u << n) - 1);
    B.warps[w].lanes = &B.threads[w * 32];
  }
  auto fresh_barriers = [&] {
    B.barrier = std::make_unique<Barrier>(L.nthreads);
    B.warp_barriers.clear();
    for (unsigned w = 0; w < L.nwarps; ++w)
      B.warp_barriers.push_back(std::make_unique<Barrier>(lanes_of_warp(L, w), &B.warps[w]));
  };
  fresh_barriers();
  Barrier block_done(L.nthreads);
  std::vector<std::thread> ts;
  for (unsigned i = 0; i < L.nthreads; ++i)
    ts.emplace_back([&, i] {
      Thread& t = B.threads[i];
      t.tid = unflatten(i, L.block);
      t.lane = static_cast<int>(i % 32);
      t.warp = static_cast<int>(i / 32);
      cur = &t;
      blk = &B;
      threadIdx = t.tid;
      blockDim = L.block;
      gridDim = L.grid;
      for (unsigned b = 0; b < nblocks; ++b) {
        blockIdx = unflatten(b, L.grid);
        if (i == 0) {
          if (L.smem) std::memset(B.dsmem, 0xff, L.smem);
          B.bulk.clear();
          for (NamedBarrier& nb : B.named) nb = NamedBarrier{};
        }
        block_done.arrive_and_wait();
        t.reset_async();
        try {
          L.body(L.args);
          t.land_async(UINT32_MAX);  // cp.async copies still pending land when their thread exits
          t.check_wgmma_retired();
        } catch (const TrapExit&) {
          t.reset_async();
        }
        B.barrier->arrive_and_drop();  // exited threads no longer count for __syncthreads()
        B.warp_barriers[t.warp]->arrive_and_drop();
        block_done.arrive_and_wait();
        if (i == 0) fresh_barriers();
      }
    });
  for (auto& t : ts) t.join();
}
#endif

// ------------------------------------------------------------------------------ barriers, collectives
inline void syncthreads(const char* file, int line) {
#if defined(SIMT_EMU_BACKEND_THREADS)
  (void)file;
  (void)line;
  blk->barrier->arrive_and_wait();
#else
  Block& B = *blk;
  if (!B.barrier_file) {
    B.barrier_file = file;
    B.barrier_line = line;
  } else if (B.barrier_line != line || (B.barrier_file != file && std::strcmp(B.barrier_file, file))) {
    die("threads of one block wait at DIFFERENT __syncthreads() (divergent barrier); this one is at", file, line);
  }
  if (++B.barrier_arrived == B.live) {  // the last thread to arrive releases the others and goes on
    release_barrier(B);
    return;
  }
  cur->state = kAtBarrier;
  yield_to_scheduler();
#endif
}

// Every warp collective: deposit inputs in the WarpState, call this; afterwards out_* holds the result.
inline void warp_collective(uint32_t mask, WarpOp op) {
  Thread& t = *cur;
  WarpState& W = blk->warps[t.warp];
  const uint32_t bit = 1u << t.lane;
  if (!(mask & bit)) die("warp collective called by a lane outside its mask; lane", "", t.lane);
  W.lane_op[t.lane] = op;
#if defined(SIMT_EMU_BACKEND_THREADS)
  W.arrived_mask.fetch_or(bit);  // this backend supports only "all live lanes" masks
  blk->warp_barriers[t.warp]->arrive_and_wait();
#else
  const uint32_t need = mask & W.live;
  if (!W.arrived) W.expect = need;
  else if (W.expect != need) die("concurrent warp collectives with different masks are not supported");
  W.arrived |= bit;
  if (W.arrived == W.expect) {
    finish_warp_op(W, W.arrived, t.lane);
    return;
  }
  t.state = kAtWarpOp;
  yield_to_scheduler();
#endif
}

inline void op_nop(WarpState&, uint32_t) {}
inline void op_shfl(WarpState& W, uint32_t p) {
  for (int l = 0; l < 32; ++l)
    if (p >> l & 1) {
      const int j = W.in_src[l];
      W.out_val[l] = (p >> j & 1) ? W.in_val[j] : W.in_val[l];
    }
}
inline void op_ballot(WarpState& W, uint32_t p) {
  uint64_t m = 0;
  for (int l = 0; l < 32; ++l)
    if ((p >> l & 1) && W.in_val[l]) m |= 1ull << l;
  for (int l = 0; l < 32; ++l)
    if (p >> l & 1) W.out_val[l] = m;
}

// PTX shfl.sync semantics; mode 0 = idx, 1 = up, 2 = down, 3 = bfly.
template <class T>
inline T shfl(uint32_t mask, T var, int b, int width, int mode) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shfl: type too large");
  const int lane = cur->lane;
  const int seg = (32 - width) & 31, clamp = mode == 1 ? 0 : 31;
  const int max_lane = (lane & seg) | (clamp & ~seg), min_lane = lane & seg;
  int j;
  bool ok;
  switch (mode) {
    case 0: j = min_lane | (b & ~seg); ok = j <= max_lane; break;
    case 1: j = lane - b; ok = j >= max_lane; break;
    case 2: j = lane + b; ok = j <= max_lane; break;
    default: j = lane ^ b; ok = j <= max_lane; break;
  }
  if (!ok || j < 0 || j > 31) j = lane;
  WarpState& W = my_warp();
  uint64_t u = 0;
  std::memcpy(&u, static_cast<const void*>(&var), sizeof(T));
  W.in_val[lane] = u;
  W.in_src[lane] = j;
  warp_collective(mask, op_shfl);
  T r;
  std::memcpy(static_cast<void*>(&r), &W.out_val[lane], sizeof(T));
  return r;
}

// ------------------------------------------------------------------------------ launch
inline thread_local cudaError_t last_error = cudaSuccess;
// A kernel that traps leaves the emulated device in this error (a GPU's context is dead after a
// fault): the runtime shims (simt_runtime.h) return it from then on.
inline std::atomic<int> sticky_error{cudaSuccess};

// simt_trap() / __trap(): ends the calling CUDA thread (see TrapExit) and makes the device's error
// sticky, like a GPU whose kernel trapped (cudaErrorLaunchFailure, "unspecified launch failure").
// Outside a kernel there is no thread to end: abort.
[[noreturn]] inline void trap(const char* file, int line) {
  if (!cur) die("__trap() called outside a kernel at", file, line);
  int expected = cudaSuccess;
  if (sticky_error.compare_exchange_strong(expected, cudaErrorLaunchFailure))  // report the first trap only
    std::fprintf(stderr,
                 "simt_emu: __trap() at %s:%d (block %u,%u,%u thread %u,%u,%u): the thread exits; the device error is "
                 "now cudaErrorLaunchFailure\n",
                 file, line, blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z);
  throw TrapExit{};
}
inline std::mutex& launch_mutex() {
  static std::mutex m;
  return m;
}
}  // namespace simt

#define __syncthreads() ::simt::syncthreads(__FILE__, __LINE__)
inline void __syncwarp(unsigned mask = 0xffffffffu) { simt::warp_collective(mask, simt::op_nop); }
template <class T> inline T __shfl_sync(unsigned m, T v, int src, int w = 32) { return simt::shfl(m, v, src, w, 0); }
template <class T> inline T __shfl_up_sync(unsigned m, T v, unsigned d, int w = 32) { return simt::shfl(m, v, static_cast<int>(d), w, 1); }
template <class T> inline T __shfl_down_sync(unsigned m, T v, unsigned d, int w = 32) { return simt::shfl(m, v, static_cast<int>(d), w, 2); }
template <class T> inline T __shfl_xor_sync(unsigned m, T v, int x, int w = 32) { return simt::shfl(m, v, x, w, 3); }
inline unsigned __ballot_sync(unsigned m, int pred) {
  simt::my_warp().in_val[simt::my_lane()] = pred != 0;
  simt::warp_collective(m, simt::op_ballot);
  return static_cast<unsigned>(simt::my_warp().out_val[simt::my_lane()]);
}
inline int __any_sync(unsigned m, int p) { return __ballot_sync(m, p) != 0; }
inline int __all_sync(unsigned m, int p) { return __ballot_sync(m, !p) == 0; }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// ------------------------------------------------------------------------------ atomics (workers run blocks concurrently)
// GCC/Clang __atomic builtins on plain memory (C++17; std::atomic_ref would need C++20).
namespace simt {
template <class T, class F>
inline T atomic_update(T* p, F f) {
  T old;
  __atomic_load(p, &old, __ATOMIC_RELAXED);
  T desired = f(old);
  while (!__atomic_compare_exchange(p, &old, &desired, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) desired = f(old);
  return old;
}
}  // namespace simt
template <class T> inline T atomicAdd(T* p, T v) { return simt::atomic_update(p, [v](T o) { return static_cast<T>(o + v); }); }
template <class T> inline T atomicMax(T* p, T v) { return simt::atomic_update(p, [v](T o) { return o < v ? v : o; }); }
template <class T> inline T atomicMin(T* p, T v) { return simt::atomic_update(p, [v](T o) { return v < o ? v : o; }); }
template <class T> inline T atomicExch(T* p, T v) { return simt::atomic_update(p, [v](T) { return v; }); }
template <class T> inline T atomicCAS(T* p, T cmp, T v) {
  __atomic_compare_exchange(p, &cmp, &v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return cmp;
}

// ------------------------------------------------------------------------------ device intrinsics
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __clz(int x) { return x ? __builtin_clz(static_cast<unsigned>(x)) : 32; }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline float __uint_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned i; std::memcpy(&i, &f, 4); return i; }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.f / std::sqrt(x); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
// Roundings that nvcc never fuses into an FMA (where a result must match the CPU's bytes). Out of
// line here too: the host compiler may contract a*b + c where FMA instructions exist (aarch64).
[[gnu::noinline]] inline float __fmul_rn(float a, float b) { return a * b; }
[[gnu::noinline]] inline float __fadd_rn(float a, float b) { return a + b; }
template <class T> inline T __ldg(const T* p) { return *p; }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }

// ------------------------------------------------------------------------------ launch + runtime shims
// simt_launch(kernel, grid, block, smem, stream, args...): arguments are copied once (CUDA's parameter
// space), every CUDA thread calls the kernel with those copies. A bad configuration is reported
// through cudaGetLastError() like on a GPU, not by aborting.
template <class... KArgs, class... Args>
void simt_launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem_bytes, cudaStream_t stream, Args&&... args) {
  (void)stream;  // launches run to completion here, in call order: every stream is synchronous
  static_assert(sizeof...(KArgs) == sizeof...(Args), "simt_launch: wrong number of kernel arguments");
  struct Pack {
    void (*k)(KArgs...);
    std::tuple<std::decay_t<KArgs>...> a;
  } pack{kernel, {std::forward<Args>(args)...}};
  const unsigned nthreads = block.x * block.y * block.z;
  if (nthreads == 0 || nthreads > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
      grid.y > 65535 || grid.z > 65535) {
    simt::last_error = cudaErrorInvalidConfiguration;
    return;
  }
  if (smem_bytes > 227 * 1024) {
    simt::last_error = cudaErrorInvalidValue;
    return;
  }
  simt::Launch L{grid, block, smem_bytes, [](void* o) {
                   auto* p = static_cast<Pack*>(o);
                   std::apply(p->k, p->a);
                 },
                 &pack, nthreads, (nthreads + 31) / 32};
  std::lock_guard<std::mutex> g(simt::launch_mutex());
  simt::execute(L);
}

#include "simt_runtime.h"
#include "simt_wmma.h"
