// Flash-LoRA-Attention forward on Hopper (sm_90a): FA3-style, TMA + wgmma, warp-specialized. The
// math, the CTA's rows (ρ = i·G + h − g·G of KV head g's GQA group) and the results are those of
// the FA2-style kernels (cuda/flash_lora.cu); the work moves to Hopper's asynchronous units.
//
// A CTA is 3 warpgroups (384 threads) on 128 rows of one (sequence b, KV head g):
//   * before the split, all threads stage Q and the adapter's B factors (k_lora_b[ℓ, g],
//     v_lora_b[ℓ, g], ranks padded to 64 with zeros) in 128B-swizzled shared tiles: each is read
//     once per CTA, by any stride and GQA packing, so plain loads serve them;
//   * warpgroup 0, the producer (D = 128: setmaxnreg.dec 40): one thread streams the key tiles. Per tile of
//     64 keys it waits for the consumers to free a stage (`empty`), arms `full` with the tile's
//     bytes (arrive.expect_tx) and issues the TMA copies: K and V as 64-wide d boxes of 64 keys
//     (4-D maps over [B, Sk, Hk, D]), and with an adapter the low-rank caches' tiles (3-D maps over
//     [B, Sk, r], one 64-wide box: ranks past r and keys past Sk arrive as zeros);
//   * warpgroups 1 and 2, the consumers (D = 128: setmaxnreg.inc 232): consumer c owns rows 64c … 64c + 63.
//     Once: Qr = Q·k_lora_bᵀ (wgmma from the staged tiles), kept as hi + lo in shared memory. Per
//     tile j: S_j = Q·Kᵀ + (Qr_hi + Qr_lo)·k_low_rankᵀ as wgmma m64n64k16 from shared-memory
//     descriptors, then the previous tile's O += P·V (m64nDk16, V MN-major through the transpose
//     bit) and O_r += P·v_low_rank (m64nRBk16); wait_group 1 retires S_j alone, and its online
//     softmax (on the D fragment: a thread holds 2 rows × 16 keys, a quad a whole row, mma.sync's
//     C layout, so the masks and row reductions are FA2's) runs while that P·V is on the tensor
//     cores (FA3's intra-warpgroup pipelining); P_j goes in the dtype to a 128B-swizzled tile
//     (double-buffered: one warpgroup barrier per tile); wait_group 0, O rescaled, the previous
//     stage back to the producer. The consumers issue their products in turns (FA3's ping-pong:
//     named barriers 1 and 2), so one's softmax runs while the other's S and P·V occupy the
//     tensor cores.
//   * finish: out = O/l + (O_r/l)_hi·v_lora_b + (O_r/l)_lo·v_lora_b (one more wgmma, O_r/l through
//     the Qr tile), lse = (m + log2 l)·ln 2; a row that saw no key: 0 and −∞.
// Descriptors (128B swizzle: rows of 128 bytes, 8-row atoms of 1 KiB; SBO 1024), as in the GEMM's
// wgmma mainloop (cuda/gemm_wgmma.cu): K-major operands (Q, K, Qr, k_low_rank, P, k_lora_b) step
// 32 bytes per k-step inside a 64-wide box, a whole box past it; MN-major ones (V, v_low_rank,
// v_lora_b) step 2048 bytes (16 k-rows), LBO = one box (64 k-rows · 128 B) to the next 64 columns.
// The low-rank products run at the padded rank RB = 16 (ranks ≤ 16) or 64 (≤ 64): the caches'
// boxes and the factor tiles are 64 wide, zeros past the rank.
//
// Shared memory (bytes, 16-bit, D = 128): Q 128·256 = 32 Ki, Qr hi + lo 2·128·128 = 32 Ki, P
// 2·128·128 = 32 Ki, the factors 2·64·256 = 32 Ki, two stages of K + V + both low-rank tiles
// 2·(16 + 16 + 8 + 8) = 96 Ki: 224 KiB of the 227 a block may opt into (D = 64: 160 KiB).
// Napkin math (bf16, D = 128, Sq = Sk = 4096, causal, 32 heads, r = 16 on both paths, H200): the
// base products are 4·32·4096²·128/2 = 137 GFLOP (~0.23 ms at FA3's ~600 TFLOP/s; cuDNN's SDPA
// takes 0.34 ms); per 64-key tile a consumer issues 2·1.05 MFLOP of them and, at RB = 16,
// 0.26 (Qr·k_low_rankᵀ, hi + lo) + 0.13 (P·v_low_rank) MFLOP of low-rank ones: +19% of tensor-core
// issue, against the peer's expand of the cache (written and read again) before its SDPA. ptxas
// (nvcc 13): 168 registers at D = 128 (the cap of 384 threads), 112-135 at D = 64, no spills.
#include <algorithm>
#include <cstring>
#include <string>
#include <type_traits>

