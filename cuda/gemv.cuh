// The decode path (M ≤ 16) as a bandwidth-bound GEMV family (implemented in cuda/gemv.cu).
// Plain declarations; included by the CUDA op sources (cuda/*.cu).
//
// At decode a linear layer is a matrix-vector product: every weight element is used 2·M times, so
// the time is the time to stream W once. The GEMV family streams W with 16-byte loads and folds
// the low-rank term in as extra k-steps over [x | T]·[W | B]ᵀ:
//   1. gemv_shrink: T = row_scale·(x ⊙ mask)·A_iᵀ, float32 (BGMV's shrink: A per row group).
//   2. gemv: y = (x·Wᵀ + T·B_iᵀ) ⊙ column_scale + bias, stored once in the dtype.
// One row's "group" selects its adapter: group(i) = row_group ? row_group[i] : 0, −1 = base only.
// A single adapter is the same kernels with group(i) = 0. Everything is deterministic: fixed-order
// sums, no atomics.
#pragma once
#include "common.cuh"
#include "ops/lora_linear.h"
#include "ops/lora_multi.h"
#include "ops/quant.h"

namespace lk::cuda_ops {

// Largest M the GEMV family serves (kernels are templated on a row bucket 1, 2, 4, 8, 16).
constexpr long long kGemvMaxRows = 16;

// t[i][j] = row_scale(i)·Σ_k x[i,k]·mask[i,k]·a_i[j,k] for j < rank(i), 0 for rank(i) ≤ j < r_max
// and for base-only rows (group −1), with
//   a_i = a + group(i)·a_group_stride (rows a_stride apart), rank(i) = group_rank ? group_rank[group(i)] : r_max,
//   row_scale(i) = group_scale ? group_scale[group(i)] : scale.
// Elements of A past a row's rank are never read. Device pointers; ids and ranks in range.
struct GemvShrinkParams {
  DType dtype = DType::Float32;  // x, mask, a
  long long m = 0, k = 0, r_max = 0;
  const void* x = nullptr;
  long long x_stride = 0;
  const void* mask = nullptr;  // like x, or null
  long long mask_stride = 0;
  const void* a = nullptr;
  long long a_stride = 0, a_group_stride = 0;
  const int* row_group = nullptr;     // [m] or null
  const int* group_rank = nullptr;    // [groups] or null
  const float* group_scale = nullptr; // [groups] or null
  float scale = 1.0f;
};

// How many float32 partial slices of [m, r_max] gemv_shrink writes (split-K when m·r_max alone
// cannot fill `sm_count` SMs); their sum, in slice order, is t.
int gemv_shrink_splits(const GemvShrinkParams& p, int sm_count);
// Enqueues the shrink on `st`: t_partials = [splits][m][r_max] float32 (device memory).
void gemv_shrink(const GemvShrinkParams& p, float* t_partials, int splits, cudaStream_t st);

// y[i,n] = (Σ_k x[i,k]·w[n,k] + low_rank_scale[n]·Σ_{j<rank(i)} t[i,j]·b_i[n,j])·column_scale[n] + bias[n],
// m ≤ 16, with t = Σ of the t_splits partial slices of gemv_shrink (t null or r_max = 0: no low-rank
// term), b_i = b + group(i)·b_group_stride (rows b_stride apart, B is [N, r] per group; group −1:
// none). W is dense rows of the dtype (w, w_stride) or, with w_quant, a packed NF4 / ternary weight
// (csrc/formats) whose values are float32 code·absmax (·scale): the same kernel, another W source.
// Splits K over blocks itself when N is too small to fill the GPU (scratch from the caching
// allocator, a fixed-order reduce that also applies the epilogue).
struct GemvParams {
  DType dtype = DType::Float32;  // x, w, b, y, and bias unless bias_f32
  long long m = 0, k = 0, n = 0;
  const void* x = nullptr;
  long long x_stride = 0;
  const void* w = nullptr;  // [n, k]
  long long w_stride = 0;
  const QuantWeight* w_quant = nullptr;  // instead of w: the packed [n, k] weight (any absmax form)
  const float* t = nullptr;  // [t_splits][m][r_max] float32, or null
  int t_splits = 1;
  long long r_max = 0;
  const void* b = nullptr;
  long long b_stride = 0, b_group_stride = 0;
  const int* row_group = nullptr;   // [m] or null (as in GemvShrinkParams)
  const int* group_rank = nullptr;  // [groups] or null
  const float* low_rank_scale = nullptr;  // float32 [n] or null: quant.matmul's per-output gate
  const float* column_scale = nullptr;  // float32 [n] or null (DoRA)
  const void* bias = nullptr;           // [n] or null
  bool bias_f32 = false;                // bias is float32 while dtype is float16/bfloat16
  void* y = nullptr;
  long long y_stride = 0;
};
void gemv(const GemvParams& p, int device, cudaStream_t st);
// The GEMV with one adapter's low-rank term: when shrink.r_max > 0, T = shrink.scale·(x ⊙ mask)·Aᵀ
// by gemv_shrink (its dtype, m, k and x taken from g) into float32 partials, then g adds T·Bᵀ (g.b,
// g.low_rank_scale as the caller set them) as it stores y. Enqueued on `st`, no wait.
void gemv_low_rank(GemvParams g, GemvShrinkParams shrink, int device, cudaStream_t st);

// lora.forward at m ≤ 16: shrink (p.scale, p.dropout_mask) when p.r > 0, then the GEMV with
// p.column_scale and p.bias. Enqueued on `st` (from begin_op), no wait.
void lora_forward_decode(const LoraForwardParams& p, int device, cudaStream_t st);
// lora.forwardMulti at m ≤ 16 (BGMV): group = adapter id of the row, read on the device; the ids
// and ranks must already be checked on the host.
void lora_forward_multi_decode(const LoraMultiParams& p, int device, cudaStream_t st);

}  // namespace lk::cuda_ops
