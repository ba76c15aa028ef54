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
// the correct, exact-float32 baseline; float16/bfloat16 want the mma.sync path (not written yet).
// Shared memory: (32 + 32)·((D + rk | 1) + (D + rv | 1)) floats + the 2 score tiles: 201 KiB at
// D = 256, rk = rv = 128 (sm_90 allows 227 KiB; A100's 163 KiB every D ≤ 128, and D = 256 with
// rk + rv ≤ ~100; Turing's 64 KiB only small D and ranks): ERR_UNSUPPORTED past the device's limit.
#include <atomic>
#include <climits>
#include <cmath>
#include <string>
#include <type_traits>

#include "common.cuh"
#include "flash_lora.cuh"

namespace lk::cuda_ops {
namespace {

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
};

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
                                            int lane) {
  for (int t = lane; t < r; t += 32) {
    float acc = 0.f;
    if (l >= 0) {
      const long long b0 = ((static_cast<long long>(l) * heads_k + g) * r + t) * D;
#pragma unroll 8
      for (int d = 0; d < D; ++d) acc = fmaf(row[d], ld<E>(lora_b, b0 + d), acc);
    }
    ext[t] = acc;
  }
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
  if (a.rv > 0) project_row<E, D>(dos, a.v_lora_b, l, g, a.heads_k, a.rv, a.doext + row * a.rv, lane);
  if (a.rk > 0) project_row<E, D>(qs, a.k_lora_b, l, g, a.heads_k, a.rk, a.qext + row * a.rk, lane);
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

// The low-rank grads of one finished tile (dX: [kBN][D + 1], scale folded in; X: the extended
// key or value tile, the low-rank cache at columns D …): per key n, lr[b, n] += dX[n]·Bᵀ; and
// bg[ℓ, g] += X_lrᵀ·dX. Lanes run over keys (first sum: B broadcast, dX rows on distinct banks)
// and over d (second sum: the X_lr value broadcast).
template <class E, int D>
__device__ __forceinline__ void low_rank_grads(const BwdArgs& a, const float* dx, const float* x, int sx, const void* lora_b, int r,
                                               float* lr, float* bg, int b, int g, int l, int n0) {
  const long long b0 = (static_cast<long long>(l) * a.heads_k + g) * r * D;
  for (int e = threadIdx.x; e < kBN * r; e += kThreads) {
    const int j = e % kBN, t = e / kBN, n = n0 + j;
    if (n >= a.seq_k) continue;
    float acc = 0.f;
#pragma unroll 8
    for (int d = 0; d < D; ++d) acc = fmaf(dx[j * (D + 1) + d], ld<E>(lora_b, b0 + t * D + d), acc);
    atomicAdd(lr + (static_cast<long long>(b) * a.seq_k + n) * r + t, acc);
  }
  for (int e = threadIdx.x; e < r * D; e += kThreads) {
    const int d = e % D, t = e / D;
    float acc = 0.f;
#pragma unroll 8
    for (int j = 0; j < kBN; ++j) acc = fmaf(x[j * sx + D + t], dx[j * (D + 1) + d], acc);
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
  if (a.rv > 0) low_rank_grads<E, D>(a, dvs, vx, sv, a.v_lora_b, a.rv, a.gvl, a.gvb, b, g, l, n0);
  if (a.rk > 0) low_rank_grads<E, D>(a, dks, kx, sk, a.k_lora_b, a.rk, a.gkl, a.gkb, b, g, l, n0);
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

// The one place where the runtime head dim becomes a template argument.
template <class Fn>
void with_head_dim(int64_t d, Fn&& fn) {
  switch (d) {
    case 32: return fn(std::integral_constant<int, 32>{});
    case 64: return fn(std::integral_constant<int, 64>{});
    case 80: return fn(std::integral_constant<int, 80>{});
    case 96: return fn(std::integral_constant<int, 96>{});
    case 128: return fn(std::integral_constant<int, 128>{});
    case 256: return fn(std::integral_constant<int, 256>{});
    default: break;
  }
  throw Error(ErrorCode::Unsupported, "attention.flashLoraBackward (cuda): no kernel for head dim " + std::to_string(d));
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

  // float32 scratch: the prep kernel's rows (written whole), then the sums (zeroed).
  const int64_t lr_k = f.batch * f.seq_k * rk, lr_v = f.batch * f.seq_k * rv;
  const int64_t b_k = f.adapters * f.heads_k * rk * D, b_v = f.adapters * f.heads_k * rv * D;
  const int64_t written = rows * (1 + rk + rv), zeroed = rows * (D + rk) + lr_k + lr_v + b_k + b_v;
  DeviceScratch scratch(device, static_cast<size_t>(written + zeroed + 4) * sizeof(float));
  float* s = scratch.as<float>();
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
  int optin = 0;
  LK_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  if (smem > optin)
    throw Error(ErrorCode::Unsupported, std::string(op) + " (cuda): head dim " + std::to_string(D) + " with ranks " + std::to_string(rk) +
                                            "/" + std::to_string(rv) + " needs " + std::to_string(smem) +
                                            " bytes of shared memory per block, the device allows " + std::to_string(optin));

  with_element(f.dtype, op, [&](auto e) {
    using E = decltype(e);
    with_head_dim(D, [&](auto dim) {
      constexpr int kD = decltype(dim)::value;
      if (rows > 0) {
        simt_launch(flash_lora_bwd_prep_kernel<E, kD>, grid_for(rows * 32, kPrepWarps * 32, op), dim3(kPrepWarps * 32), 0, st, a);
        LK_CUDA_CHECK_LAUNCH("flash_lora_bwd_prep_kernel launch");
      }
      if (f.seq_k > 0 && f.heads_k > 0 && f.batch > 0) {
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