#include "common.cuh"
#include "flash_lora_common.cuh"
#include "flash_lora_forward.cuh"

namespace lk::cuda_ops::flash_lora {

// 128 rows (2 consumers × 64), 64 keys per tile; the factor tiles and the low-rank caches' boxes are
// 64 ranks wide (= kBN: every MN-major operand's box is 64 k-rows, its LBO 8 KiB).
constexpr int kBM = 128, kBN = 64, kRankBox = 64, kStages = 2, kThreadsWg = 384;
static_assert(kRankBox == kBN, "one LBO for every MN-major operand");

// Byte offsets of the shared regions (every one 1 KiB-aligned: the 128B swizzle's atom).
template <int D>
struct WgmmaSmem {
  static constexpr int Q = 0;                              // [D/64][128 rows][128 B]
  static constexpr int QR = Q + D * kBM * 2;               // [hi, lo][128 rows][128 B]
  static constexpr int P = QR + 2 * kBM * 128;             // [2 buffers][128 rows][128 B]
  static constexpr int KLB = P + 2 * kBM * 128;            // [D/64][64 ranks][128 B], K-major B of Qr
  static constexpr int VLB = KLB + D * kRankBox * 2;       // [D/64][64 ranks][128 B], MN-major B of the finish
  static constexpr int STAGE0 = VLB + D * kRankBox * 2;
  static constexpr int K_OFF = 0, V_OFF = D * kBN * 2;     // per stage: K [D/64][64 keys][128 B], V likewise
  static constexpr int KR_OFF = 2 * D * kBN * 2, VR_OFF = KR_OFF + kBN * 128;
  static constexpr int STAGE_BYTES = VR_OFF + kBN * 128;
  static constexpr int BARRIERS = STAGE0 + kStages * STAGE_BYTES;  // full[2], empty[2], consumer[2]
  static constexpr int BYTES = BARRIERS + 6 * 8;
};
static_assert(WgmmaSmem<128>::BYTES <= 227 * 1024, "the D = 128 plan fits an H100/H200 block");

struct WgmmaMaps {
  ptx::TensorMap k, v, kr, vr;
};

#if defined(SIMT_DEVICE_PATH) && defined(LK_WGMMA_MAINLOOP)
namespace {

// Named barriers 1 and 2: the consumers' turns (0 is __syncthreads()'s). The id is the consumer's,
// known at run time, so ptxas reserves all 16 of the CTA's barriers (one CTA per SM here anyway).
constexpr uint32_t kTurnBarrier = 1;

// Byte offset of 16-byte chunk `chunk` (0 … 7) of row r in a 128B-swizzled tile of 128-byte rows.
__device__ __forceinline__ int swizzled(int r, int chunk) { return r * 128 + ((chunk ^ (r & 7)) << 4); }

// rows × cols (a multiple of 64) of a row-major operand into [cols/64][rows][128 B], swizzled:
// row r's first element at src(r) (null: a row of zeros). Once per CTA, any stride: element loads.
template <class S, class Src>
__device__ __forceinline__ void stage_swizzled(unsigned char* tile, int rows, int cols, Src src, int tid, int nthreads) {
  const int chunks = cols / 8;
  for (int e = tid; e < rows * chunks; e += nthreads) {
    const int r = e / chunks, c = e % chunks;
    const S* row = src(r);
    S v[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = row ? row[c * 8 + i] : S(0);
    std::memcpy(tile + (c / 8) * rows * 128 + swizzled(r, c % 8), v, 16);
  }
}

// The D fragment's registers i, i + 1 (i even) as a 16-bit pair into a K-major swizzled tile:
// row 16·warp + g + 8·((i >> 1) & 1) of the consumer's 64, columns 8·(i >> 2) + 2q, + 1.
__device__ __forceinline__ void put_pair(unsigned char* tile, int warp, int lane, int i, uint32_t pair) {
  const int row = 16 * warp + lane / 4 + 8 * ((i >> 1) & 1);
  *reinterpret_cast<uint32_t*>(tile + swizzled(row, i >> 2) + 4 * (lane % 4)) = pair;
}

// A 64 × N D fragment, its rows scaled (scale[half]: rows g and g + 8), as hi + lo 16-bit halves
// into two K-major swizzled tiles: the A operand of a product that keeps ~float32 accuracy.
template <class E, int N>
__device__ __forceinline__ void put_split(unsigned char* hi_tile, unsigned char* lo_tile, int warp, int lane, const float (&v)[N / 2],
                                          const float (&scale)[2]) {
#pragma unroll
  for (int i = 0; i < N / 2; i += 2) {
    uint32_t hi, lo;
    split_pack<E>(v[i] * scale[(i >> 1) & 1], v[i + 1] * scale[(i >> 1) & 1], hi, lo);
    put_pair(hi_tile, warp, lane, i, hi);
    put_pair(lo_tile, warp, lane, i, lo);
  }
}

template <class E, int N, bool TransB>
__device__ __forceinline__ void mma_async(float (&acc)[N / 2], uint64_t da, uint64_t db) {
  if constexpr (std::is_same_v<E, BF16>) ptx::wgmma_m64k16_f32_bf16<N, false, TransB>(acc, da, db, true);
  else ptx::wgmma_m64k16_f32_f16<N, false, TransB>(acc, da, db, true);
}
__device__ __forceinline__ uint64_t k_major(const unsigned char* tile) { return ptx::make_wgmma_desc(tile, 16, 1024, 1); }
__device__ __forceinline__ uint64_t mn_major(const unsigned char* tile) { return ptx::make_wgmma_desc(tile, kRankBox * 128, 1024, 1); }

// acc = Q·Xᵀ, issued (not committed): Q the consumer's 64 rows of the [D/64][128 rows][128 B] tile,
// X K-major in [D/64][64 rows][128 B] (a K tile or k_lora_b), N of its rows.
template <class E, int N, int D>
__device__ __forceinline__ void q_times(float (&acc)[N / 2], const unsigned char* q, const unsigned char* x) {
#pragma unroll
  for (int i = 0; i < N / 2; ++i) acc[i] = 0.f;
  ptx::wgmma_fence_operand(acc);
  ptx::wgmma_fence();
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks)
    mma_async<E, N, false>(acc, k_major(q + (ks / 4) * kBM * 128 + 32 * (ks % 4)), k_major(x + (ks / 4) * 64 * 128 + 32 * (ks % 4)));
}

// acc += (hi + lo)·B over KSTEPS k-steps of 16: the A halves K-major at hi / lo, B's descriptor
// for k-step ks from b(ks).
template <class E, int N, bool TransB, int KSTEPS, class BDesc>
__device__ __forceinline__ void mma_split(float (&acc)[N / 2], const unsigned char* hi, const unsigned char* lo, BDesc b) {
#pragma unroll
  for (int ks = 0; ks < KSTEPS; ++ks) {
    const uint64_t db = b(ks);
    mma_async<E, N, TransB>(acc, k_major(hi + 32 * ks), db);
    mma_async<E, N, TransB>(acc, k_major(lo + 32 * ks), db);
  }
}

// The 4 warps of a consumer warpgroup meet: what each wrote to shared memory (made visible to the
// async proxy first) is there for the warpgroup's next wgmma. An mbarrier of 4 arrivals.
struct WarpgroupBarrier {
  uint64_t* bar;
  uint32_t phase = 0;
  __device__ __forceinline__ void sync(int lane) {
    ptx::fence_proxy_async();
    __syncwarp();
    if (lane == 0) ptx::mbarrier_arrive(bar);
    ptx::mbarrier_wait_parity(bar, phase);
    phase ^= 1;
  }
};

// LowRank: the launch has an adapter path (a.rk or a.rv); every CTA of it then runs both paths'
// products, a missing one (no such path, or a sequence without an adapter) on zero tiles: a
// conditional wgmma would make ptxas serialize the warpgroup around every one (C7519).
template <class E, int D, int RB, bool LowRank>
__device__ __forceinline__ void wgmma_forward(const FwdArgs& a, const WgmmaMaps& maps) {
  using S = typename E::storage;
  using L = WgmmaSmem<D>;
  constexpr int KN = kBN / 16, KR = RB / 16;
  SIMT_DYNAMIC_SHARED(unsigned char, smem);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + L::BARRIERS);
  uint64_t* empty = full + kStages;
  uint64_t* consumer_bar = empty + kStages;
  const Work w = work_of<kBM, kBN>(a);
  const bool key_path = LowRank && w.adapter >= 0 && a.rk > 0, value_path = LowRank && w.adapter >= 0 && a.rv > 0;
  const int hk = static_cast<int>(gridDim.y), tid = static_cast<int>(threadIdx.x);

