// The CUDA GEMM engine: every op's GPU work is this one GEMM-shaped mainloop with something before
// and after it (CUTLASS's split, at our size). Plain C++ declarations here; the kernels are in
// cuda/gemm_kernels.cuh, instantiated and dispatched by cuda/gemm.cu.
//
//   C[i, j] = Σ_s Σ_{k < k_s} A_s(i, k)·B_s(j, k)        i < m, j < n, s over the K-segments
//   y = epilogue(C)                                      (scales, bias, rows scattered, dtype)
//
// K-segments make the low-rank term part of the same mainloop: lora.forward is
// [T | x]·[B | W]ᵀ, i.e. segment 0 = (T, B) over r and segment 1 = (x, W) over K; the backward's
// gradInput is [dT | g]·[A | W] with an MN-major W. lora.forwardMulti gives each 128-row tile its
// own segment list (one low-rank segment per adapter present in the tile, rows of other adapters
// read as zero, then the shared x·Wᵀ). Operands are K-major (row-major [rows, k], like x, W, T) or
// MN-major (row-major [k, rows], like W read as g·W, or gᵀ); their dtype is the problem's dtype.
//
// Mainloops, picked per problem by cuda/gemm.cu:
//   * mma.sync (sm_80+): float16 / bfloat16 (m16n8k16) and TF32 (m16n8k8, float32 operands,
//     only when allowed): cp.async multi-stage pipeline into XOR-swizzled shared tiles, ldmatrix
//     (.trans for MN-major operands), float32 accumulators in registers.
//   * FMA: exact float32 (and every dtype on sm_75, converted on load): a register-prefetched,
//     double-buffered shared-memory SGEMM with 8×8 (or 4×4) outputs per thread.
// A quantized weight as a B operand (Segment::quant_b; see "Quantized B" below): dequantized on the way
// to the multipliers, never written to memory.
// Epilogues: the store epilogue (alpha, per-row adapter scale and rank, column scale, bias in the
// dtype or float32, rows scattered through an index, output in the dtype or float32) and the
// row-norm epilogue (Σ_j (alpha·C[i, j] + addend[i, j])², for DoRA's ‖W + s·B·A‖ per row). Split-K
// writes float32 partials that one reduce kernel sums in split order before the epilogue: every
// result is deterministic.
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "ops/quant.h"
#include "simt/simt.h"

