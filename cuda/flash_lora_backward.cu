// Flash-LoRA-Attention backward on CUDA (the math: csrc/ops/flash_lora.h), FA2-style: P is
// recomputed from the forward's lse, never stored, and every CTA owns one key tile of one KV head,
// so dK and dV live in its registers for the whole pass and are written without atomics.
//
// 1. flash_lora_bwd_prep_kernel, one warp per query row (b, h, i):
//      D_i = Σ_d dO·O,  dOB = dO·v_lora_b[ℓ, g]ᵀ [rv],  qB = q·k_lora_b[ℓ, g]ᵀ [rk]   (float32)
//    so that, with the row extended to [q | qB] and the key to [k_base | k_low_rank],
//      S = scale·[q | qB]·[k_base | k_low_rank]ᵀ,  dO·vᵀ = [dO | dOB]·[v_base | v_low_rank]ᵀ
//    are single dot products of length D + r: the low-rank caches stay [Sk, r] (never ·B to D).
// 2. flash_lora_bwd_kernel, one CTA per (32-key tile, KV head g, sequence b), 256 threads. The
//    extended key and value tiles stay in shared memory (float32); the CTA walks the query heads of
//    g's group and their 32-row query tiles (causal: from the first tile that sees the key tile) and
//    per step computes S, dP (2×2 per thread), P = exp(S − lse), dS = P ⊙ (dP − D), then
//      dV += Pᵀ·dO, dK += dSᵀ·q          (registers: 2 keys × D/16 dims per thread each)
//      [dQ | dQL] += dS·[k_base | k_low_rank]   (float32 scratch, atomicAdd; dQL = dS·k_low_rank)
//    At the end it writes grad_k_base / grad_v_base (scale·dK, dV; its own rows, in the dtype) and
//    adds the low-rank grads of its tile to float32 scratch with atomics:
//      grad_v_low_rank[b, n] += dV[n]·v_lora_b[ℓ, g]ᵀ  (summed over the Hk CTAs of the key tile),
//      grad_v_lora_b[ℓ, g] += v_low_rank[tile]ᵀ·dV[tile]  (summed over tiles and sequences of ℓ),
//    the key path likewise with scale·dK.
// 3. flash_lora_bwd_dq_kernel: grad_q = scale·(dQ + dQL·k_lora_b[ℓ, g]), rounded once; then
//    flash_lora_bwd_store_kernel rounds the low-rank scratch sums once into the dtype.
// Every product runs in float32 FMA (no TF32) on float32 inputs in shared memory, for all dtypes.
//
// Napkin math (B = 1, Sq = Sk = 4096, Hq = 32, Hk = 8, D = 128, r = 16, causal, H200): a step is
// 32·32·(2(D + r) + 2D + (D + r)) ≈ 0.69 M FMA; ~half the (Sq/32)·(Sk/32) steps per head pair
// survive the causal skip: 32 heads · 8192 steps · 0.69 M ≈ 0.18 T FMA. Each FMA of the 2×2
// micro-tiles needs one shared-memory load, so ~32 FMA/clk/SM (a quarter of the FP32 pipe):
// ~0.18 T / (132 · 32 · 1.7 G/s) ≈ 25 ms, against ~1-2 ms for a tensor-core FA2 backward — this is
// the exact-float32 kernel, used for float32 and for float16/bfloat16 below sm_80 (or when the
// tensor-core kernel's shared memory does not fit the device).
// 2'. float16 / bfloat16 on sm_80+: flash_lora_bwd_mma_kernel (mma.sync, described at its code)
//    replaces step 2; the prep kernel then also writes qB and dOB in the dtype as hi + lo halves.
// Shared memory: (32 + 32)·((D + rk | 1) + (D + rv | 1)) floats + the 2 score tiles: 201 KiB at
// D = 256, rk = rv = 128 (sm_90 allows 227 KiB; A100's 163 KiB every D ≤ 128, and D = 256 with
// rk + rv ≤ ~100; Turing's 64 KiB only small D and ranks): ERR_UNSUPPORTED past the device's limit.
#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <initializer_list>
#include <string>
#include <type_traits>

#include "common.cuh"
#include "flash_lora.cuh"
#include "flash_lora_common.cuh"

