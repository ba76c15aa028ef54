// Flash-LoRA-Attention forward on CUDA (the math: csrc/ops/flash_lora.h). FA2-style: one CTA of
// 4 warps per (row tile, KV head g, sequence b [, KV split]). The rows of a CTA are (query i, query
// head h) pairs of KV head g's GQA group, ρ = i·G + (h − g·G) (G = Hq / Hk): the whole group shares
// every K/V tile staged in shared memory (a decode step with Sq = 1 and G = 8 fills 8 rows of one
// tile instead of 8 CTAs each reading the cache), and the adapter's B factors are one per CTA.
//
// Per CTA: Q (and, with the key path, Qr = Q·k_lora_b[ℓ, g]ᵀ, BM × r, computed once) in shared
// memory; K, V and the low-rank cache tiles (BN keys × D, BN × r) stream through two stages of
// cp.async; per tile S = scale·(Q·Kᵀ + Qr·k_low_rankᵀ), causal/length masks only on tiles that
// cross the diagonal or the end (fully masked tiles are never visited), online softmax in the
// log2 domain, O += P·V and O_r += P·v_low_rank (BM × r) under the same rescaling. Finish:
// out = O/l + (O_r/l)·v_lora_b[ℓ, g], lse = (m + log2 l)·ln 2; a row that saw no key: 0 and −∞.
// The low-rank caches are read at their own width r, never expanded to D. On Hopper (sm_90a) the
// prefill-sized problems the FA3-style TMA + wgmma kernel covers go there (cuda/flash_lora_wgmma.cu).
//
// float16 / bfloat16 (sm_80+): mma.sync m16n8k16 with float32 accumulation, ldmatrix operands.
// BM = 64 (16 rows per warp), BN = 64 (32 at D = 256). The S accumulator layout is the A operand
// layout of the next mma, so P never leaves registers (FA2). Qr and O_r/l enter tensor-core products
// as hi + lo halves (two 16-bit values whose sum carries ~2× the mantissa): both products run once
// per CTA or cost r/D of the base ones, and the low-rank terms keep ~float32 accuracy where a single
// rounding of Qr would put a 2⁻⁹ relative error on the adapter's share of every score (bf16).
// Napkin math (bf16, D = 128, Sq = Sk = 4096, r = 16 on both paths, H200): per KV tile a CTA
// streams 64·(2·256 + 2·32) B = 36 KiB and issues 64·64·(2·128 + 2·2·16 + 16)·2 = 2.8 MFLOP of
// mma (the low-rank share: (64 + 16)/256 ≈ 31% at r = 16, hi + lo included): ~78 FLOP per byte of
// shared memory, compute-bound like FA2. Registers per thread: O 64 + O_r RB/2 + S 32.
// float32 (exact FMA, no TF32), and float16 / bfloat16 below sm_80: BM = 32, BN = 32 (16 at
// D = 256), 128 threads as 16 row lanes × 8 key lanes: 2 rows × BN/8 keys of S per thread (float4
// shared loads of Q and K rows), P through shared memory, 2 rows × D/8 columns of O per thread.
//
// Shared memory (bytes; rows padded by 16 B so that the 8 rows an ldmatrix / a quarter warp reads
// fall in 8 different bank groups): BM·(D·e + 16) for Q, Qr (hi + lo, or float32), a stage of
// BN·(2·(D·e + 16) + 2·(r·e + 16)), two stages when they fit the device (else one: the loads of a
// tile then wait for the previous tile's products). bf16, D = 128, r = 128 on both paths:
// 17 + 34 + 2·68 = 187 KiB (H100/H200: 227 KiB; A100: one stage, 119 KiB); r = 16: 17 + 6 + 2·38 =
// 99 KiB, two CTAs per SM on an H200.
//
// Decode (split-KV, flash-decoding): when a KV head has at most 16 rows (Sq·G ≤ 16) and the grid
// would not fill two waves of the SMs, the key tiles are divided among S splits (S ≤ 64, each ≥ 1
// tile); each split writes its normalized partial O and lse in float32 scratch, and
// flash_lora_combine_kernel forms out = Σ exp(lse_s − lse)·O_s, lse = log Σ exp(lse_s).
// Napkin math (Sq = 1, Sk = 32768, Hq = 32, Hk = 8, D = 128, bf16, B = 1, H200): K + V are 16 MiB
// per KV head, 128 MiB in all, ~32 µs at ~4 TB/s. Unsplit, 8 CTAs on 8 SMs each stream 16 MiB
// (~0.2 ms at the ~80 GB/s one SM draws); with ⌈2·132/8⌉ = 33 splits, 264 CTAs share the
// bandwidth, and the partials are 33·32·129·4 B = 545 KiB (written once, read once by the combine).
#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <initializer_list>
#include <optional>
#include <string>
#include <type_traits>

#include "common.cuh"
#include "flash_lora.cuh"
#include "flash_lora_common.cuh"
#include "flash_lora_forward.cuh"

