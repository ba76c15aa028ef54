// simt_hopper.h — the sm_90 asynchronous data path: mbarrier, TMA (cp.async.bulk.tensor 1-5-D and
// cp.async.bulk global → shared with mbarrier::complete_tx), fence.proxy.async and
// wgmma.mma_async (m64nNk16, bf16 / f16 → f32, both operands from shared-memory descriptors), and
// the named barriers warp-specialized kernels order their warpgroups with (bar.sync / bar.arrive
// by id and count: any arch, here for the wait machinery they share with mbarrier), one wrapper
// per instruction with its emulated twin, like simt_ptx.h (which includes this at its end).
//
//   nvcc device pass    → inline PTX: mbarrier / TMA on sm_90+, wgmma only with sm_90a (where
//                         __CUDA_ARCH_FEAT_SM90_ALL is defined); elsewhere the body traps.
//                         tensor_map_encode_tiled is host code: cuTensorMapEncodeTiled through the
//                         runtime's driver entry point. The wgmma wrappers for N = 8 … 256 are
//                         generated (scripts/gen-wgmma.mjs: every accumulator is an asm operand).
//   emulator (SIMT_EMU) → the semantics below. (It reports SIMT_CUDA_ARCH 800; the GEMM engine's
//                         dispatcher sends work to its wgmma mainloop when SIMT_EMU_CC=9.0.)
//
// Semantics (each checked by test/simt/hopper_golden.cu, the layouts bit for bit against the H200
// recordings in test/fixtures/gpu-golden/):
//   * mbarrier (a uint64_t in shared memory): init(count) sets the arrival count; a phase completes
//     when its pending arrivals AND its transaction count (expect_tx adds, complete_tx subtracts;
//     it may go negative in between) are both zero; the phase bit then flips and the arrivals
//     are re-armed. try_wait.parity(P) / test_wait.parity(P) are true when the phase of parity P
//     has completed, i.e. when the current phase's parity is not P — so on a fresh barrier a wait
//     on parity 1 (the "preceding" phase) returns true at once, as on the GPU, and the data is not
//     there. try_wait blocks the thread (a fiber leaves the run queue) until the barrier's phase
//     changes; a wait that can never complete is reported as DEADLOCK ("… on an mbarrier phase that
//     never completes"). test_wait never blocks; a spin on it that fails 2^22 times in a row dies.
//     The barrier's word holds magic bits: using one before mbarrier.init (0xff poison or zeros) dies.
//   * named barriers (ids 1-15): bar.sync blocks until its generation has the named number of
//     arrivals (bar.sync and bar.arrive both count, per thread; a multiple of 32), bar.arrive never
//     blocks; a sync that can never complete is reported as DEADLOCK ("… in a named barrier").
//   * TMA / bulk copies read the global source when issued (an out-of-bounds read is an ASan report
//     on the issuing line) and build the destination image then (box element order, the swizzle
//     XOR on the shared address, zeros outside the tensor, negative coordinates included), but the
//     bytes land in shared memory, and the mbarrier gets its complete_tx, only when a thread of the
//     block waits (try_wait / test_wait) on that mbarrier while the phase is not complete — or, for
//     copies issued after their waiters blocked, once no thread of the block can run: the latest
//     moment a GPU may make them visible. A kernel that reads the tile before its wait, waits on the
//     wrong parity or on another barrier, reads the stale bytes (or the 0xff poison of dynamic
//     shared memory). Copies still pending when the block ends are dropped with its shared memory.
//   * wgmma (per thread, no warp collective needed: each thread computes its own registers from the
//     shared-memory operands): wgmma_fence() must precede the first wgmma.mma_async after a start
//     or a wait_group (dies otherwise); an issued op NaN-poisons its accumulator registers (C is
//     captured at issue; ops chained on the same registers take the previous op's result) and
//     reads A and B from shared memory only when the wait_group that retires its group runs; a
//     thread that ends with an op not retired dies. So reading accumulators before the wait gives
//     NaN, and overwriting the operand tiles before it changes the result, as on a GPU where both
//     are undefined. Arithmetic: exact products, the sum in double, one rounding to float per op.
//
// Shared addresses: the emulated shared window is the block's dynamic shared memory (1024-byte
// aligned, address 0 at its start). wgmma descriptors and TMA destinations must lie in it
// (static __shared__ arrays cannot be addressed by a 14-bit descriptor here): dies otherwise.
#pragma once
#include <cstdint>

#if defined(SIMT_EMU)
#define SIMT_HOPPER_HD inline
#else
#define SIMT_HOPPER_HD __host__ __device__ __forceinline__
#endif

namespace ptx {
// ------------------------------------------------------------------------------ both builds
// TMA swizzle and out-of-bounds fill: CUtensorMapSwizzle's and CUtensorMapFloatOOBfill's values.
enum TmaSwizzle : uint32_t { kTmaSwizzleNone = 0, kTmaSwizzle32B = 1, kTmaSwizzle64B = 2, kTmaSwizzle128B = 3 };
enum TmaOobFill : uint32_t { kTmaOobFillZero = 0, kTmaOobFillNanRequestZeroFma = 1 };

// Shared-memory matrix descriptor (PTX ISA "Matrix Descriptor Format"): bits 0-13 start address
// >> 4, 16-29 leading-dimension byte offset >> 4, 32-45 stride-dimension byte offset >> 4, 49-51
// base offset, 62-63 swizzle mode (0 none, 1 128B, 2 64B, 3 32B).
struct WgmmaDesc {
  uint32_t start, lbo, sbo, base;
  int mode;
};
SIMT_HOPPER_HD WgmmaDesc decode_wgmma_desc(uint64_t d) {
  return {static_cast<uint32_t>(d & 0x3fff) << 4, static_cast<uint32_t>(d >> 16 & 0x3fff) << 4,
          static_cast<uint32_t>(d >> 32 & 0x3fff) << 4, static_cast<uint32_t>(d >> 49 & 7), static_cast<int>(d >> 62)};
}
SIMT_HOPPER_HD uint64_t encode_wgmma_desc(uint32_t start_addr, uint32_t lbo_bytes, uint32_t sbo_bytes, int swizzle_mode, uint32_t base_offset = 0) {
  return (uint64_t(start_addr >> 4) & 0x3fff) | (uint64_t(lbo_bytes >> 4) & 0x3fff) << 16 | (uint64_t(sbo_bytes >> 4) & 0x3fff) << 32 |
         uint64_t(base_offset & 7) << 49 | uint64_t(swizzle_mode & 3) << 62;
}
SIMT_HOPPER_HD int wgmma_row_bytes(int mode) { return mode == 1 ? 128 : mode == 2 ? 64 : mode == 3 ? 32 : 0; }

enum WgKind : uint8_t { kWgBf16, kWgF16 };
}  // namespace ptx

#if defined(SIMT_EMU)
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <vector>