namespace lk::cuda_ops {
namespace {

using namespace flash_lora;

constexpr int kBM = 32;       // query rows per step
constexpr int kBN = 32;       // keys per CTA
constexpr int kThreads = 256;
constexpr int kPrepWarps = 4;  // query rows per block of the prep kernel
constexpr int kEltThreads = 256;

struct BwdArgs {
  int batch, seq_q, seq_k, heads_q, heads_k, group, adapters, rk, rv;
  bool causal;
  float scale;
  AttnTensor q, k_base, v_base, k_low_rank, v_low_rank, grad_out, out;
  const void* k_lora_b;
  const void* v_lora_b;
  const int32_t* ids;
  const float* lse;    // [B, Hq, Sq]
  float* dsum;         // [B, Hq, Sq]
  float* qext;         // [B, Hq, Sq, rk]: q·k_lora_bᵀ
  float* doext;        // [B, Hq, Sq, rv]: dO·v_lora_bᵀ
  float* dq;           // [B, Hq, Sq, D + rk]: dS·[k_base | k_low_rank] (zeroed)
  AttnOutTensor grad_k_base, grad_v_base;
  float* gkl;          // [B, Sk, rk] (zeroed)
  float* gvl;          // [B, Sk, rv] (zeroed)
  float* gkb;          // [L, Hk, rk, D] (zeroed)
  float* gvb;          // [L, Hk, rv, D] (zeroed)
  // Tensor-core kernel only (else null / 0):
  void* qx16;          // [B, Hq, Sq, 2·rkp] dtype: q·k_lora_bᵀ as hi | lo (zero past rk)
  void* dox16;         // [B, Hq, Sq, 2·rvp] dtype: dO·v_lora_bᵀ as hi | lo
  int rkp, rvp;        // ranks padded to 16 (0 without the path)
  int pk, pv, pp;      // shared row pitches in bytes: (D + 2·rkp)·e + 16, (D + 2·rvp)·e + 16, BN·e + 16
  int off_v, off_q, off_do, off_p, off_ds, q_stage, do_stage;
  bool two_stage;
  unsigned vec;        // operands whose rows are 16-byte aligned (cp.async)
};

enum : unsigned { kVecQ = 1, kVecK = 2, kVecV = 4, kVecKr = 8, kVecVr = 16, kVecDO = 32 };

#if defined(SIMT_DEVICE_PATH)
template <class E>
__device__ __forceinline__ float ld(const void* base, long long i) {
  return E::to_float(static_cast<const typename E::storage*>(base)[i]);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o >= 1; o /= 2) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

// The sequence's adapter, or −1: an id outside [0, L) means no adapter (null ids: adapter 0).
__device__ __forceinline__ int adapter_of(const BwdArgs& a, int b) {
  const int l = a.ids ? a.ids[b] : 0;
  return l >= 0 && l < a.adapters ? l : -1;
}

// ext[t] = Σ_d row[d]·lora_b[t, d] for t < r (lanes over t; the row is in this warp's shared
// memory, each lane streams one B row, which every query row of the head reads again from L1/L2).
template <class E, int D>
__device__ __forceinline__ void project_row(const float* row, const void* lora_b, int l, int g, int heads_k, int r, float* ext,
                                            int lane, typename E::storage* ext16, int rp) {
  for (int t = lane; t < r; t += 32) {
    float acc = 0.f;
    if (l >= 0) {
      const long long b0 = ((static_cast<long long>(l) * heads_k + g) * r + t) * D;
#pragma unroll 8
      for (int d = 0; d < D; ++d) acc = fmaf(row[d], ld<E>(lora_b, b0 + d), acc);
    }
    ext[t] = acc;
    if constexpr (sizeof(typename E::storage) == 2) {
      if (ext16) {  // the tensor-core kernel's copy: hi + lo halves (their sum keeps ~2× the mantissa)
        const auto hi = E::from_float(acc);
        ext16[t] = hi;
        ext16[rp + t] = E::from_float(acc - E::to_float(hi));
      }
    }
  }
  if (ext16)
    for (int t = r + lane; t < rp; t += 32) ext16[t] = ext16[rp + t] = 0;  // padded ranks read as 0
}
#endif

template <class E, int D>
__global__ void __launch_bounds__(kPrepWarps * 32) flash_lora_bwd_prep_kernel(BwdArgs a) {
#if defined(SIMT_DEVICE_PATH)
  __shared__ float rows_s[kPrepWarps][2][D];  // this warp's dO and q rows
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const long long row = static_cast<long long>(blockIdx.x) * kPrepWarps + warp;
  if (row >= static_cast<long long>(a.batch) * a.heads_q * a.seq_q) return;  // whole warps leave
  const int i = static_cast<int>(row % a.seq_q), h = static_cast<int>(row / a.seq_q % a.heads_q);
  const int b = static_cast<int>(row / (static_cast<long long>(a.seq_q) * a.heads_q)), g = h / a.group;
  const long long go = b * a.grad_out.batch_stride + i * a.grad_out.seq_stride + h * a.grad_out.head_stride;
  const long long oo = b * a.out.batch_stride + i * a.out.seq_stride + h * a.out.head_stride;
  const long long qo = b * a.q.batch_stride + i * a.q.seq_stride + h * a.q.head_stride;
  float* dos = rows_s[warp][0];
  float* qs = rows_s[warp][1];
  float s = 0.f;
  for (int d = lane; d < D; d += 32) {
    const float dov = ld<E>(a.grad_out.data, go + d);
    s = fmaf(dov, ld<E>(a.out.data, oo + d), s);
    dos[d] = dov;
    if (a.rk > 0) qs[d] = ld<E>(a.q.data, qo + d);
  }
  s = warp_sum(s);
  if (lane == 0) a.dsum[row] = s;
  __syncwarp();
  const int l = adapter_of(a, b);
  using S = typename E::storage;
  if (a.rv > 0)
    project_row<E, D>(dos, a.v_lora_b, l, g, a.heads_k, a.rv, a.doext + row * a.rv, lane,
                      a.dox16 ? static_cast<S*>(a.dox16) + row * 2 * a.rvp : nullptr, a.rvp);
  if (a.rk > 0)
    project_row<E, D>(qs, a.k_lora_b, l, g, a.heads_k, a.rk, a.qext + row * a.rk, lane,
                      a.qx16 ? static_cast<S*>(a.qx16) + row * 2 * a.rkp : nullptr, a.rkp);
#endif
}

#if defined(SIMT_DEVICE_PATH)
// One extended [rows, D + r] tile into shared memory (row stride `stride`), float32: columns < D
// from the [B, S, H, D] operand, the rest from the [.., r] low-rank source, zero past `valid` rows.
// ext(row, c) returns the low-rank value at c < r.
template <class E, int D, class Ext>
__device__ __forceinline__ void load_tile(float* tile, int rows, int stride, int width, int valid, const void* base,
                                          long long row0, long long row_stride, Ext ext) {
  for (int e = threadIdx.x; e < rows * width; e += kThreads) {
    const int j = e / width, w = e % width;
    float v = 0.f;
    if (j < valid) v = w < D ? ld<E>(base, row0 + j * row_stride + w) : ext(j, w - D);
    tile[j * stride + w] = v;
  }
}

// The low-rank grads of one finished tile (dX: [BN][D + 1] floats, scale folded in; xv(j, t): the
// low-rank cache value of the tile's key j at rank t): per key n, lr[b, n] += dX[n]·Bᵀ; and
// bg[ℓ, g] += X_lrᵀ·dX. Lanes run over keys (first sum: B broadcast, dX rows on distinct banks)
// and over d (second sum: the X_lr value broadcast).
template <class E, int D, int BN, int NT, class X>
__device__ __forceinline__ void low_rank_grads(const BwdArgs& a, const float* dx, X xv, const void* lora_b, int r, float* lr,
                                               float* bg, int b, int g, int l, int n0) {
  const long long b0 = (static_cast<long long>(l) * a.heads_k + g) * r * D;
  for (int e = threadIdx.x; e < BN * r; e += NT) {
    const int j = e % BN, t = e / BN, n = n0 + j;
    if (n >= a.seq_k) continue;
    float acc = 0.f;
#pragma unroll 8
    for (int d = 0; d < D; ++d) acc = fmaf(dx[j * (D + 1) + d], ld<E>(lora_b, b0 + t * D + d), acc);
    atomicAdd(lr + (static_cast<long long>(b) * a.seq_k + n) * r + t, acc);
  }
  for (int e = threadIdx.x; e < r * D; e += NT) {
    const int d = e % D, t = e / D;
    float acc = 0.f;
#pragma unroll 8
    for (int j = 0; j < BN; ++j) acc = fmaf(xv(j, t), dx[j * (D + 1) + d], acc);
    atomicAdd(bg + b0 + e, acc);
  }
}
#endif

template <class E, int D>
__global__ void __launch_bounds__(kThreads) flash_lora_bwd_kernel(BwdArgs a) {
#if defined(SIMT_DEVICE_PATH)
  constexpr int DT = D / 16;   // dims per thread of the dK / dV accumulators
  constexpr int PS = kBN + 1;  // row stride of the P and dS tiles
  // Odd row strides: the 16 keys (or rows) a warp reads at one column fall on 16 distinct banks.
  const int wk = D + a.rk, wv = D + a.rv, sk = wk | 1, sv = wv | 1;
  SIMT_DYNAMIC_SHARED(float, smem);
  float* qx = smem;             // [kBM][sk]: [q | qB]
  float* dox = qx + kBM * sk;   // [kBM][sv]: [dO | dOB]
  float* kx = dox + kBM * sv;   // [kBN][sk]: [k_base | k_low_rank]
  float* vx = kx + kBN * sk;    // [kBN][sv]: [v_base | v_low_rank]
  float* ps = vx + kBN * sv;    // [kBM][PS]: P
  float* dss = ps + kBM * PS;   // [kBM][PS]: dS
  float* lse_s = dss + kBM * PS;
  float* dsum_s = lse_s + kBM;

  const int b = blockIdx.z, g = blockIdx.y, n0 = blockIdx.x * kBN, tid = threadIdx.x;
  const int l = adapter_of(a, b), kvalid = min(kBN, a.seq_k - n0);
  {
    const long long kvo = static_cast<long long>(b) * a.k_base.batch_stride + static_cast<long long>(n0) * a.k_base.seq_stride +
                          g * a.k_base.head_stride;
    const long long vvo = static_cast<long long>(b) * a.v_base.batch_stride + static_cast<long long>(n0) * a.v_base.seq_stride +
                          g * a.v_base.head_stride;
    load_tile<E, D>(kx, kBN, sk, wk, kvalid, a.k_base.data, kvo, a.k_base.seq_stride, [&](int j, int c) {
      return l < 0 ? 0.f
                   : ld<E>(a.k_low_rank.data, b * a.k_low_rank.batch_stride + (n0 + j) * a.k_low_rank.seq_stride + c);
    });
    load_tile<E, D>(vx, kBN, sv, wv, kvalid, a.v_base.data, vvo, a.v_base.seq_stride, [&](int j, int c) {
      return l < 0 ? 0.f
                   : ld<E>(a.v_low_rank.data, b * a.v_low_rank.batch_stride + (n0 + j) * a.v_low_rank.seq_stride + c);
    });
  }

  const int ty = tid / 16, tx = tid % 16;  // scores: rows ty, ty + 16 × keys tx, tx + 16
  const int warp = tid / 32, lane = tid % 32;
  const int kj = 4 * warp + 2 * (lane / 16), dl = lane % 16;  // dK, dV: keys kj, kj + 1 × dims dl + 16·t
  float dk[2][DT], dv[2][DT];
#pragma unroll
  for (int c = 0; c < 2; ++c)
#pragma unroll
    for (int t = 0; t < DT; ++t) dk[c][t] = dv[c][t] = 0.f;

  // Causal, bottom-right aligned: key n is visible to query m iff n ≤ m + shift, so the tile's
  // first key n0 is seen from query n0 − shift on; earlier query tiles are skipped whole.
  const int shift = a.seq_k - a.seq_q;
  const int m_begin = a.causal ? max(0, n0 - shift) / kBM * kBM : 0;
  for (int hh = 0; hh < a.group; ++hh) {
    const int h = g * a.group + hh;
    const long long row0 = (static_cast<long long>(b) * a.heads_q + h) * a.seq_q;  // scratch row of query 0
    for (int m0 = m_begin; m0 < a.seq_q; m0 += kBM) {
      const int qvalid = min(kBM, a.seq_q - m0);
      __syncthreads();  // the previous step is done with qx, dox, ps, dss
      load_tile<E, D>(qx, kBM, sk, wk, qvalid, a.q.data,
                      b * a.q.batch_stride + static_cast<long long>(m0) * a.q.seq_stride + h * a.q.head_stride, a.q.seq_stride,
                      [&](int i, int c) { return a.qext[(row0 + m0 + i) * a.rk + c]; });
      load_tile<E, D>(dox, kBM, sv, wv, qvalid, a.grad_out.data,
                      b * a.grad_out.batch_stride + static_cast<long long>(m0) * a.grad_out.seq_stride + h * a.grad_out.head_stride,
                      a.grad_out.seq_stride, [&](int i, int c) { return a.doext[(row0 + m0 + i) * a.rv + c]; });
      if (tid < kBM) {  // padding rows: lse = −∞ gives P = 0
        lse_s[tid] = tid < qvalid ? a.lse[row0 + m0 + tid] : -INFINITY;
        dsum_s[tid] = tid < qvalid ? a.dsum[row0 + m0 + tid] : 0.f;
      }
      __syncthreads();

      float s[2][2] = {{0.f, 0.f}, {0.f, 0.f}}, dp[2][2] = {{0.f, 0.f}, {0.f, 0.f}};
      for (int w = 0; w < wk; ++w) {
        const float q0 = qx[ty * sk + w], q1 = qx[(ty + 16) * sk + w], k0 = kx[tx * sk + w], k1 = kx[(tx + 16) * sk + w];
        s[0][0] = fmaf(q0, k0, s[0][0]);
        s[0][1] = fmaf(q0, k1, s[0][1]);
        s[1][0] = fmaf(q1, k0, s[1][0]);
        s[1][1] = fmaf(q1, k1, s[1][1]);
      }
      for (int w = 0; w < wv; ++w) {
        const float o0 = dox[ty * sv + w], o1 = dox[(ty + 16) * sv + w], v0 = vx[tx * sv + w], v1 = vx[(tx + 16) * sv + w];
        dp[0][0] = fmaf(o0, v0, dp[0][0]);
        dp[0][1] = fmaf(o0, v1, dp[0][1]);
        dp[1][0] = fmaf(o1, v0, dp[1][0]);
        dp[1][1] = fmaf(o1, v1, dp[1][1]);
      }
#pragma unroll
      for (int r = 0; r < 2; ++r)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const int i = ty + 16 * r, j = tx + 16 * c;
          const float lse = lse_s[i];
          // A row that sees no key has lse = −∞ and P = 0 (exp(S − lse) would be +∞).
          const bool visible = j < kvalid && lse != -INFINITY && (!a.causal || n0 + j <= m0 + i + shift);
          const float p = visible ? expf(fmaf(a.scale, s[r][c], -lse)) : 0.f;
          ps[i * PS + j] = p;
          dss[i * PS + j] = p * (dp[r][c] - dsum_s[i]);
        }
      __syncthreads();

#pragma unroll 4
      for (int i = 0; i < kBM; ++i) {
        const float p0 = ps[i * PS + kj], p1 = ps[i * PS + kj + 1], d0 = dss[i * PS + kj], d1 = dss[i * PS + kj + 1];
#pragma unroll
        for (int t = 0; t < DT; ++t) {
          const float o = dox[i * sv + dl + 16 * t], qv = qx[i * sk + dl + 16 * t];
          dv[0][t] = fmaf(p0, o, dv[0][t]);
          dv[1][t] = fmaf(p1, o, dv[1][t]);
          dk[0][t] = fmaf(d0, qv, dk[0][t]);
          dk[1][t] = fmaf(d1, qv, dk[1][t]);
        }
      }
      // [dQ | dQL] rows i and i + 16, column w: Σ_j dS[i, j]·kx[j, w].
      for (int e = tid; e < (kBM / 2) * wk; e += kThreads) {
        const int i = e / wk, w = e % wk;
        float acc0 = 0.f, acc1 = 0.f;
#pragma unroll 8
        for (int j = 0; j < kBN; ++j) {
          const float kv = kx[j * sk + w];
          acc0 = fmaf(dss[i * PS + j], kv, acc0);
          acc1 = fmaf(dss[(i + kBM / 2) * PS + j], kv, acc1);
        }
        if (i < qvalid) atomicAdd(a.dq + (row0 + m0 + i) * wk + w, acc0);
        if (i + kBM / 2 < qvalid) atomicAdd(a.dq + (row0 + m0 + i + kBM / 2) * wk + w, acc1);
      }
    }
  }