namespace lk::cuda_ops {
namespace {

using namespace flash_lora;

constexpr int kThreads = 128;  // 4 warps
constexpr int kMmaBM = 64, kFmaBM = 32;
constexpr int kMaxSplits = 64;
constexpr int kDecodeRows = 16;  // rows per KV head (Sq·G) at most for the split-KV path

template <int D>
constexpr int fma_bn() { return D == 256 ? 16 : 32; }

#if defined(SIMT_DEVICE_PATH)
// cp.async exists from sm_80; below, every copy is a plain load + store (FwdArgs::vec is ignored).
constexpr bool kAsync = SIMT_CUDA_ARCH >= 800;
__device__ __forceinline__ void async_commit() {
  if constexpr (kAsync) ptx::cp_async_commit();
}
template <int N>
__device__ __forceinline__ void async_wait() {
  if constexpr (kAsync) ptx::cp_async_wait<N>();
}

// Rows [0, rows) × `chunks` 16-byte chunks of a shared tile (pitch bytes per row) from a global
// operand: row r's first element at src(r) (null: a row outside the operand, zeros), `valid`
// elements per row (the rest zeros: the padded rank columns must read as 0).
template <class S, class Src>
__device__ __forceinline__ void stage_rows(unsigned char* tile, int pitch, int rows, int chunks, int valid, bool vec,
                                           const void* base, Src src) {
  constexpr int VE = 16 / static_cast<int>(sizeof(S));
  for (int e = threadIdx.x; e < rows * chunks; e += kThreads) {
    const int r = e / chunks, c = e % chunks;
    const S* row = src(r);
    const int n = row ? imin(VE, imax(0, valid - c * VE)) : 0;
    unsigned char* dst = tile + r * pitch + c * 16;
    if (kAsync && vec) {
      ptx::cp_async_16(dst, n ? static_cast<const void*>(row + c * VE) : base, n * static_cast<int>(sizeof(S)));
    } else {
      S* d = reinterpret_cast<S*>(dst);
#pragma unroll
      for (int i = 0; i < VE; ++i) d[i] = i < n ? row[c * VE + i] : S(0);
    }
  }
}

// Q rows of the tile: ρ → q[b, ρ / G, g·G + ρ % G].
template <class S, int D, int BM>
__device__ __forceinline__ void load_q(const FwdArgs& a, const Work& w, unsigned char* sq) {
  const S* q = static_cast<const S*>(a.q) + w.b * a.q_b;
  stage_rows<S>(sq, a.row_d, BM, D * static_cast<int>(sizeof(S)) / 16, D, a.vec & kVecQ, a.q, [&](int r) -> const S* {
    const int rho = w.row0 + r;
    if (rho >= w.rows) return nullptr;
    return q + (rho / a.group) * a.q_s + (static_cast<long long>(w.g) * a.group + rho % a.group) * a.q_h;
  });
}

// `rows` rows of a B factor [L, Hk, r, D] (adapter ℓ, head g) from rank row r0 on: rows ≥ rank are zeros.
template <class S, int D>
__device__ __forceinline__ void load_factor(const FwdArgs& a, const void* f, int rank, bool vec, int hk, int adapter, int g,
                                            int r0, int rows, unsigned char* dst) {
  const S* base = static_cast<const S*>(f) + (static_cast<long long>(adapter) * hk + g) * rank * D;
  stage_rows<S>(dst, a.row_d, rows, D * static_cast<int>(sizeof(S)) / 16, D, vec, f,
                [&](int r) -> const S* { return r0 + r < rank ? base + static_cast<long long>(r0 + r) * D : nullptr; });
}

// One key tile (keys kt0 …) into a stage: K, V, and with an adapter the two low-rank cache tiles.
template <class S, int D, int BN>
__device__ __forceinline__ void load_kv(const FwdArgs& a, const Work& w, unsigned char* stage, int kt0) {
  constexpr int CD = D * static_cast<int>(sizeof(S)) / 16;
  const S* k = static_cast<const S*>(a.k) + w.b * a.k_b + w.g * a.k_h;
  const S* v = static_cast<const S*>(a.v) + w.b * a.v_b + w.g * a.v_h;
  stage_rows<S>(stage, a.row_d, BN, CD, D, a.vec & kVecK, a.k,
                [&](int r) -> const S* { return kt0 + r < a.sk ? k + static_cast<long long>(kt0 + r) * a.k_s : nullptr; });
  stage_rows<S>(stage + a.st_v, a.row_d, BN, CD, D, a.vec & kVecV, a.v,
                [&](int r) -> const S* { return kt0 + r < a.sk ? v + static_cast<long long>(kt0 + r) * a.v_s : nullptr; });
  if (w.adapter < 0) return;
  constexpr int ES = static_cast<int>(sizeof(S));
  if (a.rk) {
    const S* kr = static_cast<const S*>(a.kr) + w.b * a.kr_b;
    stage_rows<S>(stage + a.st_kr, a.row_kr, BN, a.rkp * ES / 16, a.rk, a.vec & kVecKr, a.kr,
                  [&](int r) -> const S* { return kt0 + r < a.sk ? kr + static_cast<long long>(kt0 + r) * a.kr_s : nullptr; });
  }
  if (a.rv) {
    const S* vr = static_cast<const S*>(a.vr) + w.b * a.vr_b;
    stage_rows<S>(stage + a.st_vr, a.row_vr, BN, a.rvp * ES / 16, a.rv, a.vec & kVecVr, a.vr,
                  [&](int r) -> const S* { return kt0 + r < a.sk ? vr + static_cast<long long>(kt0 + r) * a.vr_s : nullptr; });
  }
}

// ---- float16 / bfloat16: mma.sync ------------------------------------------------------------

// RB: the padded ranks' bound (32 or 128), the size of O_r's registers; the loops over rank
// fragments stop at the CTA's own padded rank.
template <class E, int D, int RB>
__device__ __forceinline__ void mma_forward(const FwdArgs& a) {
  using S = typename E::storage;
  constexpr int BM = kMmaBM, BN = mma_bn<D>(), NF = BN / 8, DF = D / 8, RF = RB / 8, KD = D / 16;
  SIMT_DYNAMIC_SHARED(unsigned char, smem);
  const Work w = work_of<BM, BN>(a);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, gq = lane / 4, qq = lane % 4;
  unsigned char* const sq = smem;
  unsigned char* const sqr = smem + a.off_qr;  // Qr hi, then Qr lo (BM rows each)
  unsigned char* const area = smem + a.off_area;
  const int rk_steps = w.adapter >= 0 ? a.rkp / 16 : 0, rv_steps = w.adapter >= 0 ? a.rvp / 16 : 0;
  const int hk = static_cast<int>(gridDim.y);
  // ldmatrix row addresses of this lane: A (16 rows × 16 k), B K-major (keys × k), B MN-major (k × n).
  const int a_row = warp * 16 + lane % 16, a_col = (lane / 16) * 16;
  const int bk_row = lane % 8 + 8 * (lane / 16), bk_col = ((lane / 8) % 2) * 16;
  const int bn_row = lane % 8 + 8 * ((lane / 8) % 2), bn_col = (lane / 16) * 16;

  load_q<S, D, BM>(a, w, sq);
  if (rk_steps) {
    // Qr = Q·k_lora_b[ℓ, g]ᵀ (BM × rkp, once per CTA) through the stage area, kept as hi + lo.
    load_factor<S, D>(a, a.klb, a.rk, a.vec & kVecKlb, hk, w.adapter, w.g, 0, a.rkp, area);
    async_commit();
    async_wait<0>();
    __syncthreads();
#pragma unroll
    for (int nf = 0; nf < RF; nf += 2) {
      if (nf >= 2 * rk_steps) continue;
      float c[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
      for (int ks = 0; ks < KD; ++ks) {
        uint32_t af[4], b[4];
        ptx::ldmatrix_x4(af, sq + a_row * a.row_d + a_col + ks * 32);
        ptx::ldmatrix_x4(b, area + (nf * 8 + bk_row) * a.row_d + bk_col + ks * 32);
        mma16<E>(c[0], af, b[0], b[1]);
        mma16<E>(c[1], af, b[2], b[3]);
      }
#pragma unroll
      for (int f = 0; f < 2; ++f)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          uint32_t hi, lo;
          split_pack<E>(c[f][2 * half], c[f][2 * half + 1], hi, lo);
          const int off = (warp * 16 + gq + 8 * half) * a.row_kr + ((nf + f) * 8 + 2 * qq) * 2;
          *reinterpret_cast<uint32_t*>(sqr + off) = hi;
          *reinterpret_cast<uint32_t*>(sqr + BM * a.row_kr + off) = lo;
        }
    }
    __syncthreads();  // the area becomes the stages; Qr is read by other lanes' ldmatrix
  }
  if (w.t_begin < w.t_end) load_kv<S, D, BN>(a, w, area, w.t_begin * BN);
  async_commit();

  float o[DF][4], orr[RF][4];
#pragma unroll
  for (int i = 0; i < DF; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
#pragma unroll
  for (int i = 0; i < RF; ++i) orr[i][0] = orr[i][1] = orr[i][2] = orr[i][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  const int rho0 = w.row0 + warp * 16 + gq;
  const int lim[2] = {key_limit(a, w, rho0), key_limit(a, w, rho0 + 8)};

  int buf = 0;
  for (int t = w.t_begin; t < w.t_end; ++t) {
    if (a.two_stage && t + 1 < w.t_end) {
      load_kv<S, D, BN>(a, w, area + (buf ^ 1) * a.stage_bytes, (t + 1) * BN);
      async_commit();
      async_wait<1>();
    } else {
      async_wait<0>();
    }
    __syncthreads();
    const unsigned char* st = area + buf * a.stage_bytes;
    const int kt0 = t * BN;

    // S = Q·Kᵀ (+ (Qr_hi + Qr_lo)·k_low_rankᵀ): 16 rows × BN keys per warp.
    float s[NF][4];
#pragma unroll
    for (int i = 0; i < NF; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
    for (int ks = 0; ks < KD; ++ks) {
      uint32_t af[4];
      ptx::ldmatrix_x4(af, sq + a_row * a.row_d + a_col + ks * 32);
#pragma unroll
      for (int nf = 0; nf < NF; nf += 2) {
        uint32_t b[4];
        ptx::ldmatrix_x4(b, st + (nf * 8 + bk_row) * a.row_d + bk_col + ks * 32);
        mma16<E>(s[nf], af, b[0], b[1]);
        mma16<E>(s[nf + 1], af, b[2], b[3]);
      }
    }
#pragma unroll
    for (int ks = 0; ks < RB / 16; ++ks) {
      if (ks >= rk_steps) continue;
      uint32_t ah[4], al[4];
      ptx::ldmatrix_x4(ah, sqr + a_row * a.row_kr + a_col + ks * 32);
      ptx::ldmatrix_x4(al, sqr + BM * a.row_kr + a_row * a.row_kr + a_col + ks * 32);
#pragma unroll
      for (int nf = 0; nf < NF; nf += 2) {
        uint32_t b[4];
        ptx::ldmatrix_x4(b, st + a.st_kr + (nf * 8 + bk_row) * a.row_kr + bk_col + ks * 32);
        mma16<E>(s[nf], ah, b[0], b[1]);
        mma16<E>(s[nf], al, b[0], b[1]);
        mma16<E>(s[nf + 1], ah, b[2], b[3]);
        mma16<E>(s[nf + 1], al, b[2], b[3]);
      }
    }

    // Online softmax in the log2 domain; a lane holds rows gq and gq + 8, a quad a whole row.
    const bool masked = kt0 + BN > w.full_end;
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int nf = 0; nf < NF; ++nf)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[nf][e] * a.scale_log2;
        if (masked && kt0 + nf * 8 + 2 * qq + (e & 1) >= lim[e / 2]) x = -INFINITY;
        s[nf][e] = x;
        mx[e / 2] = fmaxf(mx[e / 2], x);
      }
    float base[2], alpha[2], sum[2] = {0.f, 0.f};
    softmax_rescale(m, mx, base, alpha);
#pragma unroll
    for (int nf = 0; nf < NF; ++nf)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[nf][e] = exp2f(s[nf][e] - base[e / 2]);
        sum[e / 2] += s[nf][e];
      }
#pragma unroll
    for (int r = 0; r < 2; ++r) l[r] = l[r] * alpha[r] + sum[r];
#pragma unroll
    for (int i = 0; i < DF; ++i) {
      o[i][0] *= alpha[0], o[i][1] *= alpha[0], o[i][2] *= alpha[1], o[i][3] *= alpha[1];
    }
#pragma unroll
    for (int i = 0; i < RF; ++i) {
      if (i >= 2 * rv_steps) continue;
      orr[i][0] *= alpha[0], orr[i][1] *= alpha[0], orr[i][2] *= alpha[1], orr[i][3] *= alpha[1];
    }

    // O += P·V, O_r += P·v_low_rank: S's accumulator layout is P's A-operand layout.
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      const uint32_t pa[4] = {E::pack2(s[2 * kk][0], s[2 * kk][1]), E::pack2(s[2 * kk][2], s[2 * kk][3]),
                              E::pack2(s[2 * kk + 1][0], s[2 * kk + 1][1]), E::pack2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int df = 0; df < DF; df += 2) {
        uint32_t b[4];
        ptx::ldmatrix_x4_trans(b, st + a.st_v + (kk * 16 + bn_row) * a.row_d + bn_col + df * 16);
        mma16<E>(o[df], pa, b[0], b[1]);
        mma16<E>(o[df + 1], pa, b[2], b[3]);
      }
#pragma unroll
      for (int rf = 0; rf < RF; rf += 2) {
        if (rf >= 2 * rv_steps) continue;
        uint32_t b[4];
        ptx::ldmatrix_x4_trans(b, st + a.st_vr + (kk * 16 + bn_row) * a.row_vr + bn_col + rf * 16);
        mma16<E>(orr[rf], pa, b[0], b[1]);
        mma16<E>(orr[rf + 1], pa, b[2], b[3]);
      }
    }
    __syncthreads();  // this stage is refilled next
    if (a.two_stage) buf ^= 1;
    else if (t + 1 < w.t_end) {
      load_kv<S, D, BN>(a, w, area, (t + 1) * BN);
      async_commit();
    }
  }
  async_wait<0>();  // no key tile: the Q group