namespace ptx {

// ------------------------------------------------------------------------------ shared window
namespace hopper {
inline uint32_t window_addr(const void* p, size_t bytes, const char* op) {
  if (!simt::cur) simt::die(op, "called outside a kernel", 0);
  const unsigned char* b = simt::blk->dsmem;
  const unsigned char* c = static_cast<const unsigned char*>(p);
  if (c < b || c + bytes > b + simt::blk->L->smem) {
    char msg[200];
    std::snprintf(msg, sizeof msg,
                  "%s: the shared-memory operand (%zu bytes) is not inside the block's dynamic shared memory "
                  "(the emulated shared window); offset =",
                  op, bytes);
    simt::die(msg, "", static_cast<long>(c - b));
  }
  return static_cast<uint32_t>(c - b);
}
inline unsigned char* window_ptr(uint32_t addr) { return simt::blk->dsmem + addr; }
// The XOR swizzle of a shared address (CUtensorMapSwizzle order: 0 none, 1 32B, 2 64B, 3 128B).
inline uint32_t swizzle_addr(uint32_t a, int span_bytes) {
  switch (span_bytes) {
    case 128: return a ^ ((a >> 3) & 0x70u);  // bits 4-6 ^= bits 7-9
    case 64: return a ^ ((a >> 3) & 0x30u);   // bits 4-5 ^= bits 7-8
    case 32: return a ^ ((a >> 3) & 0x10u);   // bit 4 ^= bit 7
    default: return a;
  }
}

// ---- locking: fibers of a block run on one OS thread (nothing to lock); the threads backend
// runs them concurrently: one mutex for every mbarrier / bulk-copy operation, one condvar.
#if defined(SIMT_EMU_BACKEND_THREADS)
inline std::mutex& mu() {
  static std::mutex m;
  return m;
}
inline std::condition_variable& cv() {
  static std::condition_variable c;
  return c;
}
using Lock = std::unique_lock<std::mutex>;
inline Lock lock() { return Lock(mu()); }
#else
struct Lock {
  Lock() {}
  ~Lock() {}  // non-trivial: no unused-variable warnings at the call sites
};
inline Lock lock() { return {}; }
#endif

// ---- mbarrier word: bits 0-19 arrival count, 20-39 pending arrivals, 40-60 tx-count (signed
// 21 bits), 61-62 magic 0b10, 63 phase. (The GPU's encoding is opaque; kernels must not read it.)
struct Mbar {
  uint32_t count, pending;
  int32_t tx;
  uint32_t phase;
};
constexpr uint64_t kMask20 = (1u << 20) - 1;
inline Mbar decode(const uint64_t* bar, const char* op) {
  if (reinterpret_cast<uintptr_t>(bar) % 8) simt::die(op, ": the mbarrier is not 8-byte aligned; address % 8 =", reinterpret_cast<uintptr_t>(bar) % 8);
  const uint64_t w = *bar;
  if ((w >> 61 & 3) != 2) simt::die(op, ": the mbarrier was not initialized (mbarrier.init) or was overwritten; word low bits", static_cast<long>(w & 0xffffffff));
  Mbar m;
  m.count = static_cast<uint32_t>(w & kMask20);
  m.pending = static_cast<uint32_t>(w >> 20 & kMask20);
  const uint32_t t = static_cast<uint32_t>(w >> 40 & ((1u << 21) - 1));
  m.tx = static_cast<int32_t>(t << 11) >> 11;
  m.phase = static_cast<uint32_t>(w >> 63);
  return m;
}
inline void encode(uint64_t* bar, const Mbar& m) {
  *bar = (m.count & kMask20) | uint64_t(m.pending & kMask20) << 20 |
         uint64_t(static_cast<uint32_t>(m.tx) & ((1u << 21) - 1)) << 40 | uint64_t(2) << 61 | uint64_t(m.phase & 1) << 63;
}
// Wakes the threads blocked (in `state`) on `barrier`: an mbarrier whose phase changed, or a named
// barrier whose generation completed.
inline void wake(const void* barrier, simt::ThreadState state = simt::kAtMbarrier) {
#if defined(SIMT_EMU_BACKEND_THREADS)
  (void)barrier;
  (void)state;
  cv().notify_all();
#else
  for (unsigned i = 0; i < simt::blk->L->nthreads; ++i) {
    simt::Thread& t = simt::blk->threads[i];
    if (t.state == state && t.mbar_wait == barrier) {
      t.state = simt::kRunnable;
      t.mbar_wait = nullptr;
    }
  }
#endif
}
// Stores m; completes the phase when arrivals and tx-count are both zero.
inline void store(uint64_t* bar, Mbar m) {
  if (m.pending == 0 && m.tx == 0) {
    m.phase ^= 1;
    m.pending = m.count;
    encode(bar, m);
    wake(bar);
    return;
  }
  encode(bar, m);
}
inline void tx_add(uint64_t* bar, int64_t bytes, const char* op) {
  Mbar m = decode(bar, op);
  const int64_t tx = m.tx + bytes;
  if (tx > int64_t(kMask20) || tx < -int64_t(kMask20)) simt::die(op, ": the mbarrier tx-count leaves -(2^20-1)..2^20-1; it would be", static_cast<long>(tx));
  m.tx = static_cast<int32_t>(tx);
  store(bar, m);
}
// Lands every pending bulk copy that signals bar (caller holds the lock).
inline void land(uint64_t* bar) {
  std::vector<simt::BulkCopy>& v = simt::blk->bulk;
  size_t keep = 0;
  std::vector<simt::BulkCopy> done;
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i].bar == bar) done.push_back(std::move(v[i]));
    else if (keep++ != i) v[keep - 1] = std::move(v[i]);  // never self-move: that empties the bytes
  }
  v.resize(keep);
  for (simt::BulkCopy& c : done) {
    std::memcpy(c.dst, c.bytes.data(), c.bytes.size());
    tx_add(bar, -static_cast<int64_t>(c.bytes.size()), "mbarrier complete_tx (async copy)");
  }
}
inline bool has_pending(const uint64_t* bar) {
  for (const simt::BulkCopy& c : simt::blk->bulk)
    if (c.bar == bar) return true;
  return false;
}
}  // namespace hopper

// ------------------------------------------------------------------------------ mbarrier
// mbarrier.init.shared::cta.b64 [bar], count   (1 <= count < 2^20)
inline void mbarrier_init(uint64_t* bar, uint32_t count) {
  if (!simt::cur) simt::die("ptx::mbarrier_init called outside a kernel");
  if (count < 1 || count > hopper::kMask20) simt::die("ptx::mbarrier_init: the count must be 1..2^20-1, got", "", count);
  auto g = hopper::lock();
  hopper::encode(bar, {count, count, 0, 0});
}
// mbarrier.inval: the word no longer holds a barrier (a later use dies).
inline void mbarrier_inval(uint64_t* bar) {
  auto g = hopper::lock();
  *bar = 0;
}
// fence.mbarrier_init.release.cluster and fence.proxy.async.shared::cta: the emulator has one
// memory proxy and makes everything visible at its scheduling points, so both are no-ops (a
// missing fence is not detected).
inline void fence_mbarrier_init() {}
inline void fence_proxy_async() {}
// mbarrier.expect_tx.shared::cta.b64 [bar], tx
inline void mbarrier_expect_tx(uint64_t* bar, uint32_t tx_bytes) {
  auto g = hopper::lock();
  hopper::tx_add(bar, tx_bytes, "ptx::mbarrier_expect_tx");
}
// mbarrier.complete_tx.shared::cta.b64 [bar], tx
inline void mbarrier_complete_tx(uint64_t* bar, uint32_t tx_bytes) {
  auto g = hopper::lock();
  hopper::tx_add(bar, -static_cast<int64_t>(tx_bytes), "ptx::mbarrier_complete_tx");
}
// mbarrier.arrive.shared::cta.b64 state, [bar], count; returns the state token (the phase arrived on).
inline uint64_t mbarrier_arrive(uint64_t* bar, uint32_t count = 1) {
  auto g = hopper::lock();
  hopper::Mbar m = hopper::decode(bar, "ptx::mbarrier_arrive");
  if (count < 1 || count > m.pending)
    simt::die("ptx::mbarrier_arrive: more arrivals than the phase has pending (undefined on a GPU); pending", "", m.pending);
  const uint64_t token = m.phase;
  m.pending -= count;
  hopper::store(bar, m);
  return token;
}
// mbarrier.arrive.expect_tx.shared::cta.b64 state, [bar], tx: expect_tx, then one arrival.
inline uint64_t mbarrier_arrive_expect_tx(uint64_t* bar, uint32_t tx_bytes) {
  {
    auto g = hopper::lock();
    hopper::Mbar m = hopper::decode(bar, "ptx::mbarrier_arrive_expect_tx");
    if (m.pending < 1) simt::die("ptx::mbarrier_arrive_expect_tx: no arrival pending", "", 0);
    m.tx += static_cast<int32_t>(tx_bytes);
    hopper::encode(bar, m);  // no completion check in between: one atomic operation on a GPU
  }
  return mbarrier_arrive(bar);
}

namespace hopper {
inline bool phase_done(const uint64_t* bar, uint32_t parity, const char* op) { return decode(bar, op).phase != (parity & 1); }
}  // namespace hopper

// mbarrier.try_wait.parity.shared::cta.b64 p, [bar], parity: true when the phase of that parity
// has completed. Potentially blocking: lands the copies pending on bar, then (fibers) leaves the
// run queue until bar's phase changes; returns the check after that.
inline bool mbarrier_try_wait_parity(uint64_t* bar, uint32_t parity) {
  static const char* op = "ptx::mbarrier_try_wait_parity";
  if (!simt::cur) simt::die(op, "called outside a kernel", 0);
  auto g = hopper::lock();
  if (hopper::phase_done(bar, parity, op)) return true;
  hopper::land(bar);
  if (hopper::phase_done(bar, parity, op)) return true;
#if defined(SIMT_EMU_BACKEND_THREADS)
  if (!hopper::cv().wait_for(g, std::chrono::seconds(20), [&] {
        if (hopper::has_pending(bar)) hopper::land(bar);
        return hopper::phase_done(bar, parity, op);
      }))
    simt::die("ptx::mbarrier_try_wait_parity: the phase did not complete in 20 s (DEADLOCK on an mbarrier phase that never completes?)");
  return true;
#else
  simt::cur->state = simt::kAtMbarrier;
  simt::cur->mbar_wait = bar;
  simt::yield_to_scheduler();
  return hopper::phase_done(bar, parity, op);
#endif
}
// mbarrier.test_wait.parity: never blocks (but lands the copies pending on bar first). A false
// result yields to the other threads; 2^22 failures in a row die (a spin that cannot end).
inline bool mbarrier_test_wait_parity(uint64_t* bar, uint32_t parity) {
  static const char* op = "ptx::mbarrier_test_wait_parity";
  if (!simt::cur) simt::die(op, "called outside a kernel", 0);
  bool done;
  {
    auto g = hopper::lock();
    done = hopper::phase_done(bar, parity, op);
    if (!done) {
      hopper::land(bar);
      done = hopper::phase_done(bar, parity, op);
    }
  }
  if (done) {
    simt::cur->mbar_spins = 0;
    return true;
  }
  if (++simt::cur->mbar_spins >= (1u << 22))
    simt::die("ptx::mbarrier_test_wait_parity: failed 2^22 times in a row (a spin on a phase that never completes)");
#if defined(SIMT_EMU_BACKEND_FIBERS)
  simt::yield_to_scheduler();  // stays runnable: let the others arrive
#else
  std::this_thread::yield();
#endif
  return false;
}
// The state-token forms (the token is the phase an arrive arrived on).
inline bool mbarrier_try_wait(uint64_t* bar, uint64_t state) { return mbarrier_try_wait_parity(bar, static_cast<uint32_t>(state & 1)); }
inline bool mbarrier_test_wait(uint64_t* bar, uint64_t state) { return mbarrier_test_wait_parity(bar, static_cast<uint32_t>(state & 1)); }
// The usual loop: while (!try_wait.parity) {}
inline void mbarrier_wait_parity(uint64_t* bar, uint32_t parity) {
  while (!mbarrier_try_wait_parity(bar, parity)) {
  }
}