  // This CTA's rows of grad_k_base / grad_v_base: every query head of the group is summed in.
#pragma unroll
  for (int c = 0; c < 2; ++c) {
    const int n = n0 + kj + c;
    if (n >= a.seq_k) continue;
    using S = typename E::storage;
    S* gk = static_cast<S*>(a.grad_k_base.data) + b * a.grad_k_base.batch_stride + n * a.grad_k_base.seq_stride +
            g * a.grad_k_base.head_stride;
    S* gv = static_cast<S*>(a.grad_v_base.data) + b * a.grad_v_base.batch_stride + n * a.grad_v_base.seq_stride +
            g * a.grad_v_base.head_stride;
#pragma unroll
    for (int t = 0; t < DT; ++t) {
      gk[dl + 16 * t] = E::from_float(a.scale * dk[c][t]);
      gv[dl + 16 * t] = E::from_float(dv[c][t]);
    }
  }
  if (l < 0 || (a.rk == 0 && a.rv == 0)) return;  // uniform over the CTA
  // dV and scale·dK of the tile into shared memory over qx / dox (each holds kBM·sk ≥ kBN·(D + 1)).
  __syncthreads();
  float* dvs = qx;
  float* dks = dox;
#pragma unroll
  for (int c = 0; c < 2; ++c)
#pragma unroll
    for (int t = 0; t < DT; ++t) {
      dvs[(kj + c) * (D + 1) + dl + 16 * t] = dv[c][t];
      dks[(kj + c) * (D + 1) + dl + 16 * t] = a.scale * dk[c][t];
    }
  __syncthreads();
  if (a.rv > 0)
    low_rank_grads<E, D, kBN, kThreads>(a, dvs, [&](int j, int t) { return vx[j * sv + D + t]; }, a.v_lora_b, a.rv, a.gvl, a.gvb, b,
                                        g, l, n0);
  if (a.rk > 0)
    low_rank_grads<E, D, kBN, kThreads>(a, dks, [&](int j, int t) { return kx[j * sk + D + t]; }, a.k_lora_b, a.rk, a.gkl, a.gkb, b,
                                        g, l, n0);
#endif
}

// ---- float16 / bfloat16 on sm_80+: mma.sync m16n8k16 (float32 accumulation) ------------------
// One CTA of 8 warps per (key tile of BN = 64 keys, 32 at D = 256; KV head g; sequence b). Shared
// memory (dtype, rows padded by 16 B so the 8 rows of an ldmatrix fall in 8 bank groups):
//   K = [k_base | k_low_rank | k_low_rank], V = [v_base | v_low_rank | v_low_rank]  (BN rows, once),
//   Q = [q | qB_hi | qB_lo], dO = [dO | dOB_hi | dOB_lo]   (BM = 64 rows, two cp.async stages when
//   they fit), P and dS (BM × BN). The low-rank products qB = q·k_lora_bᵀ, dOB = dO·v_lora_bᵀ come
//   from the prep kernel as hi + lo halves, so S = Q·Kᵀ and dP = dO·Vᵀ stay single products with
//   the low-rank terms at ~float32 accuracy, and the caches stay [Sk, r].
// Per (query head, 64-row query tile) step:
//   S, dP: warp w → query rows 16·(w % 4) …, keys (BN/2)·(w / 4) …  (registers);
//   P = exp2(S·scale·log2e − lse·log2e), dS = P ⊙ (dP − D) → shared memory as hi + lo halves;
//   dV += Pᵀ·dO, dK += dSᵀ·Q: warp w → keys 16·(w % (BN/16)) …, a D/(8/(BN/16)) column slice
//   (Pᵀ / dSᵀ by ldmatrix.trans; accumulators in registers for the whole pass);
//   [dQ | dQL] += dS·[k_base | k_low_rank]: warp w → rows 16·(w % 4), every other 16-column chunk,
//   float32 atomics into the scratch the dq kernel finishes (as in the FMA kernel).
// P and dS enter their products as hi + lo (two mma each) rather than rounded once as FA2 does:
// with one rounding, dK / dQ elements where the per-query terms dS·q cancel missed the tests'
// per-element bound (bf16: 2.85× the tolerance on the gradKBase of a causal D = 80 case; 0.2× with
// hi + lo, as the CPU's float32). Per step the mma work spans 5D + 5r columns (S, dP: D + 2r each;
// dV, dK: D; dQ: D + r) with one rounding and 8D + 6r with hi + lo (+52% at D = 128, r = 16): a
// trade still to be measured on a GPU.
// Registers per thread (sm_90, -Xptxas -v, no spills): 117–171; dK + dV hold 2·(D/8/(8/(BN/16)))·4
// = 64 floats at D = 128 and 256, S + dP 32.
// Napkin math (bf16, B = 1, Sq = Sk = 4096, Hq = 32, Hk = 8, D = 128, r = 16 both paths, causal):
// a step is 64·64·2·(8D + 6r) ≈ 9.2 MFLOP of mma; 64 key tiles · 32 heads · ~32 surviving query
// tiles ≈ 65 k steps → ~0.6 TFLOP, ~1.5–2 ms at FA2-class (30–40%) mma utilization of an H200.
// Shared memory: BN·(pk + pv) + stages·64·(pk + pv) + 4·64·(BN·2 + 16) bytes (pk = (D + 2·rkp)·2 +
// 16): bf16 D = 128, r = 16: 42 + 2·42 + 36 = 162 KiB (two stages); past the device's limit one
// stage, past that (D = 128 with rk = rv = 128 on sm_90, more on A100) the FMA kernel.
constexpr int kMmaThreads = 256;
constexpr int kMmaBM = 64;

#if defined(SIMT_DEVICE_PATH)


// Rows [0, rows) × `chunks` 16-byte chunks from byte column col0 of a shared tile (pitch bytes per
// row): row r from src(r) (null: zeros), `valid` elements per row (the rest zeros).
template <class S, class Src>
__device__ __forceinline__ void copy_rows(unsigned char* tile, int pitch, int col0, int rows, int chunks, int valid, bool vec,
                                          const void* base, Src src) {
  constexpr int VE = 16 / static_cast<int>(sizeof(S));
  for (int e = threadIdx.x; e < rows * chunks; e += kMmaThreads) {
    const int r = e / chunks, c = e % chunks;
    const S* row = src(r);
    const int n = row ? min(VE, max(0, valid - c * VE)) : 0;
    unsigned char* dst = tile + r * pitch + col0 + c * 16;
    if (SIMT_CUDA_ARCH >= 800 && vec) {  // cp.async: sm_80+ (the only arch the kernel body is built for)
      ptx::cp_async_16(dst, n ? static_cast<const void*>(row + c * VE) : base, n * static_cast<int>(sizeof(S)));
    } else {
      S* d = reinterpret_cast<S*>(dst);
#pragma unroll
      for (int i = 0; i < VE; ++i) d[i] = i < n ? row[c * VE + i] : S(0);
    }
  }
}

// acc[nf] += A(16 rows at a_tile) · B(keys at b_tile)ᵀ over k-steps [k0, k1) (16 columns each).
template <class E, int NF>
__device__ __forceinline__ void mma_rows_keys(float (&acc)[NF][4], const unsigned char* a_tile, const unsigned char* b_tile,
                                              int pitch, int k0, int k1, int lane) {
  const int a_row = lane % 16, a_col = (lane / 16) * 16;
  const int bk_row = lane % 8 + 8 * (lane / 16), bk_col = ((lane / 8) % 2) * 16;
  for (int ks = k0; ks < k1; ++ks) {
    uint32_t af[4];
    ptx::ldmatrix_x4(af, a_tile + a_row * pitch + a_col + ks * 32);
#pragma unroll
    for (int nf = 0; nf < NF; nf += 2) {
      uint32_t b[4];
      ptx::ldmatrix_x4(b, b_tile + (nf * 8 + bk_row) * pitch + bk_col + ks * 32);
      mma16<E>(acc[nf], af, b[0], b[1]);
      mma16<E>(acc[nf + 1], af, b[2], b[3]);
    }
  }
}

template <class E, int D>
__device__ __forceinline__ void mma_backward(const BwdArgs& a) {
  using S = typename E::storage;
  constexpr int BM = kMmaBM, BN = mma_bn<D>(), ES = 2, CD = D * ES / 16;
  constexpr int KSLABS = BN / 16, FW = D / 8 / (8 / KSLABS);  // dK / dV: key slabs, 8-column fragments per warp
  constexpr int NF = BN / 16;                                   // S / dP fragments per warp (BN/2 keys)
  SIMT_DYNAMIC_SHARED(unsigned char, smem);
  unsigned char* const kt = smem;
  unsigned char* const vt = smem + a.off_v;
  unsigned char* const ps = smem + a.off_p;    // P hi, then P lo (BM × BN each)
  unsigned char* const dss = smem + a.off_ds;  // dS hi, then dS lo
  const int plo = BM * a.pp;                   // byte offset of the lo tiles
  const int b = blockIdx.z, g = blockIdx.y, n0 = blockIdx.x * BN;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, gq = lane / 4, qq = lane % 4;
  const int l = adapter_of(a, b);
  const int pk = a.pk, pv = a.pv, pp = a.pp;
  {
    const S* k = static_cast<const S*>(a.k_base.data) + b * a.k_base.batch_stride + g * a.k_base.head_stride;
    const S* v = static_cast<const S*>(a.v_base.data) + b * a.v_base.batch_stride + g * a.v_base.head_stride;
    copy_rows<S>(kt, pk, 0, BN, CD, D, a.vec & kVecK, a.k_base.data, [&](int r) -> const S* {
      return n0 + r < a.seq_k ? k + static_cast<long long>(n0 + r) * a.k_base.seq_stride : nullptr;
    });
    copy_rows<S>(vt, pv, 0, BN, CD, D, a.vec & kVecV, a.v_base.data, [&](int r) -> const S* {
      return n0 + r < a.seq_k ? v + static_cast<long long>(n0 + r) * a.v_base.seq_stride : nullptr;
    });
    if (a.rkp) {
      const S* kr = static_cast<const S*>(a.k_low_rank.data) + b * a.k_low_rank.batch_stride;
      for (int half = 0; half < 2; ++half)
        copy_rows<S>(kt, pk, (D + half * a.rkp) * ES, BN, a.rkp * ES / 16, a.rk, a.vec & kVecKr, a.k_low_rank.data,
                     [&](int r) -> const S* {
                       return l >= 0 && n0 + r < a.seq_k ? kr + static_cast<long long>(n0 + r) * a.k_low_rank.seq_stride : nullptr;
                     });
    }
    if (a.rvp) {
      const S* vr = static_cast<const S*>(a.v_low_rank.data) + b * a.v_low_rank.batch_stride;
      for (int half = 0; half < 2; ++half)
        copy_rows<S>(vt, pv, (D + half * a.rvp) * ES, BN, a.rvp * ES / 16, a.rv, a.vec & kVecVr, a.v_low_rank.data,
                     [&](int r) -> const S* {
                       return l >= 0 && n0 + r < a.seq_k ? vr + static_cast<long long>(n0 + r) * a.v_low_rank.seq_stride : nullptr;
                     });
    }
  }

  // Causal, bottom-right aligned: key n is visible to query m iff n ≤ m + shift; query tiles
  // before the first one that sees key n0 are skipped whole. Steps: (query head, query tile).
  const int shift = a.seq_k - a.seq_q;
  const int m_begin = a.causal ? max(0, n0 - shift) / BM * BM : 0;
  const int nm = m_begin < a.seq_q ? (a.seq_q - m_begin + BM - 1) / BM : 0, steps = a.group * nm;
  auto load_qdo = [&](int t, int buf) {
    const int h = g * a.group + t / nm, m0 = m_begin + (t % nm) * BM;
    const long long row0 = (static_cast<long long>(b) * a.heads_q + h) * a.seq_q;
    unsigned char* qt = smem + a.off_q + buf * a.q_stage;
    unsigned char* dt = smem + a.off_do + buf * a.do_stage;
    const S* q = static_cast<const S*>(a.q.data) + b * a.q.batch_stride + h * a.q.head_stride;
    const S* go = static_cast<const S*>(a.grad_out.data) + b * a.grad_out.batch_stride + h * a.grad_out.head_stride;
    copy_rows<S>(qt, pk, 0, BM, CD, D, a.vec & kVecQ, a.q.data, [&](int r) -> const S* {
      return m0 + r < a.seq_q ? q + static_cast<long long>(m0 + r) * a.q.seq_stride : nullptr;
    });
    copy_rows<S>(dt, pv, 0, BM, CD, D, a.vec & kVecDO, a.grad_out.data, [&](int r) -> const S* {
      return m0 + r < a.seq_q ? go + static_cast<long long>(m0 + r) * a.grad_out.seq_stride : nullptr;
    });
    if (a.rkp)
      copy_rows<S>(qt, pk, D * ES, BM, a.rkp * ES / 8, 2 * a.rkp, true, a.qx16, [&](int r) -> const S* {
        return m0 + r < a.seq_q ? static_cast<const S*>(a.qx16) + (row0 + m0 + r) * 2 * a.rkp : nullptr;
      });
    if (a.rvp)
      copy_rows<S>(dt, pv, D * ES, BM, a.rvp * ES / 8, 2 * a.rvp, true, a.dox16, [&](int r) -> const S* {
        return m0 + r < a.seq_q ? static_cast<const S*>(a.dox16) + (row0 + m0 + r) * 2 * a.rvp : nullptr;
      });
  };
  if (steps > 0) load_qdo(0, 0);
  ptx::cp_async_commit();

  const int kslab = warp % KSLABS, f0 = (warp / KSLABS) * FW;  // dK / dV
  const int sw = warp % 4, sn = warp / 4;                       // S / dP and dQ
  const int bk_row = lane % 8 + 8 * (lane / 16), bk_col = ((lane / 8) % 2) * 16;  // also Aᵀ from a [k][m] tile
  const int bn_row = lane % 8 + 8 * ((lane / 8) % 2), bn_col = (lane / 16) * 16;  // B from a [k][n] tile
  const int a_row = lane % 16, a_col = (lane / 16) * 16;
  const float scale_log2 = a.scale * 1.44269504088896341f;
  const int wdq = D + a.rk, nch = (D + a.rkp) / 16;
  float dk[FW][4], dv[FW][4];
#pragma unroll
  for (int f = 0; f < FW; ++f)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[f][e] = dv[f][e] = 0.f;

  int buf = 0;
  for (int t = 0; t < steps; ++t) {
    if (a.two_stage && t + 1 < steps) {
      load_qdo(t + 1, buf ^ 1);
      ptx::cp_async_commit();
      ptx::cp_async_wait<1>();
    } else {
      ptx::cp_async_wait<0>();
    }
    __syncthreads();
    const int h = g * a.group + t / nm, m0 = m_begin + (t % nm) * BM;
    const long long row0 = (static_cast<long long>(b) * a.heads_q + h) * a.seq_q;
    const unsigned char* qt = smem + a.off_q + buf * a.q_stage;
    const unsigned char* dt = smem + a.off_do + buf * a.do_stage;

    // S = Q·Kᵀ, dP = dO·Vᵀ over the extended widths (16 rows × BN/2 keys per warp).
    float s[NF][4], dp[NF][4];
#pragma unroll
    for (int f = 0; f < NF; ++f)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[f][e] = dp[f][e] = 0.f;
    const unsigned char* kw = kt + sn * (BN / 2) * pk;
    const unsigned char* vw = vt + sn * (BN / 2) * pv;
    mma_rows_keys<E, NF>(s, qt + sw * 16 * pk, kw, pk, 0, D / 16, lane);
    if (a.rkp) mma_rows_keys<E, NF>(s, qt + sw * 16 * pk, kw, pk, D / 16, D / 16 + a.rkp / 8, lane);
    mma_rows_keys<E, NF>(dp, dt + sw * 16 * pv, vw, pv, 0, D / 16, lane);
    if (a.rvp) mma_rows_keys<E, NF>(dp, dt + sw * 16 * pv, vw, pv, D / 16, D / 16 + a.rvp / 8, lane);

    // P and dS (rows gq, gq + 8 of the warp's slab); padding rows: lse = −∞ gives P = 0.
    float lse2[2], dsum[2];
    int mrow[2];
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int m = m0 + sw * 16 + gq + 8 * hf;
      mrow[hf] = m;
      const float lse = m < a.seq_q ? a.lse[row0 + m] : -INFINITY;
      lse2[hf] = lse * 1.44269504088896341f;
      dsum[hf] = m < a.seq_q ? a.dsum[row0 + m] : 0.f;
    }
#pragma unroll
    for (int f = 0; f < NF; ++f)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int n = n0 + sn * (BN / 2) + f * 8 + 2 * qq + (e & 1), hf = e / 2;
        // A row that sees no key has lse = −∞ and P = 0 (exp(S − lse) would be +∞).
        const bool visible = n < a.seq_k && lse2[hf] != -INFINITY && (!a.causal || n <= mrow[hf] + shift);
        const float p = visible ? exp2f(fmaf(s[f][e], scale_log2, -lse2[hf])) : 0.f;
        s[f][e] = p;
        dp[f][e] = p * (dp[f][e] - dsum[hf]);
      }
#pragma unroll
    for (int f = 0; f < NF; ++f)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const int off = (sw * 16 + gq + 8 * hf) * pp + (sn * (BN / 2) + f * 8 + 2 * qq) * ES;
        uint32_t hi, lo;
        split_pack<E>(s[f][2 * hf], s[f][2 * hf + 1], hi, lo);
        *reinterpret_cast<uint32_t*>(ps + off) = hi;
        *reinterpret_cast<uint32_t*>(ps + plo + off) = lo;
        split_pack<E>(dp[f][2 * hf], dp[f][2 * hf + 1], hi, lo);
        *reinterpret_cast<uint32_t*>(dss + off) = hi;
        *reinterpret_cast<uint32_t*>(dss + plo + off) = lo;
      }
    __syncthreads();

    // dV += Pᵀ·dO, dK += dSᵀ·Q (the base columns): keys 16·kslab …, fragments f0 … f0 + FW.