  float inv[2];
  softmax_finish(l, inv);
#pragma unroll
  for (int i = 0; i < DF; ++i) {
    o[i][0] *= inv[0], o[i][1] *= inv[0], o[i][2] *= inv[1], o[i][3] *= inv[1];
  }
  if (rv_steps) {
    // out += (O_r/l)·v_lora_b[ℓ, g] (K = rvp, the factor through the stage area), hi + lo.
    __syncthreads();
    load_factor<S, D>(a, a.vlb, a.rv, a.vec & kVecVlb, hk, w.adapter, w.g, 0, a.rvp, area);
    async_commit();
    async_wait<0>();
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < RB / 16; ++kk) {
      if (kk >= rv_steps) continue;
      uint32_t ah[4], al[4];
      split_pack<E>(orr[2 * kk][0] * inv[0], orr[2 * kk][1] * inv[0], ah[0], al[0]);
      split_pack<E>(orr[2 * kk][2] * inv[1], orr[2 * kk][3] * inv[1], ah[1], al[1]);
      split_pack<E>(orr[2 * kk + 1][0] * inv[0], orr[2 * kk + 1][1] * inv[0], ah[2], al[2]);
      split_pack<E>(orr[2 * kk + 1][2] * inv[1], orr[2 * kk + 1][3] * inv[1], ah[3], al[3]);
#pragma unroll
      for (int df = 0; df < DF; df += 2) {
        uint32_t b[4];
        ptx::ldmatrix_x4_trans(b, area + (kk * 16 + bn_row) * a.row_d + bn_col + df * 16);
        mma16<E>(o[df], ah, b[0], b[1]);
        mma16<E>(o[df], al, b[0], b[1]);
        mma16<E>(o[df + 1], ah, b[2], b[3]);
        mma16<E>(o[df + 1], al, b[2], b[3]);
      }
    }
  }
  store_rows<E, D>(a, w, rho0, lane, m, l, [&](int f, int k) { return o[f][k]; });
}