// ------------------------------------------------------------------------------ named barriers
// bar.sync id, n / bar.arrive id, n (barrier.sync.aligned / barrier.arrive.aligned): one of the
// block's hardware barriers, completing when n threads (a multiple of 32) arrived in it; sync
// waits for that, arrive does not. Warp-specialized kernels order warpgroups with them (a consumer
// waits for its turn, the other one's arrive gives it). Barrier 0 is __syncthreads()'s (its use by
// count is not modelled: dies). A generation's arrivals must all name the same n; arrivals past n
// start the next generation, as on a GPU. Exited threads do not count (a sync short of its n is
// reported as a DEADLOCK).
namespace hopper {
inline void named_barrier(uint32_t id, uint32_t nthreads, bool wait, const char* op) {
  if (!simt::cur) simt::die(op, "called outside a kernel", 0);
  if (id < 1 || id > 15) simt::die(op, ": the barrier id must be 1..15 here (0 is __syncthreads()'s); got", id);
  if (nthreads < 32 || nthreads % 32 || nthreads > simt::blk->L->nthreads)
    simt::die(op, ": the thread count must be a multiple of 32 up to the block's size; got", nthreads);
  auto g = lock();
  simt::NamedBarrier& nb = simt::blk->named[id];
  if (nb.arrived == 0) nb.expected = nthreads;
  else if (nb.expected != nthreads) simt::die(op, ": arrivals in one generation name different thread counts; this one", nthreads);
  const uint32_t generation = nb.generation;  // a waiter goes on once it moved
  if (++nb.arrived == nb.expected) {
    nb.arrived = 0;
    ++nb.generation;
    wake(&nb, simt::kAtNamedBarrier);
    return;
  }
  if (!wait) return;
#if defined(SIMT_EMU_BACKEND_THREADS)
  if (!cv().wait_for(g, std::chrono::seconds(20), [&] { return nb.generation != generation; }))
    simt::die(op, ": the barrier did not complete in 20 s (DEADLOCK: in a named barrier (bar.sync) short of its thread count?); id", id);
#else
  simt::cur->state = simt::kAtNamedBarrier;  // runnable again when the generation completes
  simt::cur->mbar_wait = &nb;
  simt::yield_to_scheduler();
  if (nb.generation == generation) simt::die(op, ": resumed before its generation completed; id", id);
#endif
}
}  // namespace hopper
inline void named_barrier_sync(uint32_t id, uint32_t nthreads) { hopper::named_barrier(id, nthreads, true, "ptx::named_barrier_sync"); }
inline void named_barrier_arrive(uint32_t id, uint32_t nthreads) { hopper::named_barrier(id, nthreads, false, "ptx::named_barrier_arrive"); }

// ------------------------------------------------------------------------------ TMA
// What cuTensorMapEncodeTiled encodes (interleave none, element strides 1, L2 promotion and
// cache hints ignored). 128 bytes, 64-byte aligned, like CUtensorMap; pass it to the kernel as a
// (__grid_constant__) parameter or keep it in global memory.
struct alignas(64) TensorMap {
  uint64_t gaddr;
  uint64_t dims[5];     // elements, innermost first
  uint64_t strides[5];  // bytes; strides[0] = the element size
  uint32_t box[5];      // elements
  uint32_t rank, elem_bytes, swizzle, oob_fill, magic;
};
static_assert(sizeof(TensorMap) == 128, "TensorMap must be 128 bytes like CUtensorMap");
constexpr uint32_t kTensorMapMagic = 0x544d4150u;
inline int tma_swizzle_span(uint32_t s) { return s == kTmaSwizzle32B ? 32 : s == kTmaSwizzle64B ? 64 : s == kTmaSwizzle128B ? 128 : 0; }

// Host side, cuTensorMapEncodeTiled's checks: returns 0 (CUDA_SUCCESS) or 1 (CUDA_ERROR_INVALID_VALUE)
// with the reason in *why. global_strides: rank - 1 byte strides of dims 1..rank-1.
inline int tensor_map_encode_tiled(TensorMap* map, uint32_t elem_bytes, uint32_t rank, const void* global_address,
                                   const uint64_t* global_dims, const uint64_t* global_strides, const uint32_t* box_dims,
                                   TmaSwizzle swizzle, TmaOobFill oob_fill = kTmaOobFillZero, const char** why = nullptr) {
  auto bad = [&](const char* w) {
    if (why) *why = w;
    return 1;
  };
  if (!map) return bad("map is null");
  if (elem_bytes != 1 && elem_bytes != 2 && elem_bytes != 4 && elem_bytes != 8) return bad("element size must be 1, 2, 4 or 8 bytes");
  if (rank < 1 || rank > 5) return bad("rank must be 1..5");
  if (reinterpret_cast<uintptr_t>(global_address) % 16) return bad("globalAddress must be 16-byte aligned");
  if (oob_fill != kTmaOobFillZero) return bad("only OOB fill NONE (zeros) is modelled");
  TensorMap m{};
  m.gaddr = reinterpret_cast<uintptr_t>(global_address);
  m.rank = rank;
  m.elem_bytes = elem_bytes;
  m.swizzle = swizzle;
  m.oob_fill = oob_fill;
  m.strides[0] = elem_bytes;
  for (uint32_t i = 0; i < rank; ++i) {
    if (global_dims[i] < 1 || global_dims[i] > (uint64_t(1) << 32)) return bad("globalDim must be 1..2^32");
    if (box_dims[i] < 1 || box_dims[i] > 256) return bad("boxDim must be 1..256");
    m.dims[i] = global_dims[i];
    m.box[i] = box_dims[i];
    if (i > 0) {
      if (global_strides[i - 1] % 16 || global_strides[i - 1] >= (uint64_t(1) << 40)) return bad("globalStrides must be multiples of 16 below 2^40");
      m.strides[i] = global_strides[i - 1];
    }
  }
  const uint64_t inner = uint64_t(box_dims[0]) * elem_bytes;
  if (inner % 16) return bad("boxDim[0] * elementSize must be a multiple of 16 bytes");
  const int span = tma_swizzle_span(swizzle);
  if (swizzle > kTmaSwizzle128B) return bad("unknown swizzle");
  if (span && inner > static_cast<uint64_t>(span)) return bad("boxDim[0] * elementSize must not exceed the swizzle span");
  if (span && inner != static_cast<uint64_t>(span)) return bad("boxDim[0] * elementSize below the swizzle span: that layout was not recorded (not modelled)");
  m.magic = kTensorMapMagic;
  *map = m;
  return 0;
}