#pragma unroll
    for (int kk = 0; kk < BM / 16; ++kk) {
      uint32_t pa[4], pl[4], da[4], dl[4];
      const int at = (kk * 16 + bk_row) * pp + kslab * 16 * ES + bk_col;
      ptx::ldmatrix_x4_trans(pa, ps + at);
      ptx::ldmatrix_x4_trans(pl, ps + plo + at);
      ptx::ldmatrix_x4_trans(da, dss + at);
      ptx::ldmatrix_x4_trans(dl, dss + plo + at);
#pragma unroll
      for (int f = 0; f + 1 < FW; f += 2) {
        uint32_t bo[4], bq[4];
        ptx::ldmatrix_x4_trans(bo, dt + (kk * 16 + bn_row) * pv + bn_col + (f0 + f) * 16);
        ptx::ldmatrix_x4_trans(bq, qt + (kk * 16 + bn_row) * pk + bn_col + (f0 + f) * 16);
        mma16<E>(dv[f], pa, bo[0], bo[1]);
        mma16<E>(dv[f], pl, bo[0], bo[1]);
        mma16<E>(dv[f + 1], pa, bo[2], bo[3]);
        mma16<E>(dv[f + 1], pl, bo[2], bo[3]);
        mma16<E>(dk[f], da, bq[0], bq[1]);
        mma16<E>(dk[f], dl, bq[0], bq[1]);
        mma16<E>(dk[f + 1], da, bq[2], bq[3]);
        mma16<E>(dk[f + 1], dl, bq[2], bq[3]);
      }
      if constexpr (FW % 2 == 1) {  // D = 80: 5 fragments per warp
        uint32_t bo[2], bq[2];
        ptx::ldmatrix_x2_trans(bo, dt + (kk * 16 + lane % 16) * pv + (f0 + FW - 1) * 16);
        ptx::ldmatrix_x2_trans(bq, qt + (kk * 16 + lane % 16) * pk + (f0 + FW - 1) * 16);
        mma16<E>(dv[FW - 1], pa, bo[0], bo[1]);
        mma16<E>(dv[FW - 1], pl, bo[0], bo[1]);
        mma16<E>(dk[FW - 1], da, bq[0], bq[1]);
        mma16<E>(dk[FW - 1], dl, bq[0], bq[1]);
      }
    }

    // [dQ | dQL] += dS·[k_base | k_low_rank]: rows 16·sw …, 16-column chunks sn, sn + 2, …
    uint32_t dsa[BN / 16][4], dsl[BN / 16][4];
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      ptx::ldmatrix_x4(dsa[kk], dss + (sw * 16 + a_row) * pp + a_col + kk * 32);
      ptx::ldmatrix_x4(dsl[kk], dss + plo + (sw * 16 + a_row) * pp + a_col + kk * 32);
    }
    for (int c = sn; c < nch; c += 2) {
      float acc[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        uint32_t bk[4];
        ptx::ldmatrix_x4_trans(bk, kt + (kk * 16 + bn_row) * pk + bn_col + c * 32);
        mma16<E>(acc[0], dsa[kk], bk[0], bk[1]);
        mma16<E>(acc[0], dsl[kk], bk[0], bk[1]);
        mma16<E>(acc[1], dsa[kk], bk[2], bk[3]);
        mma16<E>(acc[1], dsl[kk], bk[2], bk[3]);
      }
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const int m = mrow[hf];
        if (m >= a.seq_q) continue;
        float* dst = a.dq + (row0 + m) * wdq;
#pragma unroll
        for (int f = 0; f < 2; ++f)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int col = c * 16 + f * 8 + 2 * qq + e;
            if (col < wdq) atomicAdd(dst + col, acc[f][2 * hf + e]);
          }
      }
    }
    __syncthreads();  // this stage, P and dS are rewritten next
    if (a.two_stage) {
      buf ^= 1;
    } else if (t + 1 < steps) {
      load_qdo(t + 1, 0);
      ptx::cp_async_commit();
    }
  }
  ptx::cp_async_wait<0>();

  // This CTA's rows of grad_k_base / grad_v_base: every query head of the group is summed in.
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int n = n0 + kslab * 16 + gq + 8 * hf;
    if (n >= a.seq_k) continue;
    S* gk = static_cast<S*>(a.grad_k_base.data) + b * a.grad_k_base.batch_stride + static_cast<long long>(n) * a.grad_k_base.seq_stride +
            g * a.grad_k_base.head_stride;
    S* gv = static_cast<S*>(a.grad_v_base.data) + b * a.grad_v_base.batch_stride + static_cast<long long>(n) * a.grad_v_base.seq_stride +
            g * a.grad_v_base.head_stride;