  // Q rows ρ → q[b, ρ / G, g·G + ρ % G]; the factors' rows past the rank are zeros.
  const S* q = static_cast<const S*>(a.q) + w.b * a.q_b;
  stage_swizzled<S>(smem + L::Q, kBM, D, [&](int r) -> const S* {
    const int rho = w.row0 + r;
    if (rho >= w.rows) return nullptr;
    return q + (rho / a.group) * a.q_s + (static_cast<long long>(w.g) * a.group + rho % a.group) * a.q_h;
  }, tid, kThreadsWg);
  const auto factor = [&](const void* f, int rank) {
    const S* base = static_cast<const S*>(f) + (static_cast<long long>(w.adapter) * hk + w.g) * rank * D;
    return [=](int r) -> const S* { return r < rank ? base + static_cast<long long>(r) * D : nullptr; };
  };
  if constexpr (LowRank) {
    const auto zero = [&](int offset, int bytes) {
      for (int e = tid; e < bytes / 16; e += kThreadsWg) reinterpret_cast<uint4*>(smem + offset)[e] = make_uint4(0, 0, 0, 0);
    };
    zero(L::QR, 2 * kBM * 128);  // ranks past RB stay zero
    if (key_path) stage_swizzled<S>(smem + L::KLB, kRankBox, D, factor(a.klb, a.rk), tid, kThreadsWg);
    else zero(L::KLB, D * kRankBox * 2);
    if (value_path) stage_swizzled<S>(smem + L::VLB, kRankBox, D, factor(a.vlb, a.rv), tid, kThreadsWg);
    else zero(L::VLB, D * kRankBox * 2);
    for (int s = 0; s < kStages; ++s) {  // the caches' tiles the producer will not fill
      if (!key_path) zero(L::STAGE0 + s * L::STAGE_BYTES + L::KR_OFF, kBN * 128);
      if (!value_path) zero(L::STAGE0 + s * L::STAGE_BYTES + L::VR_OFF, kBN * 128);
    }
  }
  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      ptx::mbarrier_init(&full[s], 1);
      ptx::mbarrier_init(&empty[s], 8);  // one arrival per consumer warp
    }
    for (int c = 0; c < 2; ++c) ptx::mbarrier_init(&consumer_bar[c], 4);
    ptx::fence_mbarrier_init();
  }
  ptx::fence_proxy_async();  // the staged tiles, for wgmma
  __syncthreads();
  const int tiles = w.t_end - w.t_begin;
  const int warpgroup = tid / 128;

  // setmaxnreg where the consumers need the registers (D = 128 sits at the 168 of 384 threads;
  // at D = 64 ptxas allocates fewer and would ignore it, C7508).
  if (warpgroup == 0) {
    if constexpr (D == 128) ptx::setmaxnreg_dec<40>();
    if (tid != 0) return;
    const uint32_t bytes = 2 * D * kBN * 2 + (key_path ? kBN * 128 : 0) + (value_path ? kBN * 128 : 0);
    for (int j = 0; j < tiles; ++j) {
      const int s = j % kStages, kt0 = (w.t_begin + j) * kBN;
      ptx::mbarrier_wait_parity(&empty[s], (j / kStages + 1) & 1);  // round 0: a fresh barrier passes parity 1
      unsigned char* stage = smem + L::STAGE0 + s * L::STAGE_BYTES;
      ptx::mbarrier_arrive_expect_tx(&full[s], bytes);
#pragma unroll
      for (int h = 0; h < D / 64; ++h) {
        ptx::cp_async_bulk_tensor_4d_g2s(stage + L::K_OFF + h * kBN * 128, &maps.k, 64 * h, w.g, kt0, w.b, &full[s]);
        ptx::cp_async_bulk_tensor_4d_g2s(stage + L::V_OFF + h * kBN * 128, &maps.v, 64 * h, w.g, kt0, w.b, &full[s]);
      }
      if (key_path) ptx::cp_async_bulk_tensor_3d_g2s(stage + L::KR_OFF, &maps.kr, 0, kt0, w.b, &full[s]);
      if (value_path) ptx::cp_async_bulk_tensor_3d_g2s(stage + L::VR_OFF, &maps.vr, 0, kt0, w.b, &full[s]);
    }
    return;
  }

  if constexpr (D == 128) ptx::setmaxnreg_inc<232>();
  const int c = warpgroup - 1, warp = tid / 32 % 4, lane = tid % 32;
  WarpgroupBarrier wg{&consumer_bar[c]};
  const unsigned char* q_tile = smem + L::Q + c * 64 * 128;
  unsigned char* const qr_hi = smem + L::QR + c * 64 * 128;
  unsigned char* const qr_lo = qr_hi + kBM * 128;

  if constexpr (LowRank) {
    // Qr = Q·k_lora_bᵀ (64 × RB), stored as hi + lo for the per-tile S products.
    float qr[RB / 2];
    q_times<E, RB, D>(qr, q_tile, smem + L::KLB);
    ptx::wgmma_commit_group();
    ptx::wgmma_wait_group<0>();
    ptx::wgmma_fence_operand(qr);
    const float one[2] = {1.f, 1.f};
    put_split<E, RB>(qr_hi, qr_lo, warp, lane, qr, one);
    wg.sync(lane);
  }

  float o[D / 2], orr[RB / 2], s[kBN / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
#pragma unroll
  for (int i = 0; i < RB / 2; ++i) orr[i] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  const int rho0 = w.row0 + 64 * c + 16 * warp + lane / 4;
  const int lim[2] = {key_limit(a, w, rho0), key_limit(a, w, rho0 + 8)};

  const auto wait_tile = [&](int j) { ptx::mbarrier_wait_parity(&full[j % kStages], (j / kStages) & 1); };
  // S_j = Q·Kᵀ (+ Qr·k_low_rankᵀ, hi then lo), tile j landed; issued and committed.
  const auto issue_s = [&](int j) {
    const unsigned char* stage = smem + L::STAGE0 + (j % kStages) * L::STAGE_BYTES;
    q_times<E, kBN, D>(s, q_tile, stage + L::K_OFF);
    if constexpr (LowRank) mma_split<E, kBN, false, KR>(s, qr_hi, qr_lo, [&](int ks) { return k_major(stage + L::KR_OFF + 32 * ks); });
    ptx::wgmma_commit_group();
  };
  // O += P_j·V_j, O_r += P_j·v_low_rank_j, issued (every warp of the warpgroup wrote P_j).
  const auto issue_pv = [&](int j) {
    const unsigned char* stage = smem + L::STAGE0 + (j % kStages) * L::STAGE_BYTES;
    const unsigned char* p_tile = smem + L::P + (j & 1) * kBM * 128 + c * 64 * 128;
    ptx::wgmma_fence_operand(o);
    ptx::wgmma_fence_operand(orr);
    ptx::wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < KN; ++ks) {
      const uint64_t p_desc = k_major(p_tile + 32 * ks);
      mma_async<E, D, true>(o, p_desc, mn_major(stage + L::V_OFF + 2048 * ks));
      if constexpr (LowRank) mma_async<E, RB, true>(orr, p_desc, mn_major(stage + L::VR_OFF + 2048 * ks));
    }
    ptx::wgmma_commit_group();
  };
  // The online softmax of S_j (retired) in the log2 domain, P_j into its buffer, l updated; alpha
  // rescales O and O_r (which the caller does once the previous P·V retired). Register i of S:
  // row 8·((i >> 1) & 1) + g, key 8·(i >> 2) + 2q + (i & 1).
  const auto softmax_tile = [&](int j, float (&alpha)[2]) {
    ptx::wgmma_fence_operand(s);
    const int kt0 = (w.t_begin + j) * kBN;
    const bool masked = kt0 + kBN > w.full_end;
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int i = 0; i < kBN / 2; ++i) {
      const int half = (i >> 1) & 1;
      float x = s[i] * a.scale_log2;
      if (masked && kt0 + 8 * (i >> 2) + 2 * (lane % 4) + (i & 1) >= lim[half]) x = -INFINITY;
      s[i] = x;
      mx[half] = fmaxf(mx[half], x);
    }
    float base[2], sum[2] = {0.f, 0.f};
    softmax_rescale(m, mx, base, alpha);
    unsigned char* p_tile = smem + L::P + (j & 1) * kBM * 128 + c * 64 * 128;