namespace lk::cuda_ops::gemm {

enum class Layout : int { KMajor = 0, MNMajor = 1 };

// One stretch of the reduction. Element (i, k) of A is a[i·a_stride + k] (K-major) or
// a[k·a_stride + i] (MN-major); B likewise with its column index j.
struct Segment {
  const void* a = nullptr;
  const void* b = nullptr;
  long long a_stride = 0, b_stride = 0;
  int k = 0;                     // reduction length
  int rows_lo = 0, rows_hi = 0;  // only A rows in [rows_lo, rows_hi) are read; the others count as zero
  int cols_hi = 0;               // only B columns j < cols_hi are read (an adapter's rank); the others count as zero
  bool gather = false;           // A row i is stored at row row_index[i] (K-major A only)
  // A 16-bit activation kept to ~float32 precision as hi + lo (the epilogue's out_lo): when set,
  // the segment runs a second time with a_lo in place of a (or b_lo in place of b).
  const void* a_lo = nullptr;
  const void* b_lo = nullptr;
  bool quant_b = false;  // B is the problem's quantized weight (Problem::quant); b and b_stride unused
};

// k-tiles of `bk` elements a segment takes, both passes: the host (split-K) and the kernels count alike.
__host__ __device__ inline int segment_tiles(const Segment& s, int bk) {
  return (s.k + bk - 1) / bk * (s.a_lo || s.b_lo ? 2 : 1);
}

// What happens to C[i, j] before it is stored:
//   v = alpha·C[i, j]·group_scale[g]  (0 for j ≥ group_rank[g], and for g = row_group[i] < 0)
//   y[row_index[i], j] = v·column_scale[j] + bias[j] + addend[row_index[i], j]
// Every pointer may be null (no such step; row_index null: rows in order).
struct Epilogue {
  float alpha = 1.f;
  const int* row_group = nullptr;   // [m] group of each row (forwardMulti's adapter)
  const int* group_rank = nullptr;  // [groups]: columns at and past it are zero
  const float* group_scale = nullptr;
  const float* column_scale = nullptr;  // [n] float32
  const void* bias = nullptr;           // [n], the dtype or float32
  bool bias_f32 = false;
  const int* row_index = nullptr;       // [m] output row of each row
  // float32, laid out like out (a term another GEMM left there, e.g. forwardMulti's low-rank sum).
  const float* addend = nullptr;
  long long addend_stride = 0;
  void* out = nullptr;
  long long out_stride = 0;
  bool out_f32 = false;                 // float32 output (else the dtype)
  // 16-bit outputs only: out gets hi = round(v) and out_lo the residual round(v − hi), so that
  // hi + lo carries ~2× the mantissa bits (T and dT of the backward, then read as a / a_lo).
  void* out_lo = nullptr;
};

// The row-norm epilogue (DoRA): sumsq[i] = Σ_j (alpha·C[i, j] + addend[i, j])², float32 [m].
struct RowNorm {
  const void* addend = nullptr;  // [m, n] in the dtype, row stride addend_stride
  long long addend_stride = 0;
  float* sumsq = nullptr;
};

// A GEMM as the ops describe it; cuda/gemm.cu picks the mainloop, tile and split.
struct Problem {
  DType dtype = DType::Float32;
  bool allow_tf32 = false;  // float32 on tensor cores (10-bit mantissas) instead of exact FMA
  Layout a_layout = Layout::KMajor, b_layout = Layout::KMajor;
  int m = 0, n = 0;
  Segment seg[2];
  int num_segments = 0;
  // Per row tile segment lists (forwardMulti): tile t of 128 rows uses
  // tile_segments[tile_segment_begin[t] .. tile_segment_begin[t + 1]) instead of seg[]. Device memory.
  const Segment* tile_segments = nullptr;
  const int* tile_segment_begin = nullptr;
  const int* row_index = nullptr;  // [m] for gathering segments (device memory)
  // Backward dropout: the accumulated segment-0 term is multiplied elementwise by mask[i, j]
  // (the dtype, row stride acc_mask_stride) before the later segments add to it.
  const void* acc_mask = nullptr;
  long long acc_mask_stride = 0;
  // Gated low-rank term: the accumulated segment-0 term is multiplied by acc_col_scale[j] (float32
  // [n]) before the later segments add to it (quant.matmul's per-output gate on T·Bᵀ only).
  const float* acc_col_scale = nullptr;
  // Quantized B (segments with quant_b): W [weight.n, weight.k] in NF4 or ternary (csrc/formats), read
  // K-major (B(j, kk) = W[j, kk]: x·deq(W)ᵀ, segment k = weight.k) or MN-major (B(j, kk) = W[kk, j]:
  // g·deq(W), segment k = weight.n). Its values are the dequantized weight rounded once to the
  // dtype (float32 code·absmax first); absmax must be float32 (the op expands a nested absmax).
  // Regular segment lists only, mma.sync KK / KN and FMA KK / KN, no row norm.
  QuantWeight quant;
  Epilogue epi;
  RowNorm row_norm;  // row_norm.sumsq set: the row-norm epilogue instead of epi
  const char* what = "gemm";  // names the op in errors
};

// Row tiles of tile_segments (the multi-adapter lists are built for this many rows per tile).
constexpr int kTileListRows = 128;

// Enqueues the GEMM on `st` and notes its kernels in the op's plan (e.g. "mma.sync bfloat16
// 128x256 KK", "… split-k 3"; see note_plan in cuda/common.cuh). Throws lk::Error (ERR_UNSUPPORTED
// for sizes beyond the launch grid or a combination no kernel covers, ERR_CUDA for a failed launch).
void run(const Problem& p, int device, cudaStream_t st);

// The mainloop the engine runs 16-bit problems on, on a device of compute capability cc (major·10
// + minor) with this binary: "wgmma" on 9.0 when the binary holds sm_90a code (or is the emulator),
// "mma.sync" on 8.0 and newer, "fma" below. wgmma takes the problems it covers (cuda/gemm_wgmma.cu),
// mma.sync the others. Shown per device by backends() and `lora-kernels info`.
const char* preferred_mainloop(int cc);

// Whether run() would give this problem to the wgmma mainloop on `device` (an op whose fused form
// wgmma does not cover may split it so that its big GEMM does).
bool runs_on_wgmma(const Problem& p, int device);

}  // namespace lk::cuda_ops::gemm