#pragma unroll
    for (int f = 0; f < FW; ++f)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int col = (f0 + f) * 8 + 2 * qq + e;
        gk[col] = E::from_float(a.scale * dk[f][2 * hf + e]);
        gv[col] = E::from_float(dv[f][2 * hf + e]);
      }
  }
  if (l < 0 || (a.rk == 0 && a.rv == 0)) return;  // uniform over the CTA
  // dV, then scale·dK, of the tile through shared memory ([BN][D + 1] floats over the Q / dO stages).
  float* dxs = reinterpret_cast<float*>(smem + a.off_q);
  auto spill = [&](const float (&x)[FW][4], float mul) {
#pragma unroll
    for (int f = 0; f < FW; ++f)
#pragma unroll
      for (int e = 0; e < 4; ++e) dxs[(kslab * 16 + gq + 8 * (e / 2)) * (D + 1) + (f0 + f) * 8 + 2 * qq + (e & 1)] = mul * x[f][e];
  };
  if (a.rv > 0) {
    __syncthreads();
    spill(dv, 1.f);
    __syncthreads();
    low_rank_grads<E, D, BN, kMmaThreads>(
        a, dxs, [&](int j, int r) { return E::to_float(*reinterpret_cast<const S*>(vt + j * pv + (D + r) * ES)); }, a.v_lora_b, a.rv,
        a.gvl, a.gvb, b, g, l, n0);
  }
  if (a.rk > 0) {
    __syncthreads();
    spill(dk, a.scale);
    __syncthreads();
    low_rank_grads<E, D, BN, kMmaThreads>(
        a, dxs, [&](int j, int r) { return E::to_float(*reinterpret_cast<const S*>(kt + j * pk + (D + r) * ES)); }, a.k_lora_b, a.rk,
        a.gkl, a.gkb, b, g, l, n0);
  }
}
#endif