#pragma unroll
    for (int i = 0; i < kBN / 2; i += 2) {
      const int half = (i >> 1) & 1;
      const float p0 = exp2f(s[i] - base[half]), p1 = exp2f(s[i + 1] - base[half]);
      sum[half] += p0 + p1;
      put_pair(p_tile, warp, lane, i, E::pack2(p0, p1));
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) l[r] = l[r] * alpha[r] + sum[r];
  };
  const auto rescale = [&](const float (&alpha)[2]) {
    ptx::wgmma_fence_operand(o);
    ptx::wgmma_fence_operand(orr);
#pragma unroll
    for (int i = 0; i < D / 2; ++i) o[i] *= alpha[(i >> 1) & 1];
#pragma unroll
    for (int i = 0; i < RB / 2; ++i) orr[i] *= alpha[(i >> 1) & 1];
  };

  // Intra-warpgroup pipelining: S_j is issued, then P_{j-1}·V_{j-1}; the softmax of S_j runs while
  // that P·V is on the tensor cores (wait_group 1 retires S_j only); O is rescaled once it retired,
  // and stage j - 1 goes back to the producer. The loop's wgmmas are unconditional (the first
  // tile's S and the last tile's P·V are peeled).
  //
  // Ping-pong between the consumers: each issues its tile's products in its turn (named barrier
  // kTurnBarrier + c, both warpgroups' 256 threads: its own sync, the other's arrive), so the
  // tensor cores run one consumer's S and P·V while the other one's softmax is on the ALUs. Both
  // walk the CTA's `tiles` and take tiles + 1 turns, consumer 0 first (consumer 1 opens its first
  // turn); consumer 1's last turn (the last P·V) opens none.
  const auto turn_begin = [&] { ptx::named_barrier_sync(kTurnBarrier + c, 256); };
  const auto turn_end = [&](bool last) {
    if (!last || c == 0) ptx::named_barrier_arrive(kTurnBarrier + 1 - c, 256);
  };
  if (c == 1 && tiles > 0) ptx::named_barrier_arrive(kTurnBarrier, 256);
  float alpha[2];
  if (tiles > 0) {
    wait_tile(0);
    turn_begin();
    issue_s(0);
    turn_end(false);
    ptx::wgmma_wait_group<0>();
    softmax_tile(0, alpha);
  }
  for (int j = 1; j < tiles; ++j) {
    wait_tile(j);
    wg.sync(lane);  // P_{j-1} written by every warp
    turn_begin();
    issue_s(j);
    issue_pv(j - 1);
    turn_end(false);
    ptx::wgmma_wait_group<1>();  // S_j
    softmax_tile(j, alpha);
    ptx::wgmma_wait_group<0>();  // P_{j-1}·V_{j-1}
    rescale(alpha);
    __syncwarp();
    if (lane == 0) ptx::mbarrier_arrive(&empty[(j - 1) % kStages]);
  }
  if (tiles > 0) {
    wg.sync(lane);
    turn_begin();
    issue_pv(tiles - 1);
    turn_end(true);
  }
  ptx::wgmma_wait_group<0>();
  ptx::wgmma_fence_operand(o);
  ptx::wgmma_fence_operand(orr);

  float inv[2];
  softmax_finish(l, inv);