namespace hopper {
#if !defined(SIMT_EMU_BACKEND_THREADS)
// Fibers: the scheduler found no runnable thread; land what the blocked waiters wait for.
inline bool land_for_blocked_waiters() {
  bool landed = false;
  for (unsigned i = 0; i < simt::blk->L->nthreads; ++i) {
    const simt::Thread& t = simt::blk->threads[i];
    if (t.state != simt::kAtMbarrier || !t.mbar_wait) continue;
    uint64_t* bar = static_cast<uint64_t*>(const_cast<void*>(t.mbar_wait));
    if (!has_pending(bar)) continue;
    land(bar);
    landed = true;
  }
  return landed;
}
#endif
inline void bulk_issue(uint64_t* bar, unsigned char* dst, std::vector<unsigned char>&& bytes) {
  auto g = lock();
  decode(bar, "cp.async.bulk: its mbarrier");
  simt::blk->bulk.push_back({bar, dst, std::move(bytes)});
#if defined(SIMT_EMU_BACKEND_THREADS)
  cv().notify_all();  // a thread already blocked on bar re-checks, and lands it
#else
  simt::land_for_blocked_waiters = &land_for_blocked_waiters;  // the scheduler's hook (set where copies exist)
#endif
}
// cp.async.bulk.tensor.Nd.shared::cluster.global.tile.mbarrier::complete_tx::bytes
inline void tensor_g2s(void* smem_dst, const TensorMap* map, const int32_t* coord, uint32_t rank, uint64_t* bar) {
  static const char* op = "ptx::cp_async_bulk_tensor_g2s";
  if (!simt::cur) simt::die(op, "called outside a kernel", 0);
  if (!map || map->magic != kTensorMapMagic) simt::die(op, ": the tensor map was not encoded by ptx::tensor_map_encode_tiled", 0);
  if (map->rank != rank) simt::die(op, ": the instruction's dimension differs from the tensor map's rank", map->rank);
  if (reinterpret_cast<uintptr_t>(smem_dst) % 128) simt::die(op, ": the shared destination is not 128-byte aligned; address % 128 =", reinterpret_cast<uintptr_t>(smem_dst) % 128);
  uint64_t elems = 1;
  for (uint32_t i = 0; i < rank; ++i) elems *= map->box[i];
  const size_t bytes = elems * map->elem_bytes;
  const uint32_t base = window_addr(smem_dst, bytes, op);
  const int span = tma_swizzle_span(map->swizzle);
  std::vector<unsigned char> img(bytes);
  const unsigned char* g = reinterpret_cast<const unsigned char*>(static_cast<uintptr_t>(map->gaddr));
  uint32_t e[5] = {0, 0, 0, 0, 0};
  for (uint64_t lin = 0; lin < elems; ++lin) {
    bool in = true;
    uint64_t off = 0;
    for (uint32_t i = 0; i < rank; ++i) {
      const int64_t c = int64_t(coord[i]) + e[i];
      if (c < 0 || c >= static_cast<int64_t>(map->dims[i])) in = false;
      else off += static_cast<uint64_t>(c) * map->strides[i];
    }
    const uint32_t a = swizzle_addr(base + static_cast<uint32_t>(lin * map->elem_bytes), span);
    unsigned char* d = img.data() + (a - base);
    if (in) std::memcpy(d, g + off, map->elem_bytes);  // read now, land at the wait
    else std::memset(d, 0, map->elem_bytes);
    for (uint32_t i = 0; i < rank && ++e[i] == map->box[i]; ++i) e[i] = 0;
  }
  bulk_issue(bar, static_cast<unsigned char*>(smem_dst), std::move(img));
}
}  // namespace hopper

inline void cp_async_bulk_tensor_1d_g2s(void* dst, const TensorMap* map, int32_t c0, uint64_t* bar) {
  const int32_t c[1] = {c0};
  hopper::tensor_g2s(dst, map, c, 1, bar);
}
inline void cp_async_bulk_tensor_2d_g2s(void* dst, const TensorMap* map, int32_t c0, int32_t c1, uint64_t* bar) {
  const int32_t c[2] = {c0, c1};
  hopper::tensor_g2s(dst, map, c, 2, bar);
}
inline void cp_async_bulk_tensor_3d_g2s(void* dst, const TensorMap* map, int32_t c0, int32_t c1, int32_t c2, uint64_t* bar) {
  const int32_t c[3] = {c0, c1, c2};
  hopper::tensor_g2s(dst, map, c, 3, bar);
}
inline void cp_async_bulk_tensor_4d_g2s(void* dst, const TensorMap* map, int32_t c0, int32_t c1, int32_t c2, int32_t c3,
                                        uint64_t* bar) {
  const int32_t c[4] = {c0, c1, c2, c3};
  hopper::tensor_g2s(dst, map, c, 4, bar);
}
inline void cp_async_bulk_tensor_5d_g2s(void* dst, const TensorMap* map, int32_t c0, int32_t c1, int32_t c2, int32_t c3,
                                        int32_t c4, uint64_t* bar) {
  const int32_t c[5] = {c0, c1, c2, c3, c4};
  hopper::tensor_g2s(dst, map, c, 5, bar);
}
// cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [dst], [src], bytes, [bar]
// (16-byte aligned addresses, bytes a multiple of 16).
inline void cp_async_bulk_g2s(void* smem_dst, const void* gmem_src, uint32_t bytes, uint64_t* bar) {
  static const char* op = "ptx::cp_async_bulk_g2s";
  if (!simt::cur) simt::die(op, "called outside a kernel", 0);
  if (bytes % 16 || reinterpret_cast<uintptr_t>(smem_dst) % 16 || reinterpret_cast<uintptr_t>(gmem_src) % 16)
    simt::die(op, ": addresses must be 16-byte aligned and the size a multiple of 16; size", bytes);
  hopper::window_addr(smem_dst, bytes, op);
  std::vector<unsigned char> img(bytes);
  std::memcpy(img.data(), gmem_src, bytes);
  hopper::bulk_issue(bar, static_cast<unsigned char*>(smem_dst), std::move(img));
}

// ------------------------------------------------------------------------------ wgmma
// A descriptor for a tile at smem (in dynamic shared memory; its shared-window address).
inline uint64_t make_wgmma_desc(const void* smem, uint32_t lbo_bytes, uint32_t sbo_bytes, int swizzle_mode) {
  return encode_wgmma_desc(hopper::window_addr(smem, 16, "ptx::make_wgmma_desc"), lbo_bytes, sbo_bytes, swizzle_mode);
}
// Shared address of element (mn, k) of an operand (mn: M for A, N for B), README of the recordings:
//   K-major (trans 0): none: start + (mn/8)·SBO + (k/8)·LBO + (mn%8)·16 + 2·(k%8)
//                      swizzled (row R bytes): start + (mn/8)·SBO + (mn%8)·R + 2k, then the XOR
//   MN-major (trans 1): none: start + (mn/8)·SBO + (k/8)·LBO + (k%8)·16 + 2·(mn%8)
//                      swizzled: start + (mn/(R/2))·LBO + (k/8)·SBO + (k%8)·R + 2·(mn%(R/2)), then the XOR
//   (16-bit elements; the LBO step between MN groups wider than one swizzled row follows the PTX
//   ISA and was not recorded.)
inline uint32_t wgmma_elem_addr(const WgmmaDesc& D, int mn, int k, bool trans) {
  if (D.mode == 0)
    return trans ? D.start + (mn / 8) * D.sbo + (k / 8) * D.lbo + (k % 8) * 16 + 2 * (mn % 8)
                 : D.start + (mn / 8) * D.sbo + (k / 8) * D.lbo + (mn % 8) * 16 + 2 * (k % 8);
  const int R = wgmma_row_bytes(D.mode), W = R / 2;
  const uint32_t a = trans ? D.start + (mn / W) * D.lbo + (k / 8) * D.sbo + (k % 8) * R + 2 * (mn % W)
                           : D.start + (mn / 8) * D.sbo + (mn % 8) * R + 2 * k;
  return hopper::swizzle_addr(a, R);
}

namespace hopper {
inline double wg_elem(const WgmmaDesc& D, int mn, int k, bool trans, uint8_t kind) {
  const uint32_t a = wgmma_elem_addr(D, mn, k, trans);
  if (a + 2 > simt::blk->L->smem) simt::die("ptx::wgmma: a descriptor reads outside dynamic shared memory; shared address", "", a);
  uint16_t h;
  std::memcpy(&h, window_ptr(a), 2);
  return kind == kWgBf16 ? lk::bf16_to_float(h) : lk::fp16_to_float(h);
}
// Runs one pending op of the current thread (at its wait_group).
inline void wg_run(const simt::WgmmaPending& p) {
  const int wg_warp = simt::cur->warp & 3, g = simt::cur->lane >> 2, q = simt::cur->lane & 3;
  const WgmmaDesc A = decode_wgmma_desc(p.desc_a), B = decode_wgmma_desc(p.desc_b);
  double a[2][16];
  for (int h = 0; h < 2; ++h)
    for (int k = 0; k < 16; ++k) a[h][k] = p.scale_a * wg_elem(A, 16 * wg_warp + g + 8 * h, k, p.trans_a, p.kind);
  for (int i = 0; i < p.nregs; ++i) {
    const int n = 8 * (i >> 2) + 2 * q + (i & 1);
    double acc = p.scale_d ? (p.chain ? p.d[i] : p.c[i]) : 0.0;
    for (int k = 0; k < 16; ++k) acc += a[(i >> 1) & 1][k] * (p.scale_b * wg_elem(B, n, k, p.trans_b, p.kind));
    p.d[i] = static_cast<float>(acc);
  }
}
template <int N>
inline void wg_issue(float* d, uint64_t da, uint64_t db, bool scale_d, bool ta, bool tb, int sa, int sb, uint8_t kind) {
  static_assert(N % 8 == 0 && N >= 8 && N <= 256, "wgmma m64nNk16: N must be a multiple of 8 in 8..256");
  static const char* op = "ptx::wgmma_m64k16";
  if (!simt::cur) simt::die(op, "called outside a kernel", 0);
  simt::Thread& t = *simt::cur;
  const unsigned wg_end = (static_cast<unsigned>(t.warp) / 4 * 4 + 4) * 32;
  if (simt::blk->L->nthreads < wg_end)
    simt::die("ptx::wgmma: the block has no complete warpgroup (4 warps, 128 threads) for this thread; threads", "", simt::blk->L->nthreads);
  if (!t.wgmma_fenced) simt::die("ptx::wgmma: wgmma.mma_async without a wgmma.fence since the start or the last wgmma.wait_group");
  if ((sa != 1 && sa != -1) || (sb != 1 && sb != -1)) simt::die("ptx::wgmma: imm-scale-a/b must be 1 or -1", "", sa);
  for (const uint64_t desc : {da, db}) {
    const WgmmaDesc D = decode_wgmma_desc(desc);
    if (D.base != 0) simt::die("ptx::wgmma: descriptor base offset != 0 is not modelled; base offset", "", D.base);
  }
  simt::WgmmaPending p{};
  p.group = t.wgmma_commits;
  p.d = d;
  p.nregs = N / 2;
  p.chain = false;
  for (const simt::WgmmaPending& o : t.wgmma)
    if (o.d == d) {
      if (o.nregs != p.nregs) simt::die("ptx::wgmma: pending ops on the same accumulators with different N", "", o.nregs);
      p.chain = true;
    }
  p.scale_d = scale_d;
  p.kind = kind;
  p.trans_a = ta;
  p.trans_b = tb;
  p.scale_a = static_cast<int8_t>(sa);
  p.scale_b = static_cast<int8_t>(sb);
  p.desc_a = da;
  p.desc_b = db;
  if (!p.chain) {
    for (int i = 0; i < N / 2; ++i) p.c[i] = d[i];
    const float nan = lk::bits_to_float(0x7fffffffu);
    for (int i = 0; i < N / 2; ++i) d[i] = nan;  // not written until the wait_group: reads before it see NaN
  }
  t.wgmma.push_back(p);
}
}  // namespace hopper