// ---- float32 (exact FMA) and 16-bit types below sm_80 -------------------------------------------
// Four consecutive elements of a shared row as floats (16-byte / 8-byte loads).
template <class E>
__device__ __forceinline__ float4 load4(const unsigned char* p) {
  if constexpr (sizeof(typename E::storage) == 4) {
    return *reinterpret_cast<const float4*>(p);
  } else {
    const uint2 u = *reinterpret_cast<const uint2*>(p);
    return make_float4(E::to_float(static_cast<uint16_t>(u.x & 0xffffu)), E::to_float(static_cast<uint16_t>(u.x >> 16)),
                       E::to_float(static_cast<uint16_t>(u.y & 0xffffu)), E::to_float(static_cast<uint16_t>(u.y >> 16)));
  }
}
__device__ __forceinline__ float dot4(float4 x, float4 y, float acc) {
  return fmaf(x.w, y.w, fmaf(x.z, y.z, fmaf(x.y, y.y, fmaf(x.x, y.x, acc))));
}

// 128 threads = 16 row lanes (ty) × 8 key / column lanes (tx): rows ty and ty + 16; keys and
// output columns tx + 8c. The B factors pass through the stage area 32 rank rows at a time.
template <class E, int D>
__device__ __forceinline__ void fma_forward(const FwdArgs& a) {
  using S = typename E::storage;
  constexpr int BM = kFmaBM, BN = fma_bn<D>(), KC = BN / 8, DC = D / 8, RC = static_cast<int>(kFlashLoraMaxRank) / 8;
  constexpr int ES = static_cast<int>(sizeof(S)), PP = BN + 4, FR = 32;  // P pitch (floats), factor rows per pass
  SIMT_DYNAMIC_SHARED(unsigned char, smem);
  const Work w = work_of<BM, BN>(a);
  const int tx = threadIdx.x % 8, ty = threadIdx.x / 8;
  unsigned char* const sq = smem;
  float* const sqr = reinterpret_cast<float*>(smem + a.off_qr);  // Qr, later O_r/l: [BM][qr_pitch]
  float* const sp = reinterpret_cast<float*>(smem + a.off_p);     // P: [BM][PP]
  unsigned char* const area = smem + a.off_area;
  const int rk_n = w.adapter >= 0 ? a.rkp : 0, rv_n = w.adapter >= 0 ? a.rvp : 0;  // multiples of 8
  const int hk = static_cast<int>(gridDim.y);
  const int row[2] = {ty, ty + 16};

  load_q<S, D, BM>(a, w, sq);
  for (int r0 = 0; r0 < rk_n; r0 += FR) {
    // Qr[:, r0 + tx + 8c] = Q·k_lora_b[ℓ, g, r0 + tx + 8c]ᵀ for the pass's 32 rank rows.
    load_factor<S, D>(a, a.klb, a.rk, a.vec & kVecKlb, hk, w.adapter, w.g, r0, FR, area);
    async_commit();
    async_wait<0>();
    __syncthreads();
    float acc[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll 4
    for (int d = 0; d < D; d += 4) {
      const float4 q0 = load4<E>(sq + row[0] * a.row_d + d * ES), q1 = load4<E>(sq + row[1] * a.row_d + d * ES);
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const float4 f = load4<E>(area + (tx + 8 * c) * a.row_d + d * ES);
        acc[0][c] = dot4(q0, f, acc[0][c]);
        acc[1][c] = dot4(q1, f, acc[1][c]);
      }
    }
#pragma unroll
    for (int k = 0; k < 2; ++k)
#pragma unroll
      for (int c = 0; c < 4; ++c)
        if (r0 + 8 * c < rk_n) sqr[row[k] * a.qr_pitch + r0 + tx + 8 * c] = acc[k][c];
    __syncthreads();
  }
  if (w.t_begin < w.t_end) load_kv<S, D, BN>(a, w, area, w.t_begin * BN);
  async_commit();

  float o[2][DC], orr[2][RC], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
#pragma unroll
  for (int k = 0; k < 2; ++k) {
#pragma unroll
    for (int c = 0; c < DC; ++c) o[k][c] = 0.f;
#pragma unroll
    for (int c = 0; c < RC; ++c) orr[k][c] = 0.f;
  }
  const int lim[2] = {key_limit(a, w, w.row0 + row[0]), key_limit(a, w, w.row0 + row[1])};

  int buf = 0;
  for (int t = w.t_begin; t < w.t_end; ++t) {
    if (a.two_stage && t + 1 < w.t_end) {
      load_kv<S, D, BN>(a, w, area + (buf ^ 1) * a.stage_bytes, (t + 1) * BN);
      async_commit();
      async_wait<1>();
    } else {
      async_wait<0>();
    }
    __syncthreads();
    const unsigned char* st = area + buf * a.stage_bytes;
    const int kt0 = t * BN;

    float s[2][KC];
#pragma unroll
    for (int k = 0; k < 2; ++k)
#pragma unroll
      for (int c = 0; c < KC; ++c) s[k][c] = 0.f;
#pragma unroll 4
    for (int d = 0; d < D; d += 4) {
      const float4 q0 = load4<E>(sq + row[0] * a.row_d + d * ES), q1 = load4<E>(sq + row[1] * a.row_d + d * ES);
#pragma unroll
      for (int c = 0; c < KC; ++c) {
        const float4 kv = load4<E>(st + (tx + 8 * c) * a.row_d + d * ES);
        s[0][c] = dot4(q0, kv, s[0][c]);
        s[1][c] = dot4(q1, kv, s[1][c]);
      }
    }
    for (int r = 0; r < rk_n; r += 4) {
      const float4 q0 = *reinterpret_cast<const float4*>(sqr + row[0] * a.qr_pitch + r);
      const float4 q1 = *reinterpret_cast<const float4*>(sqr + row[1] * a.qr_pitch + r);
#pragma unroll
      for (int c = 0; c < KC; ++c) {
        const float4 kv = load4<E>(st + a.st_kr + (tx + 8 * c) * a.row_kr + r * ES);
        s[0][c] = dot4(q0, kv, s[0][c]);
        s[1][c] = dot4(q1, kv, s[1][c]);
      }
    }

    // Online softmax in the log2 domain; the 8 lanes of a row are consecutive (xor 1, 2, 4).
    const bool masked = kt0 + BN > w.full_end;
    float alpha[2];
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      float mx = m[k];
#pragma unroll
      for (int c = 0; c < KC; ++c) {
        float x = s[k][c] * a.scale_log2;
        if (masked && kt0 + tx + 8 * c >= lim[k]) x = -INFINITY;
        s[k][c] = x;
        mx = fmaxf(mx, x);
      }
#pragma unroll
      for (int off = 1; off < 8; off *= 2) mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, off));
      const float base = mx == -INFINITY ? 0.f : mx;  // no visible key yet: every p is 0, not NaN
      alpha[k] = exp2f(m[k] - base);
      m[k] = mx;
      float sum = 0.f;