template <class E, int D>
__global__ void __launch_bounds__(kMmaThreads) flash_lora_bwd_mma_kernel(BwdArgs a) {
#if defined(SIMT_DEVICE_PATH)
  if constexpr (SIMT_CUDA_ARCH >= 800) {
    mma_backward<E, D>(a);
  } else {
    simt_trap();  // the launcher sends float16 / bfloat16 below sm_80 to the FMA kernel
  }
#endif
}

// grad_q[b, i, h] = scale·(dQ + dQL·k_lora_b[ℓ, g]), one thread per element (consecutive d:
// coalesced stores and k_lora_b rows).
template <class E>
__global__ void __launch_bounds__(kEltThreads) flash_lora_bwd_dq_kernel(BwdArgs a, AttnOutTensor grad_q, int head_dim) {
#if defined(SIMT_DEVICE_PATH)
  const long long idx = static_cast<long long>(blockIdx.x) * kEltThreads + threadIdx.x;
  const long long row = idx / head_dim;
  if (row >= static_cast<long long>(a.batch) * a.heads_q * a.seq_q) return;
  const int d = static_cast<int>(idx % head_dim), i = static_cast<int>(row % a.seq_q);
  const int h = static_cast<int>(row / a.seq_q % a.heads_q), b = static_cast<int>(row / (static_cast<long long>(a.seq_q) * a.heads_q));
  const int wk = head_dim + a.rk, l = adapter_of(a, b);
  const float* src = a.dq + row * wk;
  float acc = src[d];
  if (a.rk > 0 && l >= 0) {
    const long long b0 = (static_cast<long long>(l) * a.heads_k + h / a.group) * a.rk * head_dim + d;
    for (int t = 0; t < a.rk; ++t) acc = fmaf(src[head_dim + t], ld<E>(a.k_lora_b, b0 + static_cast<long long>(t) * head_dim), acc);
  }
  static_cast<typename E::storage*>(grad_q.data)[b * grad_q.batch_stride + i * grad_q.seq_stride + h * grad_q.head_stride + d] =
      E::from_float(a.scale * acc);
#endif
}