#pragma unroll
  for (int i = 0; i < D / 2; ++i) o[i] *= inv[(i >> 1) & 1];
  if constexpr (LowRank) {
    // out += (O_r/l)·v_lora_b[ℓ, g]: O_r/l as hi + lo through the Qr tile (every S product that
    // read it retired before the warpgroup's last barrier).
    put_split<E, RB>(qr_hi, qr_lo, warp, lane, orr, inv);
    wg.sync(lane);
    ptx::wgmma_fence_operand(o);
    ptx::wgmma_fence();
    mma_split<E, D, true, KR>(o, qr_hi, qr_lo, [&](int ks) { return mn_major(smem + L::VLB + 2048 * ks); });
    ptx::wgmma_commit_group();
    ptx::wgmma_wait_group<0>();
    ptx::wgmma_fence_operand(o);
  }
  store_rows<E, D>(a, w, rho0, lane, m, l, [&](int f, int k) { return o[4 * f + k]; });
}

}  // namespace
#endif

template <class E, int D, int RB, bool LowRank>
__global__ void __launch_bounds__(kThreadsWg) flash_lora_wgmma_kernel(const __grid_constant__ FwdArgs a,
                                                                      const __grid_constant__ WgmmaMaps maps) {
#if defined(SIMT_DEVICE_PATH)
#if defined(LK_WGMMA_MAINLOOP)
  wgmma_forward<E, D, RB, LowRank>(a, maps);
#else
  simt_trap();  // not an sm_90a binary: flash_lora_forward never picks this kernel here
#endif
#endif
}