#pragma unroll
      for (int c = 0; c < KC; ++c) {
        const float p = exp2f(s[k][c] - base);
        sum += p;
        sp[row[k] * PP + tx + 8 * c] = p;
      }
      l[k] = l[k] * alpha[k] + sum;
#pragma unroll
      for (int c = 0; c < DC; ++c) o[k][c] *= alpha[k];
#pragma unroll
      for (int c = 0; c < RC; ++c)
        if (8 * c < rv_n) orr[k][c] *= alpha[k];
    }
    __syncthreads();  // P complete

    // O += P·V, O_r += P·v_low_rank (keys past Sk: p = 0 and zero rows).
    for (int j = 0; j < BN; ++j) {
      const float p0 = sp[row[0] * PP + j], p1 = sp[row[1] * PP + j];
      const S* vrow = reinterpret_cast<const S*>(st + a.st_v + j * a.row_d);
#pragma unroll
      for (int c = 0; c < DC; ++c) {
        const float v = E::to_float(vrow[tx + 8 * c]);
        o[0][c] = fmaf(p0, v, o[0][c]);
        o[1][c] = fmaf(p1, v, o[1][c]);
      }
      if (rv_n) {
        const S* vr = reinterpret_cast<const S*>(st + a.st_vr + j * a.row_vr);
#pragma unroll
        for (int c = 0; c < RC; ++c) {
          if (8 * c >= rv_n) continue;
          const float v = E::to_float(vr[tx + 8 * c]);
          orr[0][c] = fmaf(p0, v, orr[0][c]);
          orr[1][c] = fmaf(p1, v, orr[1][c]);
        }
      }
    }
    __syncthreads();  // this stage and P are rewritten next
    if (a.two_stage) buf ^= 1;
    else if (t + 1 < w.t_end) {
      load_kv<S, D, BN>(a, w, area, (t + 1) * BN);
      async_commit();
    }
  }
  async_wait<0>();  // no key tile: the Q group

  float inv[2];