// wgmma.fence.sync.aligned
inline void wgmma_fence() {
  if (!simt::cur) simt::die("ptx::wgmma_fence called outside a kernel");
  simt::cur->wgmma_fenced = true;
}
// wgmma.commit_group.sync.aligned
inline void wgmma_commit_group() {
  if (!simt::cur) simt::die("ptx::wgmma_commit_group called outside a kernel");
  ++simt::cur->wgmma_commits;
}
// wgmma.wait_group.sync.aligned N: retires (computes, in issue order) every op of every
// committed group except the newest N.
template <int N>
inline void wgmma_wait_group() {
  static_assert(N >= 0, "wgmma.wait_group N needs N >= 0");
  if (!simt::cur) simt::die("ptx::wgmma_wait_group called outside a kernel");
  simt::Thread& t = *simt::cur;
  const uint32_t upto = t.wgmma_commits > static_cast<uint32_t>(N) ? t.wgmma_commits - static_cast<uint32_t>(N) : 0u;
  size_t n = 0;
  while (n < t.wgmma.size() && t.wgmma[n].group < upto) hopper::wg_run(t.wgmma[n++]);
  t.wgmma.erase(t.wgmma.begin(), t.wgmma.begin() + static_cast<std::ptrdiff_t>(n));
  t.wgmma_fenced = false;
}
// wgmma.mma_async.sync.aligned.m64nNk16.f32.{bf16,f16}.{bf16,f16} {d}, descA, descB, scale-d,
// imm-scale-a, imm-scale-b, tnspA, tnspB. d: the thread's N/2 accumulator registers (D fragment:
// register i holds D[16·(warp%4) + g + 8·((i>>1)&1)][8·(i>>2) + 2q + (i&1)], g = lane/4, q = lane%4).
// ScaleA / ScaleB: 1 or -1 (immediates in the instruction).
template <int N, bool TransA = false, bool TransB = false, int ScaleA = 1, int ScaleB = 1>
inline void wgmma_m64k16_f32_bf16(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, bool scale_d) {
  hopper::wg_issue<N>(d, desc_a, desc_b, scale_d, TransA, TransB, ScaleA, ScaleB, kWgBf16);
}
template <int N, bool TransA = false, bool TransB = false, int ScaleA = 1, int ScaleB = 1>
inline void wgmma_m64k16_f32_f16(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, bool scale_d) {
  hopper::wg_issue<N>(d, desc_a, desc_b, scale_d, TransA, TransB, ScaleA, ScaleB, kWgF16);
}
// setmaxnreg.{inc,dec}.sync.aligned.u32 N: a warpgroup-specialized kernel hands registers from its
// producer warpgroup to its consumers. The emulator has no register file: both are no-ops.
template <int N>
inline void setmaxnreg_inc() {
  static_assert(N >= 24 && N <= 256 && N % 8 == 0, "setmaxnreg: 24..256, a multiple of 8");
}
template <int N>
inline void setmaxnreg_dec() {
  static_assert(N >= 24 && N <= 256 && N % 8 == 0, "setmaxnreg: 24..256, a multiple of 8");
}
// Keeps the compiler from moving reads or writes of accumulators across an in-flight wgmma (nvcc:
// an empty asm on each register; here the registers are NaN until the wait, which catches it).
template <int R>
inline void wgmma_fence_operand(float (&)[R]) {}

}  // namespace ptx

#else
// ------------------------------------------------------------------------------ nvcc
// Inline PTX (mbarrier, TMA: sm_90; wgmma: sm_90a, compiled only where __CUDA_ARCH_FEAT_SM90_ALL
// is defined). Elsewhere (another arch, the host pass) a body traps: the launchers pick the Hopper
// kernels only on compute capability 9.0 with an sm_90a binary.
#include <cuda.h>
#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled: the driver entry point (no libcuda link)
#include <cuda_runtime_api.h>

#if SIMT_CUDA_ARCH >= 900
#define SIMT_SM90 1
#else
#define SIMT_SM90 0
#endif
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define SIMT_SM90A 1
#else
#define SIMT_SM90A 0
#endif
#define SIMT_HOPPER_FN __device__ __forceinline__

namespace ptx {

// ---- mbarrier
SIMT_HOPPER_FN void mbarrier_init(uint64_t* bar, uint32_t count) {
#if SIMT_SM90
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count) : "memory");
#else
  simt_trap();
