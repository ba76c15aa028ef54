// simt_hopper.h — the sm_90 asynchronous data path under the emulator: mbarrier, TMA
// (cp.async.bulk.tensor 1-5-D and cp.async.bulk global → shared with mbarrier::complete_tx),
// fence.proxy.async and wgmma.mma_async (m64nNk16, bf16 / f16 → f32, both operands from shared
// memory descriptors). Included at the end of simt_ptx.h.
//
// EMULATOR ONLY for now: the nvcc twins (inline PTX, which the subset only allows in simt_ptx.h)
// are not written yet, so under nvcc this header declares nothing and kernels cannot use these
// wrappers in the shipped build. The emulator also still reports SIMT_CUDA_ARCH 800.
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
//   * TMA / bulk copies read the global source when issued (an out-of-bounds read is an ASan report
//     on the issuing line) and build the destination image then (box element order, the swizzle
//     XOR on the shared address, zeros outside the tensor, negative coordinates included), but the
//     bytes land in shared memory, and the mbarrier gets its complete_tx, only when a thread of the
//     block waits (try_wait / test_wait) on that mbarrier while the phase is not complete: the latest
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
// Wakes the threads blocked on bar (its phase changed).
inline void wake(const uint64_t* bar) {
#if defined(SIMT_EMU_BACKEND_THREADS)
  (void)bar;
  cv().notify_all();
#else
  for (unsigned i = 0; i < simt::blk->L->nthreads; ++i) {
    simt::Thread& t = simt::blk->threads[i];
    if (t.state == simt::kAtMbarrier && t.mbar_wait == bar) {
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
    else v[keep++] = std::move(v[i]);
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

// ------------------------------------------------------------------------------ TMA
// What cuTensorMapEncodeTiled encodes (interleave none, element strides 1, L2 promotion and
// cache hints ignored). 128 bytes, 64-byte aligned, like CUtensorMap; pass it to the kernel as a
// (__grid_constant__) parameter or keep it in global memory.
enum TmaSwizzle : uint32_t { kTmaSwizzleNone = 0, kTmaSwizzle32B = 1, kTmaSwizzle64B = 2, kTmaSwizzle128B = 3 };
enum TmaOobFill : uint32_t { kTmaOobFillZero = 0, kTmaOobFillNanRequestZeroFma = 1 };
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
inline void bulk_issue(uint64_t* bar, unsigned char* dst, std::vector<unsigned char>&& bytes) {
  auto g = lock();
  decode(bar, "cp.async.bulk: its mbarrier");
  simt::blk->bulk.push_back({bar, dst, std::move(bytes)});
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
// Shared-memory matrix descriptor (PTX ISA "Matrix Descriptor Format"): bits 0-13 start address
// >> 4, 16-29 leading-dimension byte offset >> 4, 32-45 stride-dimension byte offset >> 4, 49-51
// base offset, 62-63 swizzle mode (0 none, 1 128B, 2 64B, 3 32B).
struct WgmmaDesc {
  uint32_t start, lbo, sbo, base;
  int mode;
};
inline WgmmaDesc decode_wgmma_desc(uint64_t d) {
  return {static_cast<uint32_t>(d & 0x3fff) << 4, static_cast<uint32_t>(d >> 16 & 0x3fff) << 4,
          static_cast<uint32_t>(d >> 32 & 0x3fff) << 4, static_cast<uint32_t>(d >> 49 & 7), static_cast<int>(d >> 62)};
}
inline uint64_t encode_wgmma_desc(uint32_t start_addr, uint32_t lbo_bytes, uint32_t sbo_bytes, int swizzle_mode, uint32_t base_offset = 0) {
  return (uint64_t(start_addr >> 4) & 0x3fff) | (uint64_t(lbo_bytes >> 4) & 0x3fff) << 16 | (uint64_t(sbo_bytes >> 4) & 0x3fff) << 32 |
         uint64_t(base_offset & 7) << 49 | uint64_t(swizzle_mode & 3) << 62;
}
// A descriptor for a tile at smem (in dynamic shared memory; its shared-window address).
inline uint64_t make_wgmma_desc(const void* smem, uint32_t lbo_bytes, uint32_t sbo_bytes, int swizzle_mode) {
  return encode_wgmma_desc(hopper::window_addr(smem, 16, "ptx::make_wgmma_desc"), lbo_bytes, sbo_bytes, swizzle_mode);
}
inline int wgmma_row_bytes(int mode) { return mode == 1 ? 128 : mode == 2 ? 64 : mode == 3 ? 32 : 0; }
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

enum WgKind : uint8_t { kWgBf16, kWgF16 };

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
template <int N, bool TransA = false, bool TransB = false>
inline void wgmma_m64k16_f32_bf16(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, bool scale_d, int scale_a = 1, int scale_b = 1) {
  hopper::wg_issue<N>(d, desc_a, desc_b, scale_d, TransA, TransB, scale_a, scale_b, kWgBf16);
}
template <int N, bool TransA = false, bool TransB = false>
inline void wgmma_m64k16_f32_f16(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, bool scale_d, int scale_a = 1, int scale_b = 1) {
  hopper::wg_issue<N>(d, desc_a, desc_b, scale_d, TransA, TransB, scale_a, scale_b, kWgF16);
}

}  // namespace ptx
#endif  // SIMT_EMU