#pragma unroll
  for (int k = 0; k < 2; ++k) {
#pragma unroll
    for (int off = 1; off < 8; off *= 2) l[k] += __shfl_xor_sync(kFullMask, l[k], off);
    inv[k] = l[k] > 0.f ? __fdividef(1.f, l[k]) : 0.f;  // l ≥ 1: no IEEE-division call
#pragma unroll
    for (int c = 0; c < DC; ++c) o[k][c] *= inv[k];
  }
  if (rv_n) {
    // out += (O_r/l)·v_lora_b[ℓ, g]: O_r/l through shared memory (Qr's region), the factor 32 rows a pass.
#pragma unroll
    for (int k = 0; k < 2; ++k)
#pragma unroll
      for (int c = 0; c < RC; ++c)
        if (8 * c < rv_n) sqr[row[k] * a.qr_pitch + tx + 8 * c] = orr[k][c] * inv[k];
    for (int r0 = 0; r0 < rv_n; r0 += FR) {
      load_factor<S, D>(a, a.vlb, a.rv, a.vec & kVecVlb, hk, w.adapter, w.g, r0, FR, area);
      async_commit();
      async_wait<0>();
      __syncthreads();
      const int rows = imin(FR, rv_n - r0);
      for (int r = 0; r < rows; ++r) {
        const float x0 = sqr[row[0] * a.qr_pitch + r0 + r], x1 = sqr[row[1] * a.qr_pitch + r0 + r];
        const S* f = reinterpret_cast<const S*>(area + r * a.row_d);
#pragma unroll
        for (int c = 0; c < DC; ++c) {
          const float v = E::to_float(f[tx + 8 * c]);
          o[0][c] = fmaf(x0, v, o[0][c]);
          o[1][c] = fmaf(x1, v, o[1][c]);
        }
      }
      __syncthreads();
    }
  }
#pragma unroll
  for (int k = 0; k < 2; ++k) {
    const int rho = w.row0 + row[k];
    if (rho >= w.rows) continue;
    const RowDst d = row_dst(a, w, rho);
#pragma unroll
    for (int c = 0; c < DC; ++c) store_out<E, D>(a, d, tx + 8 * c, o[k][c]);
    if (tx == 0) store_lse(a, d, m[k], l[k]);
  }
}
#endif  // SIMT_DEVICE_PATH

template <class E, int D, int RB>
__global__ void __launch_bounds__(kThreads) flash_lora_mma_kernel(FwdArgs a) {
#if defined(SIMT_DEVICE_PATH)
  if constexpr (SIMT_CUDA_ARCH >= 800) {
    mma_forward<E, D, RB>(a);
  } else {
    simt_trap();  // the launcher sends float16 / bfloat16 below sm_80 to the FMA kernel
  }
#endif
}

template <class E, int D>
__global__ void __launch_bounds__(kThreads) flash_lora_fma_kernel(FwdArgs a) {
#if defined(SIMT_DEVICE_PATH)
  fma_forward<E, D>(a);
#endif
}