#endif
}
SIMT_HOPPER_FN void mbarrier_inval(uint64_t* bar) {
#if SIMT_SM90
  asm volatile("mbarrier.inval.shared::cta.b64 [%0];\n" ::"r"(smem_addr(bar)) : "memory");
#else
  simt_trap();
#endif
}
SIMT_HOPPER_FN void fence_mbarrier_init() {
#if SIMT_SM90
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#else
  simt_trap();
#endif
}
SIMT_HOPPER_FN void fence_proxy_async() {
#if SIMT_SM90
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#else
  simt_trap();
#endif
}
SIMT_HOPPER_FN void mbarrier_expect_tx(uint64_t* bar, uint32_t tx_bytes) {
#if SIMT_SM90
  asm volatile("mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(tx_bytes) : "memory");
#else
  simt_trap();
#endif
}
SIMT_HOPPER_FN void mbarrier_complete_tx(uint64_t* bar, uint32_t tx_bytes) {
#if SIMT_SM90
  asm volatile("mbarrier.complete_tx.relaxed.cta.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(tx_bytes) : "memory");
#else
  simt_trap();
#endif
}
SIMT_HOPPER_FN uint64_t mbarrier_arrive(uint64_t* bar, uint32_t count = 1) {
#if SIMT_SM90
  uint64_t state;
  asm volatile("mbarrier.arrive.release.cta.shared::cta.b64 %0, [%1], %2;\n" : "=l"(state) : "r"(smem_addr(bar)), "r"(count) : "memory");
  return state;
#else
  simt_trap();
  return 0;
#endif
}
SIMT_HOPPER_FN uint64_t mbarrier_arrive_expect_tx(uint64_t* bar, uint32_t tx_bytes) {
#if SIMT_SM90
  uint64_t state;
  asm volatile("mbarrier.arrive.expect_tx.release.cta.shared::cta.b64 %0, [%1], %2;\n"
               : "=l"(state) : "r"(smem_addr(bar)), "r"(tx_bytes) : "memory");
  return state;
#else
  simt_trap();
  return 0;
#endif
}
#if SIMT_SM90
#define SIMT_MBAR_WAIT(instr, arg_constraint, arg)                                                          \
  uint32_t done;                                                                                            \
  asm volatile("{\n.reg .pred p;\n" instr " p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"                         \
               : "=r"(done) : "r"(smem_addr(bar)), arg_constraint(arg) : "memory");                          \
  return done != 0
#else
#define SIMT_MBAR_WAIT(instr, arg_constraint, arg) \
  simt_trap();                                     \
  return false
#endif
SIMT_HOPPER_FN bool mbarrier_try_wait_parity(uint64_t* bar, uint32_t parity) {
  SIMT_MBAR_WAIT("mbarrier.try_wait.parity.shared::cta.b64", "r", parity);
}
SIMT_HOPPER_FN bool mbarrier_test_wait_parity(uint64_t* bar, uint32_t parity) {
  SIMT_MBAR_WAIT("mbarrier.test_wait.parity.shared::cta.b64", "r", parity);
}
SIMT_HOPPER_FN bool mbarrier_try_wait(uint64_t* bar, uint64_t state) {
  SIMT_MBAR_WAIT("mbarrier.try_wait.shared::cta.b64", "l", state);
}
SIMT_HOPPER_FN bool mbarrier_test_wait(uint64_t* bar, uint64_t state) {
  SIMT_MBAR_WAIT("mbarrier.test_wait.shared::cta.b64", "l", state);
}
#undef SIMT_MBAR_WAIT
SIMT_HOPPER_FN void mbarrier_wait_parity(uint64_t* bar, uint32_t parity) {
  while (!mbarrier_try_wait_parity(bar, parity)) {
  }
}

// ---- named barriers (any arch): barrier.sync / barrier.arrive by id and thread count
SIMT_HOPPER_FN void named_barrier_sync(uint32_t id, uint32_t nthreads) {
#if defined(__CUDA_ARCH__)
  asm volatile("barrier.sync.aligned %0, %1;\n" ::"r"(id), "r"(nthreads) : "memory");
#else
  simt_trap();
#endif
}
SIMT_HOPPER_FN void named_barrier_arrive(uint32_t id, uint32_t nthreads) {
#if defined(__CUDA_ARCH__)
  asm volatile("barrier.arrive.aligned %0, %1;\n" ::"r"(id), "r"(nthreads) : "memory");
#else
  simt_trap();
#endif
}

// ---- TMA
// CUtensorMap itself: 128 opaque bytes, 64-byte aligned; a kernel takes it as a __grid_constant__
// parameter (or from global memory).
struct alignas(64) TensorMap {
  uint64_t opaque[16];
};
static_assert(sizeof(TensorMap) == sizeof(CUtensorMap), "TensorMap must be a CUtensorMap");

// Host: cuTensorMapEncodeTiled through the runtime's driver entry point (resolved once), with the
// element size as an unsigned integer type (a copy never converts), no interleave, element strides
// 1 and L2 promotion of 128 B. Returns 0, or 1 with the reason in *why.
inline int tensor_map_encode_tiled(TensorMap* map, uint32_t elem_bytes, uint32_t rank, const void* global_address,
                                   const uint64_t* global_dims, const uint64_t* global_strides, const uint32_t* box_dims,
                                   TmaSwizzle swizzle, TmaOobFill oob_fill = kTmaOobFillZero, const char** why = nullptr) {
  auto bad = [&](const char* w) {
    if (why) *why = w;
    return 1;
  };
  static const PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    const bool ok = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found) == cudaSuccess &&
                    found == cudaDriverEntryPointSuccess;
    return ok ? reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn) : nullptr;
  }();
  if (!encode) return bad("the CUDA driver has no cuTensorMapEncodeTiled (a CUDA 12 driver or newer is needed)");
  CUtensorMapDataType type;
  switch (elem_bytes) {
    case 1: type = CU_TENSOR_MAP_DATA_TYPE_UINT8; break;
    case 2: type = CU_TENSOR_MAP_DATA_TYPE_UINT16; break;
    case 4: type = CU_TENSOR_MAP_DATA_TYPE_UINT32; break;
    case 8: type = CU_TENSOR_MAP_DATA_TYPE_UINT64; break;
    default: return bad("element size must be 1, 2, 4 or 8 bytes");
  }
  const cuuint32_t element_strides[5] = {1, 1, 1, 1, 1};
  const CUresult r = encode(reinterpret_cast<CUtensorMap*>(map), type, rank, const_cast<void*>(global_address),
                            reinterpret_cast<const cuuint64_t*>(global_dims), reinterpret_cast<const cuuint64_t*>(global_strides),
                            reinterpret_cast<const cuuint32_t*>(box_dims), element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                            static_cast<CUtensorMapSwizzle>(swizzle), CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                            static_cast<CUtensorMapFloatOOBfill>(oob_fill));
  return r == CUDA_SUCCESS ? 0 : bad("cuTensorMapEncodeTiled refused the map (alignment, strides, box or swizzle)");
}

#if SIMT_SM90
#define SIMT_TMA_BODY(dims, coords, ...)                                                                         \
  asm volatile("cp.async.bulk.tensor." dims ".shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {" \
               coords "}], [%2];\n" ::"r"(smem_addr(dst)), "l"(map), "r"(smem_addr(bar)), __VA_ARGS__         \
               : "memory")
#else
#define SIMT_TMA_BODY(dims, coords, ...) simt_trap()
#endif
SIMT_HOPPER_FN void cp_async_bulk_tensor_1d_g2s(void* dst, const TensorMap* map, int32_t c0, uint64_t* bar) {
  SIMT_TMA_BODY("1d", "%3", "r"(c0));
}
SIMT_HOPPER_FN void cp_async_bulk_tensor_2d_g2s(void* dst, const TensorMap* map, int32_t c0, int32_t c1, uint64_t* bar) {
  SIMT_TMA_BODY("2d", "%3, %4", "r"(c0), "r"(c1));
}
SIMT_HOPPER_FN void cp_async_bulk_tensor_3d_g2s(void* dst, const TensorMap* map, int32_t c0, int32_t c1, int32_t c2, uint64_t* bar) {
  SIMT_TMA_BODY("3d", "%3, %4, %5", "r"(c0), "r"(c1), "r"(c2));
}
SIMT_HOPPER_FN void cp_async_bulk_tensor_4d_g2s(void* dst, const TensorMap* map, int32_t c0, int32_t c1, int32_t c2, int32_t c3,
                                                uint64_t* bar) {
  SIMT_TMA_BODY("4d", "%3, %4, %5, %6", "r"(c0), "r"(c1), "r"(c2), "r"(c3));
}
SIMT_HOPPER_FN void cp_async_bulk_tensor_5d_g2s(void* dst, const TensorMap* map, int32_t c0, int32_t c1, int32_t c2, int32_t c3,
                                                int32_t c4, uint64_t* bar) {
  SIMT_TMA_BODY("5d", "%3, %4, %5, %6, %7", "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(c4));
}
#undef SIMT_TMA_BODY
SIMT_HOPPER_FN void cp_async_bulk_g2s(void* smem_dst, const void* gmem_src, uint32_t bytes, uint64_t* bar) {
#if SIMT_SM90
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(smem_addr(smem_dst)),
               "l"(gmem_src), "r"(bytes), "r"(smem_addr(bar))
               : "memory");
#else
  simt_trap();
#endif
}