// dst[i0, i1, i2] = src (contiguous [n0, n1, n2], float32) rounded once; dst strides s0, s1, 1.
template <class E>
__global__ void __launch_bounds__(kEltThreads) flash_lora_bwd_store_kernel(const float* src, void* dst, long long n1, long long n2,
                                                                           long long total, long long s0, long long s1) {
#if defined(SIMT_DEVICE_PATH)
  const long long idx = static_cast<long long>(blockIdx.x) * kEltThreads + threadIdx.x;
  if (idx >= total) return;
  const long long i2 = idx % n2, i1 = idx / n2 % n1, i0 = idx / (n1 * n2);
  static_cast<typename E::storage*>(dst)[i0 * s0 + i1 * s1 + i2] = E::from_float(src[idx]);
#endif
}


void check_int(int64_t v, int64_t limit, const char* what) {
  if (v > limit)
    throw Error(ErrorCode::Unsupported,
                std::string("attention.flashLoraBackward (cuda): ") + what + " = " + std::to_string(v) + " exceeds the kernels' limit " +
                    std::to_string(limit));
}

}  // namespace

void flash_lora_backward(const FlashLoraBackwardParams& p, int device) {
  constexpr const char* op = "attention.flashLoraBackward";
  const cudaStream_t st = begin_op(device, op);
  const FlashLoraParams& f = p.fwd;
  check_int(f.batch, 65535, "batch");      // grid.z
  check_int(f.heads_k, 65535, "heads_k");  // grid.y
  check_int(f.seq_q, INT_MAX, "seq_q");
  check_int(f.seq_k, INT_MAX, "seq_k");
  check_int(f.heads_q, INT_MAX, "heads_q");
  check_int(f.adapters, INT_MAX, "adapters");
  const int64_t D = f.head_dim, rk = f.k_rank, rv = f.v_rank;
  const int64_t rows = f.batch * f.heads_q * f.seq_q;  // query rows (b, h, i)

  BwdArgs a{};
  a.batch = static_cast<int>(f.batch);
  a.seq_q = static_cast<int>(f.seq_q);
  a.seq_k = static_cast<int>(f.seq_k);
  a.heads_q = static_cast<int>(f.heads_q);
  a.heads_k = static_cast<int>(f.heads_k);
  a.group = f.heads_k > 0 ? static_cast<int>(f.heads_q / f.heads_k) : 1;
  a.adapters = static_cast<int>(f.adapters);
  a.rk = static_cast<int>(rk);
  a.rv = static_cast<int>(rv);
  a.causal = f.causal;
  a.scale = f.softmax_scale;
  a.q = f.q;
  a.k_base = f.k_base;
  a.v_base = f.v_base;
  a.k_low_rank = f.k_low_rank;
  a.v_low_rank = f.v_low_rank;
  a.grad_out = p.grad_out;
  a.out = AttnTensor{f.out.data, f.out.batch_stride, f.out.seq_stride, f.out.head_stride};
  a.k_lora_b = f.k_lora_b;
  a.v_lora_b = f.v_lora_b;
  a.ids = f.adapter_ids;
  a.lse = f.lse;
  a.grad_k_base = p.grad_k_base;
  a.grad_v_base = p.grad_v_base;

  int optin = 0;
  LK_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  // float16 / bfloat16 on sm_80+: the tensor-core kernel when its shared memory fits (one Q / dO
  // stage at least; else the FMA kernel below).
  int mma_smem = 0;
  if (f.dtype != DType::Float32 && device_props(device).cc >= 80) {
    const int64_t es = 2, bn = D == 256 ? 32 : 64, rkp = (rk + 15) / 16 * 16, rvp = (rv + 15) / 16 * 16;
    const int64_t pk = (D + 2 * rkp) * es + 16, pv = (D + 2 * rvp) * es + 16, pp = bn * es + 16;
    const int64_t off_q = bn * (pk + pv);
    for (int stages = 2; stages >= 1 && !mma_smem; --stages) {
      const int64_t off_do = off_q + stages * kMmaBM * pk, off_p = off_do + stages * kMmaBM * pv, off_ds = off_p + 2 * kMmaBM * pp;
      const int64_t total = std::max(off_ds + 2 * kMmaBM * pp, off_q + bn * (D + 1) * 4);
      if (total > optin) continue;
      mma_smem = static_cast<int>(total);
      a.rkp = static_cast<int>(rkp), a.rvp = static_cast<int>(rvp);
      a.pk = static_cast<int>(pk), a.pv = static_cast<int>(pv), a.pp = static_cast<int>(pp);
      a.off_v = static_cast<int>(bn * pk), a.off_q = static_cast<int>(off_q), a.off_do = static_cast<int>(off_do);
      a.off_p = static_cast<int>(off_p), a.off_ds = static_cast<int>(off_ds);
      a.q_stage = static_cast<int>(kMmaBM * pk), a.do_stage = static_cast<int>(kMmaBM * pv);
      a.two_stage = stages == 2;
    }
    auto aligned = [&](const void* ptr, std::initializer_list<int64_t> strides) {
      if (reinterpret_cast<uintptr_t>(ptr) % 16) return false;
      for (int64_t st : strides)
        if (st * es % 16) return false;
      return true;
    };
    a.vec = (aligned(f.q.data, {f.q.batch_stride, f.q.seq_stride, f.q.head_stride}) ? kVecQ : 0u) |
            (aligned(f.k_base.data, {f.k_base.batch_stride, f.k_base.seq_stride, f.k_base.head_stride}) ? kVecK : 0u) |
            (aligned(f.v_base.data, {f.v_base.batch_stride, f.v_base.seq_stride, f.v_base.head_stride}) ? kVecV : 0u) |
            (aligned(p.grad_out.data, {p.grad_out.batch_stride, p.grad_out.seq_stride, p.grad_out.head_stride}) ? kVecDO : 0u) |
            (rk && aligned(f.k_low_rank.data, {f.k_low_rank.batch_stride, f.k_low_rank.seq_stride}) ? kVecKr : 0u) |
            (rv && aligned(f.v_low_rank.data, {f.v_low_rank.batch_stride, f.v_low_rank.seq_stride}) ? kVecVr : 0u);
  }

  // float32 scratch: the prep kernel's rows (written whole), then the sums (zeroed); then, for the
  // tensor-core kernel, the dtype copies of the projected rows (hi | lo).
  const int64_t lr_k = f.batch * f.seq_k * rk, lr_v = f.batch * f.seq_k * rv;
  const int64_t b_k = f.adapters * f.heads_k * rk * D, b_v = f.adapters * f.heads_k * rv * D;
  const int64_t written = rows * (1 + rk + rv), zeroed = rows * (D + rk) + lr_k + lr_v + b_k + b_v;
  const int64_t floats = (written + zeroed + 4 + 3) / 4 * 4;  // 16-byte aligned end
  const int64_t ext16 = mma_smem ? rows * 2 * (a.rkp + a.rvp) : 0;  // 16-bit elements
  DeviceScratch scratch(device, static_cast<size_t>(floats) * sizeof(float) + static_cast<size_t>(ext16) * 2);
  float* s = scratch.as<float>();
  if (mma_smem) {
    uint16_t* e16 = reinterpret_cast<uint16_t*>(s + floats);
    a.qx16 = a.rkp ? e16 : nullptr;
    a.dox16 = a.rvp ? e16 + rows * 2 * a.rkp : nullptr;
  }
  a.dsum = s;
  a.qext = a.dsum + rows;
  a.doext = a.qext + rows * rk;
  a.dq = a.doext + rows * rv;
  a.gkl = a.dq + rows * (D + rk);
  a.gvl = a.gkl + lr_k;
  a.gkb = a.gvl + lr_v;
  a.gvb = a.gkb + b_k;
  LK_CUDA_CHECK(cudaMemsetAsync(a.dq, 0, static_cast<size_t>(zeroed) * sizeof(float), st));

  const long long smem_floats = static_cast<long long>(kBM + kBN) * (((D + rk) | 1) + ((D + rv) | 1)) + 2LL * kBM * (kBN + 1) + 2 * kBM;
  const int smem = static_cast<int>(smem_floats * sizeof(float));
  if (!mma_smem && smem > optin)
    throw Error(ErrorCode::Unsupported, std::string(op) + " (cuda): head dim " + std::to_string(D) + " with ranks " + std::to_string(rk) +
                                            "/" + std::to_string(rv) + " needs " + std::to_string(smem) +
                                            " bytes of shared memory per block, the device allows " + std::to_string(optin));

  with_element(f.dtype, op, [&](auto e) {
    using E = decltype(e);
    with_head_dim(D, "attention.flashLoraBackward", [&](auto dim) {
      constexpr int kD = decltype(dim)::value;
      if (rows > 0) {
        simt_launch(flash_lora_bwd_prep_kernel<E, kD>, grid_for(rows * 32, kPrepWarps * 32, op), dim3(kPrepWarps * 32), 0, st, a);
        LK_CUDA_CHECK_LAUNCH("flash_lora_bwd_prep_kernel launch");
      }
      if constexpr (!std::is_same_v<E, F32>) {
        if (mma_smem && f.seq_k > 0 && f.heads_k > 0 && f.batch > 0) {
          auto* kernel = flash_lora_bwd_mma_kernel<E, kD>;
          if (mma_smem > 48 * 1024)
            LK_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, mma_smem));
          const dim3 grid(static_cast<unsigned>(ceil_div<int64_t>(f.seq_k, mma_bn<kD>())), static_cast<unsigned>(f.heads_k),
                          static_cast<unsigned>(f.batch));
          simt_launch(kernel, grid, dim3(kMmaThreads), static_cast<size_t>(mma_smem), st, a);
          LK_CUDA_CHECK_LAUNCH("flash_lora_bwd_mma_kernel launch");
        }
      }
      if (!mma_smem && f.seq_k > 0 && f.heads_k > 0 && f.batch > 0) {
        auto* kernel = flash_lora_bwd_kernel<E, kD>;
        // Opt in to the device's whole per-block limit once per device and instantiation (the
        // launch's own size varies with the ranks).
        static std::atomic<uint64_t> opted{0};
        const uint64_t bit = device < 64 ? 1ull << device : 0;
        if (smem > 48 * 1024 && !(bit && (opted.load() & bit))) {
          LK_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, optin));
          opted.fetch_or(bit);
        }
        const dim3 grid(static_cast<unsigned>(ceil_div<int64_t>(f.seq_k, kBN)), static_cast<unsigned>(f.heads_k), static_cast<unsigned>(f.batch));
        simt_launch(kernel, grid, dim3(kThreads), static_cast<size_t>(smem), st, a);
        LK_CUDA_CHECK_LAUNCH("flash_lora_bwd_kernel launch");
      }
    });
    if (rows > 0) {
      simt_launch(flash_lora_bwd_dq_kernel<E>, grid_for(rows * D, kEltThreads, op), dim3(kEltThreads), 0, st, a, p.grad_q,
                  static_cast<int>(D));
      LK_CUDA_CHECK_LAUNCH("flash_lora_bwd_dq_kernel launch");
    }
    auto store = [&](const float* src, void* dst, long long n0, long long n1, long long n2, long long s0, long long s1) {
      const long long total = n0 * n1 * n2;
      if (total == 0) return;
      simt_launch(flash_lora_bwd_store_kernel<E>, grid_for(total, kEltThreads, op), dim3(kEltThreads), 0, st, src, dst, n1, n2, total,
                  s0, s1);
      LK_CUDA_CHECK_LAUNCH("flash_lora_bwd_store_kernel launch");
    };
    if (rv > 0) {
      store(a.gvl, p.grad_v_low_rank.data, f.batch, f.seq_k, rv, p.grad_v_low_rank.batch_stride, p.grad_v_low_rank.seq_stride);
      store(a.gvb, p.grad_v_lora_b, 1, f.adapters * f.heads_k * rv, D, 0, D);
    }
    if (rk > 0) {
      store(a.gkl, p.grad_k_low_rank.data, f.batch, f.seq_k, rk, p.grad_k_low_rank.batch_stride, p.grad_k_low_rank.seq_stride);
      store(a.gkb, p.grad_k_lora_b, 1, f.adapters * f.heads_k * rk, D, 0, D);
    }
  });
}

}  // namespace lk::cuda_ops