// Split-KV combine: one block per (b, h, i) row; lse = log Σ_z exp(lse_z), out = Σ_z exp(lse_z − lse)·O_z
// (splits in order: deterministic).
template <class E>
__global__ void __launch_bounds__(kThreads) flash_lora_combine_kernel(FwdArgs a) {
#if defined(SIMT_DEVICE_PATH)
  const long long rows = static_cast<long long>(a.batch) * a.hq * a.sq, row = blockIdx.x;
  float mx = -INFINITY;
  for (int z = 0; z < a.splits; ++z) mx = fmaxf(mx, a.part_lse[z * rows + row]);
  float sum = 0.f;
  if (mx != -INFINITY)
    for (int z = 0; z < a.splits; ++z) sum += expf(a.part_lse[z * rows + row] - mx);
  const float lse = mx == -INFINITY ? -INFINITY : mx + logf(sum);
  const int i = static_cast<int>(row % a.sq), h = static_cast<int>(row / a.sq % a.hq), b = static_cast<int>(row / a.sq / a.hq);
  typename E::storage* out = static_cast<typename E::storage*>(a.out) + b * a.o_b + i * a.o_s + h * a.o_h;
  for (int d = threadIdx.x; d < a.head_dim; d += kThreads) {
    float acc = 0.f;
    if (mx != -INFINITY)
      for (int z = 0; z < a.splits; ++z) {
        const float lz = a.part_lse[z * rows + row];
        if (lz != -INFINITY) acc = fmaf(expf(lz - lse), a.part_o[(z * rows + row) * a.head_dim + d], acc);
      }
    out[d] = E::from_float(acc);
  }
  if (threadIdx.x == 0) a.lse[row] = lse;
#endif
}

// ---- host ------------------------------------------------------------------------------------

int round_up(int v, int m) { return (v + m - 1) / m * m; }

// Shared-memory plan: fills a's pitches and offsets, picks two stages when they fit; returns bytes.
// mma: ranks padded to 16 (k-steps), Qr as hi + lo; FMA: ranks padded to 8, Qr / O_r and P float32.
int plan_smem(FwdArgs& a, bool mma, int es, int bm, int bn, int optin) {
  const int d = a.head_dim;
  const int pad = mma ? 16 : 8;
  a.rkp = round_up(a.rk, pad);
  a.rvp = round_up(a.rv, pad);
  a.row_d = d * es + 16;
  a.row_kr = a.rk ? a.rkp * es + 16 : 0;
  a.row_vr = a.rv ? a.rvp * es + 16 : 0;
  a.qr_pitch = std::max(a.rkp, a.rvp) + 4;
  a.off_qr = bm * a.row_d;
  if (mma) {
    a.off_p = a.off_qr + 2 * bm * a.row_kr;
    a.off_area = a.off_p;
  } else {
    a.off_p = a.off_qr + (a.rk || a.rv ? bm * a.qr_pitch * 4 : 0);
    a.off_area = a.off_p + bm * (bn + 4) * 4;
  }
  a.st_v = bn * a.row_d;
  a.st_kr = 2 * bn * a.row_d;
  a.st_vr = a.st_kr + bn * a.row_kr;
  a.stage_bytes = a.st_vr + bn * a.row_vr;
  // The B factors pass through the stage area: all rank rows (mma) or 32 at a time (FMA).
  const int factor = (mma ? std::max(a.rkp, a.rvp) : (a.rk || a.rv ? 32 : 0)) * a.row_d;
  const int two = a.off_area + std::max(2 * a.stage_bytes, factor), one = a.off_area + std::max(a.stage_bytes, factor);
  a.two_stage = two <= optin;
  if (one > optin)
    throw Error(ErrorCode::Unsupported, "attention.flashLora (cuda): head dim " + std::to_string(d) + " with ranks " +
                                            std::to_string(a.rk) + "/" + std::to_string(a.rv) + " needs " + std::to_string(one) +
                                            " bytes of shared memory per block, the device allows " + std::to_string(optin));
  return a.two_stage ? two : one;
}

bool aligned16(const void* p, std::initializer_list<long long> strides, int es) {
  if (reinterpret_cast<uintptr_t>(p) % 16) return false;
  for (long long s : strides)
    if (s * es % 16) return false;
  return true;
}

template <class K>
void launch(K* kernel, dim3 grid, int smem, cudaStream_t st, const FwdArgs& a, const char* what) {
  if (smem > 48 * 1024) LK_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  simt_launch(kernel, grid, dim3(kThreads), static_cast<size_t>(smem), st, a);
  LK_CUDA_CHECK_LAUNCH(what);
}

}  // namespace