// ---- wgmma
SIMT_HOPPER_FN uint64_t make_wgmma_desc(const void* smem, uint32_t lbo_bytes, uint32_t sbo_bytes, int swizzle_mode) {
#if SIMT_SM90
  return encode_wgmma_desc(smem_addr(smem), lbo_bytes, sbo_bytes, swizzle_mode);
#else
  simt_trap();
  return 0;
#endif
}
SIMT_HOPPER_FN void wgmma_fence() {
#if SIMT_SM90A
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#else
  simt_trap();
#endif
}
SIMT_HOPPER_FN void wgmma_commit_group() {
#if SIMT_SM90A
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#else
  simt_trap();
#endif
}
template <int N>
SIMT_HOPPER_FN void wgmma_wait_group() {
  static_assert(N >= 0, "wgmma.wait_group N needs N >= 0");
#if SIMT_SM90A
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#else
  simt_trap();
#endif
}
template <int R>
SIMT_HOPPER_FN void wgmma_fence_operand(float (&d)[R]) {
#pragma unroll
  for (int i = 0; i < R; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

namespace hopper {
template <int N>
struct Wgmma;  // m64nNk16 for the N below (scripts/gen-wgmma.mjs)
#if SIMT_SM90A
// ---- begin: generated by scripts/gen-wgmma.mjs (do not edit by hand)
#define SIMT_WGMMA_N8(KIND)                                                                         \
  asm volatile(                                                                                     \
      "{\n.reg .pred p;\n"                                                                          \
      "setp.ne.b32 p, %6, 0;\n"                                                                     \
      "wgmma.mma_async.sync.aligned.m64n8k16.f32." KIND "." KIND " {"                               \
      "%0, %1, %2, %3"                                                                              \
      "}, %4, %5, p, %7, %8, %9, %10;\n}\n"                                                         \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                                              \
      : "l"(desc_a), "l"(desc_b), "r"(scale_d), "n"(ScaleA), "n"(ScaleB), "n"(TransA), "n"(TransB))
template <> struct Wgmma<8> {
  template <bool F16, int ScaleA, int ScaleB, int TransA, int TransB>
  static __device__ __forceinline__ void run(float (&d)[4], uint64_t desc_a, uint64_t desc_b, uint32_t scale_d) {
    if constexpr (F16) SIMT_WGMMA_N8("f16");
    else SIMT_WGMMA_N8("bf16");
  }
};
#undef SIMT_WGMMA_N8
#define SIMT_WGMMA_N16(KIND)                                                                        \
  asm volatile(                                                                                     \
      "{\n.reg .pred p;\n"                                                                          \
      "setp.ne.b32 p, %10, 0;\n"                                                                    \
      "wgmma.mma_async.sync.aligned.m64n16k16.f32." KIND "." KIND " {"                              \
      "%0, %1, %2, %3, %4, %5, %6, %7"                                                              \
      "}, %8, %9, p, %11, %12, %13, %14;\n}\n"                                                      \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]),                                             \
        "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])                                              \
      : "l"(desc_a), "l"(desc_b), "r"(scale_d), "n"(ScaleA), "n"(ScaleB), "n"(TransA), "n"(TransB))
template <> struct Wgmma<16> {
  template <bool F16, int ScaleA, int ScaleB, int TransA, int TransB>
  static __device__ __forceinline__ void run(float (&d)[8], uint64_t desc_a, uint64_t desc_b, uint32_t scale_d) {
    if constexpr (F16) SIMT_WGMMA_N16("f16");
    else SIMT_WGMMA_N16("bf16");
  }
};
#undef SIMT_WGMMA_N16
#define SIMT_WGMMA_N24(KIND)                                                                        \
  asm volatile(                                                                                     \
      "{\n.reg .pred p;\n"                                                                          \
      "setp.ne.b32 p, %14, 0;\n"                                                                    \
      "wgmma.mma_async.sync.aligned.m64n24k16.f32." KIND "." KIND " {"                              \
      "%0, %1, %2, %3, %4, %5, %6, %7, "                                                            \
      "%8, %9, %10, %11"                                                                            \
      "}, %12, %13, p, %15, %16, %17, %18;\n}\n"                                                    \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]),                                             \
        "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),                                             \
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11])                                            \
      : "l"(desc_a), "l"(desc_b), "r"(scale_d), "n"(ScaleA), "n"(ScaleB), "n"(TransA), "n"(TransB))
template <> struct Wgmma<24> {
  template <bool F16, int ScaleA, int ScaleB, int TransA, int TransB>
  static __device__ __forceinline__ void run(float (&d)[12], uint64_t desc_a, uint64_t desc_b, uint32_t scale_d) {
    if constexpr (F16) SIMT_WGMMA_N24("f16");
    else SIMT_WGMMA_N24("bf16");
  }
};
#undef SIMT_WGMMA_N24
#define SIMT_WGMMA_N32(KIND)                                                                        \
  asm volatile(                                                                                     \
      "{\n.reg .pred p;\n"                                                                          \
      "setp.ne.b32 p, %18, 0;\n"                                                                    \
      "wgmma.mma_async.sync.aligned.m64n32k16.f32." KIND "." KIND " {"                              \
      "%0, %1, %2, %3, %4, %5, %6, %7, "                                                            \
      "%8, %9, %10, %11, %12, %13, %14, %15"                                                        \
      "}, %16, %17, p, %19, %20, %21, %22;\n}\n"                                                    \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]),                                             \
        "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),                                             \
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),                                           \
        "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])                                          \
      : "l"(desc_a), "l"(desc_b), "r"(scale_d), "n"(ScaleA), "n"(ScaleB), "n"(TransA), "n"(TransB))
template <> struct Wgmma<32> {
  template <bool F16, int ScaleA, int ScaleB, int TransA, int TransB>
  static __device__ __forceinline__ void run(float (&d)[16], uint64_t desc_a, uint64_t desc_b, uint32_t scale_d) {
    if constexpr (F16) SIMT_WGMMA_N32("f16");
    else SIMT_WGMMA_N32("bf16");
  }
};
#undef SIMT_WGMMA_N32
#define SIMT_WGMMA_N48(KIND)                                                                        \
  asm volatile(                                                                                     \
      "{\n.reg .pred p;\n"                                                                          \
      "setp.ne.b32 p, %26, 0;\n"                                                                    \
      "wgmma.mma_async.sync.aligned.m64n48k16.f32." KIND "." KIND " {"                              \
      "%0, %1, %2, %3, %4, %5, %6, %7, "                                                            \
      "%8, %9, %10, %11, %12, %13, %14, %15, "                                                      \
      "%16, %17, %18, %19, %20, %21, %22, %23"                                                      \
      "}, %24, %25, p, %27, %28, %29, %30;\n}\n"                                                    \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]),                                             \
        "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),                                             \
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),                                           \
        "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),                                         \
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]),                                         \
        "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23])                                          \
      : "l"(desc_a), "l"(desc_b), "r"(scale_d), "n"(ScaleA), "n"(ScaleB), "n"(TransA), "n"(TransB))
template <> struct Wgmma<48> {
  template <bool F16, int ScaleA, int ScaleB, int TransA, int TransB>
  static __device__ __forceinline__ void run(float (&d)[24], uint64_t desc_a, uint64_t desc_b, uint32_t scale_d) {
    if constexpr (F16) SIMT_WGMMA_N48("f16");
    else SIMT_WGMMA_N48("bf16");
  }
};
#undef SIMT_WGMMA_N48
#define SIMT_WGMMA_N64(KIND)                                                                        \
  asm volatile(                                                                                     \
      "{\n.reg .pred p;\n"                                                                          \
      "setp.ne.b32 p, %34, 0;\n"                                                                    \
      "wgmma.mma_async.sync.aligned.m64n64k16.f32." KIND "." KIND " {"                              \
      "%0, %1, %2, %3, %4, %5, %6, %7, "                                                            \
      "%8, %9, %10, %11, %12, %13, %14, %15, "                                                      \
      "%16, %17, %18, %19, %20, %21, %22, %23, "                                                    \
      "%24, %25, %26, %27, %28, %29, %30, %31"                                                      \
      "}, %32, %33, p, %35, %36, %37, %38;\n}\n"                                                    \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]),                                             \
        "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),                                             \
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),                                           \
        "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),                                         \
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]),                                         \
        "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),                                         \
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),                                         \
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])                                          \
      : "l"(desc_a), "l"(desc_b), "r"(scale_d), "n"(ScaleA), "n"(ScaleB), "n"(TransA), "n"(TransB))
template <> struct Wgmma<64> {
  template <bool F16, int ScaleA, int ScaleB, int TransA, int TransB>
  static __device__ __forceinline__ void run(float (&d)[32], uint64_t desc_a, uint64_t desc_b, uint32_t scale_d) {
    if constexpr (F16) SIMT_WGMMA_N64("f16");
    else SIMT_WGMMA_N64("bf16");
  }
};
#undef SIMT_WGMMA_N64
#define SIMT_WGMMA_N96(KIND)                                                                        \
  asm volatile(                                                                                     \
      "{\n.reg .pred p;\n"                                                                          \
      "setp.ne.b32 p, %50, 0;\n"                                                                    \
      "wgmma.mma_async.sync.aligned.m64n96k16.f32." KIND "." KIND " {"                              \
      "%0, %1, %2, %3, %4, %5, %6, %7, "                                                            \
      "%8, %9, %10, %11, %12, %13, %14, %15, "                                                      \
      "%16, %17, %18, %19, %20, %21, %22, %23, "                                                    \
      "%24, %25, %26, %27, %28, %29, %30, %31, "                                                    \
      "%32, %33, %34, %35, %36, %37, %38, %39, "                                                    \
      "%40, %41, %42, %43, %44, %45, %46, %47"                                                      \
      "}, %48, %49, p, %51, %52, %53, %54;\n}\n"                                                    \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]),                                             \
        "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),                                             \
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),                                           \
        "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),                                         \
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]),                                         \
        "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),                                         \
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),                                         \
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),                                         \
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]),                                         \
        "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),                                         \
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]),                                         \
        "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47])                                          \
      : "l"(desc_a), "l"(desc_b), "r"(scale_d), "n"(ScaleA), "n"(ScaleB), "n"(TransA), "n"(TransB))