bool wgmma_covers(const FwdArgs& a, DType dtype, int cc) {
  if (!wgmma_device(cc) || (dtype != DType::BFloat16 && dtype != DType::Float16)) return false;
  if (a.head_dim != 64 && a.head_dim != 128) return false;
  if (a.rk > kRankBox || a.rv > kRankBox || a.rk % 8 || a.rv % 8) return false;
  // TMA: 16-byte aligned bases and strides (vec), none of them 0 (a broadcast cache).
  const unsigned need = kVecK | kVecV | (a.rk ? kVecKr : 0u) | (a.rv ? kVecVr : 0u);
  if ((a.vec & need) != need) return false;
  for (long long s : {a.k_b, a.k_s, a.k_h, a.v_b, a.v_s, a.v_h})
    if (s <= 0) return false;
  if (a.rk && (a.kr_b <= 0 || a.kr_s <= 0)) return false;
  if (a.rv && (a.vr_b <= 0 || a.vr_s <= 0)) return false;
  return true;
}

void run_wgmma(const FwdArgs& given, DType dtype, int device, cudaStream_t st) {
  FwdArgs a = given;
  a.splits = 1;  // one CTA walks every key tile of its rows (no split-KV)
  a.tiles_per_split = static_cast<int>(ceil_div<long long>(a.sk, kBN));
  const int hk = a.hq / a.group;
  WgmmaMaps maps{};
  // K, V [B, Sk, Hk, D]: boxes of 64 d × 1 head × 64 keys; the low-rank caches [B, Sk, r]: 64 ranks × 64 keys.
  constexpr const char* op = "attention.flashLora";
  maps.k = tma_map_16bit(op, a.k, {a.head_dim, hk, a.sk, a.batch}, {a.k_h, a.k_s, a.k_b}, {64, 1, kBN, 1});
  maps.v = tma_map_16bit(op, a.v, {a.head_dim, hk, a.sk, a.batch}, {a.v_h, a.v_s, a.v_b}, {64, 1, kBN, 1});
  if (a.rk) maps.kr = tma_map_16bit(op, a.kr, {a.rk, a.sk, a.batch}, {a.kr_s, a.kr_b}, {kRankBox, kBN, 1});
  if (a.rv) maps.vr = tma_map_16bit(op, a.vr, {a.rv, a.sk, a.batch}, {a.vr_s, a.vr_b}, {kRankBox, kBN, 1});
  const long long rows = static_cast<long long>(a.sq) * a.group;
  const dim3 grid(static_cast<unsigned>(ceil_div<long long>(rows, kBM)), static_cast<unsigned>(hk), static_cast<unsigned>(a.batch));
  const int rb = std::max(a.rk, a.rv) <= 16 ? 16 : 64;
  note_plan(std::string("flash_lora wgmma ") + dtype_name(dtype) + " D=" + std::to_string(a.head_dim) + " BM=128 BN=64" +
            (a.rk || a.rv ? " RB=" + std::to_string(rb) : std::string()) + " tma 2 stages");
  const auto go = [&](auto kernel, int smem) {
    LK_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    simt_launch(kernel, grid, dim3(kThreadsWg), static_cast<size_t>(smem), st, a, maps);
    LK_CUDA_CHECK_LAUNCH("flash_lora_wgmma_kernel launch");
  };
  with_element(dtype, "attention.flashLora", [&](auto e) {
    using E = decltype(e);
    if constexpr (!std::is_same_v<E, F32>) {
      const bool low_rank = a.rk || a.rv;
      const auto pick = [&](auto dc) {
        constexpr int D = decltype(dc)::value;
        if (!low_rank) go(flash_lora_wgmma_kernel<E, D, 16, false>, WgmmaSmem<D>::BYTES);
        else if (rb == 16) go(flash_lora_wgmma_kernel<E, D, 16, true>, WgmmaSmem<D>::BYTES);
        else go(flash_lora_wgmma_kernel<E, D, 64, true>, WgmmaSmem<D>::BYTES);
      };
      if (a.head_dim == 64) pick(std::integral_constant<int, 64>{});
      else pick(std::integral_constant<int, 128>{});
    }
  });
}

}  // namespace lk::cuda_ops::flash_lora