void flash_lora_forward(const FlashLoraParams& p, int device) {
  constexpr const char* op = "attention.flashLora";
  if (p.batch == 0 || p.seq_q == 0) return;
  const cudaStream_t st = begin_op(device, op);
  const long long group = p.heads_q / p.heads_k;
  if (p.batch > INT_MAX || p.seq_q > INT_MAX || p.seq_k > INT_MAX - 256 || p.heads_q > INT_MAX || p.seq_q * group > INT_MAX ||
      p.heads_k > 65535 || p.batch > 65535)
    throw Error(ErrorCode::Unsupported, std::string(op) + " (cuda): B ≤ 65535, Hk ≤ 65535 and Sq·Hq/Hk, Sk below 2^31 (B " +
                                            std::to_string(p.batch) + ", Sq " + std::to_string(p.seq_q) + ", Sk " +
                                            std::to_string(p.seq_k) + ", Hq " + std::to_string(p.heads_q) + ", Hk " +
                                            std::to_string(p.heads_k) + ")");
  const int es = static_cast<int>(dtype_size(p.dtype));
  const DeviceProps props = device_props(device);
  int optin = 0;
  LK_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));

  FwdArgs a{};
  a.q = p.q.data, a.k = p.k_base.data, a.v = p.v_base.data;
  a.kr = p.k_rank ? p.k_low_rank.data : nullptr, a.vr = p.v_rank ? p.v_low_rank.data : nullptr;
  a.klb = p.k_rank ? p.k_lora_b : nullptr, a.vlb = p.v_rank ? p.v_lora_b : nullptr;
  a.q_b = p.q.batch_stride, a.q_s = p.q.seq_stride, a.q_h = p.q.head_stride;
  a.k_b = p.k_base.batch_stride, a.k_s = p.k_base.seq_stride, a.k_h = p.k_base.head_stride;
  a.v_b = p.v_base.batch_stride, a.v_s = p.v_base.seq_stride, a.v_h = p.v_base.head_stride;
  a.kr_b = p.k_low_rank.batch_stride, a.kr_s = p.k_low_rank.seq_stride;
  a.vr_b = p.v_low_rank.batch_stride, a.vr_s = p.v_low_rank.seq_stride;
  a.ids = p.adapter_ids;
  a.out = p.out.data, a.o_b = p.out.batch_stride, a.o_s = p.out.seq_stride, a.o_h = p.out.head_stride;
  a.lse = p.lse;
  a.batch = static_cast<int>(p.batch), a.sq = static_cast<int>(p.seq_q), a.sk = static_cast<int>(p.seq_k);
  a.hq = static_cast<int>(p.heads_q), a.group = static_cast<int>(group), a.adapters = static_cast<int>(std::min<int64_t>(p.adapters, INT_MAX));
  a.rk = static_cast<int>(p.k_rank), a.rv = static_cast<int>(p.v_rank);
  a.head_dim = static_cast<int>(p.head_dim);
  a.scale_log2 = p.softmax_scale * 1.44269504088896341f;
  a.causal = p.causal;
  a.vec = (aligned16(a.q, {a.q_b, a.q_s, a.q_h}, es) ? kVecQ : 0u) | (aligned16(a.k, {a.k_b, a.k_s, a.k_h}, es) ? kVecK : 0u) |
          (aligned16(a.v, {a.v_b, a.v_s, a.v_h}, es) ? kVecV : 0u) | (a.kr && aligned16(a.kr, {a.kr_b, a.kr_s}, es) ? kVecKr : 0u) |
          (a.vr && aligned16(a.vr, {a.vr_b, a.vr_s}, es) ? kVecVr : 0u) | (a.klb && aligned16(a.klb, {}, es) ? kVecKlb : 0u) |
          (a.vlb && aligned16(a.vlb, {}, es) ? kVecVlb : 0u);

  // sm_90a: the Hopper kernel takes the prefill-sized problems it covers (cuda/flash_lora_wgmma.cu);
  // decode (at most 16 rows per KV head: split-KV) stays here.
  if (static_cast<long long>(a.sq) * a.group > kDecodeRows && wgmma_covers(a, p.dtype, props.cc)) return run_wgmma(a, p.dtype, device, st);
  const bool mma = p.dtype != DType::Float32 && props.cc >= 80;
  with_head_dim(p.head_dim, "attention.flashLora", [&](auto dc) {
    constexpr int D = decltype(dc)::value;
    const int bm = mma ? kMmaBM : kFmaBM, bn = mma ? mma_bn<D>() : fma_bn<D>();
    const int smem = plan_smem(a, mma, es, bm, bn, optin);
    // Split-KV when a KV head's rows fit one m16 tile and the grid would not fill two waves.
    const long long rows = static_cast<long long>(a.sq) * a.group, row_tiles = ceil_div<long long>(rows, bm);
    const int tiles = static_cast<int>(ceil_div<long long>(a.sk, bn));
    const long long ctas = row_tiles * p.heads_k * p.batch;
    int splits = 1;
    if (rows <= kDecodeRows && tiles >= 2 && ctas < 2LL * props.sm_count)
      splits = static_cast<int>(std::min<long long>({ceil_div<long long>(2LL * props.sm_count, ctas), tiles, kMaxSplits, 65535 / p.batch}));
    a.tiles_per_split = ceil_div(tiles, splits);
    a.splits = ceil_div(tiles, a.tiles_per_split);
    if (row_tiles > INT_MAX) throw Error(ErrorCode::Unsupported, std::string(op) + " (cuda): too many query rows");
    const dim3 grid(static_cast<unsigned>(row_tiles), static_cast<unsigned>(p.heads_k), static_cast<unsigned>(p.batch * a.splits));
    const size_t part_rows = static_cast<size_t>(a.splits) * p.batch * p.heads_q * p.seq_q;
    std::optional<DeviceScratch> scratch;
    if (a.splits > 1) {
      scratch.emplace(device, part_rows * (D + 1) * sizeof(float));
      a.part_o = scratch->as<float>();
      a.part_lse = a.part_o + part_rows * D;
    }
    note_plan(std::string("flash_lora ") + (mma ? "mma " : "fma ") + dtype_name(p.dtype) + " D=" + std::to_string(D) +
              " BM=" + std::to_string(bm) + " BN=" + std::to_string(bn) + (a.two_stage ? " 2 stages" : " 1 stage") +
              (a.splits > 1 ? " split-kv " + std::to_string(a.splits) : ""));
    with_element(p.dtype, op, [&](auto e) {
      using E = decltype(e);
      if constexpr (std::is_same_v<E, F32>) {
        launch(flash_lora_fma_kernel<E, D>, grid, smem, st, a, "flash_lora_fma_kernel launch");
      } else if (mma) {
        if (std::max(a.rkp, a.rvp) <= 32) launch(flash_lora_mma_kernel<E, D, 32>, grid, smem, st, a, "flash_lora_mma_kernel launch");
        else launch(flash_lora_mma_kernel<E, D, 128>, grid, smem, st, a, "flash_lora_mma_kernel launch");
      } else {
        launch(flash_lora_fma_kernel<E, D>, grid, smem, st, a, "flash_lora_fma_kernel launch");
      }
      if (a.splits > 1) {
        simt_launch(flash_lora_combine_kernel<E>, dim3(static_cast<unsigned>(p.batch * p.heads_q * p.seq_q)), dim3(kThreads), 0, st, a);
        LK_CUDA_CHECK_LAUNCH("flash_lora_combine_kernel launch");
      }
    });
  });
}

}  // namespace lk::cuda_ops