template <> struct Wgmma<96> {
  template <bool F16, int ScaleA, int ScaleB, int TransA, int TransB>
  static __device__ __forceinline__ void run(float (&d)[48], uint64_t desc_a, uint64_t desc_b, uint32_t scale_d) {
    if constexpr (F16) SIMT_WGMMA_N96("f16");
    else SIMT_WGMMA_N96("bf16");
  }
};
#undef SIMT_WGMMA_N96
#define SIMT_WGMMA_N128(KIND)                                                                       \
  asm volatile(                                                                                     \
      "{\n.reg .pred p;\n"                                                                          \
      "setp.ne.b32 p, %66, 0;\n"                                                                    \
      "wgmma.mma_async.sync.aligned.m64n128k16.f32." KIND "." KIND " {"                             \
      "%0, %1, %2, %3, %4, %5, %6, %7, "                                                            \
      "%8, %9, %10, %11, %12, %13, %14, %15, "                                                      \
      "%16, %17, %18, %19, %20, %21, %22, %23, "                                                    \
      "%24, %25, %26, %27, %28, %29, %30, %31, "                                                    \
      "%32, %33, %34, %35, %36, %37, %38, %39, "                                                    \
      "%40, %41, %42, %43, %44, %45, %46, %47, "                                                    \
      "%48, %49, %50, %51, %52, %53, %54, %55, "                                                    \
      "%56, %57, %58, %59, %60, %61, %62, %63"                                                      \
      "}, %64, %65, p, %67, %68, %69, %70;\n}\n"                                                    \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]),                                             \
        "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),                                             \
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),                                           \
        "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),                                         \
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]),                                         \
        "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),                                         \
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),                                         \
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),                                         \
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]),                                         \
        "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),                                         \
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]),                                         \
        "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),                                         \
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]),                                         \
        "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),                                         \
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]),                                         \
        "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])                                          \
      : "l"(desc_a), "l"(desc_b), "r"(scale_d), "n"(ScaleA), "n"(ScaleB), "n"(TransA), "n"(TransB))
template <> struct Wgmma<128> {
  template <bool F16, int ScaleA, int ScaleB, int TransA, int TransB>
  static __device__ __forceinline__ void run(float (&d)[64], uint64_t desc_a, uint64_t desc_b, uint32_t scale_d) {
    if constexpr (F16) SIMT_WGMMA_N128("f16");
    else SIMT_WGMMA_N128("bf16");
  }
};
#undef SIMT_WGMMA_N128
#define SIMT_WGMMA_N192(KIND)                                                                       \
  asm volatile(                                                                                     \
      "{\n.reg .pred p;\n"                                                                          \
      "setp.ne.b32 p, %98, 0;\n"                                                                    \
      "wgmma.mma_async.sync.aligned.m64n192k16.f32." KIND "." KIND " {"                             \
      "%0, %1, %2, %3, %4, %5, %6, %7, "                                                            \
      "%8, %9, %10, %11, %12, %13, %14, %15, "                                                      \
      "%16, %17, %18, %19, %20, %21, %22, %23, "                                                    \
      "%24, %25, %26, %27, %28, %29, %30, %31, "                                                    \
      "%32, %33, %34, %35, %36, %37, %38, %39, "                                                    \
      "%40, %41, %42, %43, %44, %45, %46, %47, "                                                    \
      "%48, %49, %50, %51, %52, %53, %54, %55, "                                                    \
      "%56, %57, %58, %59, %60, %61, %62, %63, "                                                    \
      "%64, %65, %66, %67, %68, %69, %70, %71, "                                                    \
      "%72, %73, %74, %75, %76, %77, %78, %79, "                                                    \
      "%80, %81, %82, %83, %84, %85, %86, %87, "                                                    \
      "%88, %89, %90, %91, %92, %93, %94, %95"                                                      \
      "}, %96, %97, p, %99, %100, %101, %102;\n}\n"                                                 \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]),                                             \
        "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),                                             \
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),                                           \
        "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),                                         \
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]),                                         \
        "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),                                         \
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),                                         \
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),                                         \
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]),                                         \
        "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),                                         \
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]),                                         \
        "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),                                         \
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]),                                         \
        "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),                                         \
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]),                                         \
        "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),                                         \
        "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]),                                         \
        "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),                                         \
        "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]),                                         \
        "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),                                         \
        "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]),                                         \
        "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),                                         \
        "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]),                                         \
        "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95])                                          \
      : "l"(desc_a), "l"(desc_b), "r"(scale_d), "n"(ScaleA), "n"(ScaleB), "n"(TransA), "n"(TransB))
template <> struct Wgmma<192> {
  template <bool F16, int ScaleA, int ScaleB, int TransA, int TransB>
  static __device__ __forceinline__ void run(float (&d)[96], uint64_t desc_a, uint64_t desc_b, uint32_t scale_d) {
    if constexpr (F16) SIMT_WGMMA_N192("f16");
    else SIMT_WGMMA_N192("bf16");
  }
};
#undef SIMT_WGMMA_N192
#define SIMT_WGMMA_N256(KIND)                                                                       \
  asm volatile(                                                                                     \
      "{\n.reg .pred p;\n"                                                                          \
      "setp.ne.b32 p, %130, 0;\n"                                                                   \
      "wgmma.mma_async.sync.aligned.m64n256k16.f32." KIND "." KIND " {"                             \
      "%0, %1, %2, %3, %4, %5, %6, %7, "                                                            \
      "%8, %9, %10, %11, %12, %13, %14, %15, "                                                      \
      "%16, %17, %18, %19, %20, %21, %22, %23, "                                                    \
      "%24, %25, %26, %27, %28, %29, %30, %31, "                                                    \
      "%32, %33, %34, %35, %36, %37, %38, %39, "                                                    \
      "%40, %41, %42, %43, %44, %45, %46, %47, "                                                    \
      "%48, %49, %50, %51, %52, %53, %54, %55, "                                                    \
      "%56, %57, %58, %59, %60, %61, %62, %63, "                                                    \
      "%64, %65, %66, %67, %68, %69, %70, %71, "                                                    \
      "%72, %73, %74, %75, %76, %77, %78, %79, "                                                    \
      "%80, %81, %82, %83, %84, %85, %86, %87, "                                                    \
      "%88, %89, %90, %91, %92, %93, %94, %95, "                                                    \
      "%96, %97, %98, %99, %100, %101, %102, %103, "                                                \
      "%104, %105, %106, %107, %108, %109, %110, %111, "                                            \
      "%112, %113, %114, %115, %116, %117, %118, %119, "                                            \
      "%120, %121, %122, %123, %124, %125, %126, %127"                                              \
      "}, %128, %129, p, %131, %132, %133, %134;\n}\n"                                              \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]),                                             \
        "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),                                             \
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),                                           \
        "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),                                         \
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]),                                         \
        "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),                                         \
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),                                         \
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),                                         \
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]),                                         \
        "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),                                         \
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]),                                         \
        "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),                                         \
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]),                                         \
        "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),                                         \
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]),                                         \
        "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),                                         \
        "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]),                                         \
        "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),                                         \
        "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]),                                         \
        "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),                                         \
        "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]),                                         \
        "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),                                         \
        "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]),                                         \
        "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),                                         \
        "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]),                                         \
        "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),                                     \
        "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]),                                     \
        "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),                                     \
        "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]),                                     \
        "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),                                     \
        "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]),                                     \
        "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])                                      \
      : "l"(desc_a), "l"(desc_b), "r"(scale_d), "n"(ScaleA), "n"(ScaleB), "n"(TransA), "n"(TransB))
template <> struct Wgmma<256> {
  template <bool F16, int ScaleA, int ScaleB, int TransA, int TransB>
  static __device__ __forceinline__ void run(float (&d)[128], uint64_t desc_a, uint64_t desc_b, uint32_t scale_d) {
    if constexpr (F16) SIMT_WGMMA_N256("f16");
    else SIMT_WGMMA_N256("bf16");
  }
};
#undef SIMT_WGMMA_N256
// ---- end: generated by scripts/gen-wgmma.mjs
#endif
}  // namespace hopper

template <int N, bool TransA = false, bool TransB = false, int ScaleA = 1, int ScaleB = 1>
SIMT_HOPPER_FN void wgmma_m64k16_f32_bf16(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, bool scale_d) {
#if SIMT_SM90A
  hopper::Wgmma<N>::template run<false, ScaleA, ScaleB, TransA, TransB>(d, desc_a, desc_b, scale_d ? 1u : 0u);
#else
  simt_trap();
#endif
}
template <int N, bool TransA = false, bool TransB = false, int ScaleA = 1, int ScaleB = 1>
SIMT_HOPPER_FN void wgmma_m64k16_f32_f16(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, bool scale_d) {
#if SIMT_SM90A
  hopper::Wgmma<N>::template run<true, ScaleA, ScaleB, TransA, TransB>(d, desc_a, desc_b, scale_d ? 1u : 0u);
#else
  simt_trap();
#endif
}

// setmaxnreg (sm_90a): the producer warpgroup gives registers back, the consumers take them.
template <int N>
SIMT_HOPPER_FN void setmaxnreg_inc() {
  static_assert(N >= 24 && N <= 256 && N % 8 == 0, "setmaxnreg: 24..256, a multiple of 8");
#if SIMT_SM90A
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
#else
  simt_trap();
#endif
}
template <int N>
SIMT_HOPPER_FN void setmaxnreg_dec() {
  static_assert(N >= 24 && N <= 256 && N % 8 == 0, "setmaxnreg: 24..256, a multiple of 8");
#if SIMT_SM90A
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
#else
  simt_trap();
#endif
}

}  // namespace ptx
#undef SIMT_HOPPER_FN
#undef SIMT_SM90
#undef SIMT_SM90A
#endif  // SIMT_EMU
#undef SIMT_HOPPER_HD
