// Fused LoRA forward on the CPU: y = x·Wᵀ + bias + scale·((x ⊙ mask)·Aᵀ)·Bᵀ.
// Compiled once per SIMD level into lk::cpu::LK_SIMD_NS (see CMakeLists.txt, "CPU kernels").
//
// The low-rank path is folded into the base GEMM: with T = scale·(x ⊙ mask)·Aᵀ ([m, r]),
//     y = [x | T] · [W | B]ᵀ + bias,
// i.e. one GEMM over K + r "augmented" columns. T is computed per row panel while that panel of x
// is packed, B is packed as r extra columns of the weight panels, and the bias is added in the
// epilogue of the last K block, so y is written exactly once and nothing is a separate pass.
//
// Two paths:
//  * small m (decode, m ≤ kSmallRows): a GEMV is bandwidth-bound. Packing W would read it and
//    write it once more for a single use, so W is streamed straight from its rows (widened to
//    float32 in registers) in dot-product tiles, split over columns across threads.
//    Napkin math, m=1, K=N=4096 float32: 64 MiB of W at ~16-35 GB/s (one vs two cores streaming)
//    ≈ 2-4 ms; 2·K·N = 34 MFLOP is nothing next to it; the low-rank part adds r·(K+N) values
//    = 0.5 MiB (0.8%). Measured: 2.2-2.5 ms with W not in cache (~28 GB/s), 0.8 ms bfloat16/float16 hot.
//  * larger m (prefill): BLIS-style (the driver is cpu/lora_gemm.h, shared with quant.matmul's
//    prefill, which dequantizes its weight panels while packing them). Phase 1 packs [x | T] for
//    all rows of a chunk into MR-row panels (float32, converted from float16/bfloat16 on the way
//    in), phase 2 gives each thread
//    column blocks of W: per K block it packs KC×NR micro-panels of [W | B]ᵀ (transposed,
//    converted on the way in) and runs the MR×NR micro-kernel over them.
//    Napkin math, m=512, K=N=4096, r=16, float32: 2·m·N·(K+r) = 17.3 GFLOP. Peak is 2 cores ×
//    ~117 GFLOP/s (measured FMA throughput: 2 × 256-bit FMA pipes) = 234 GFLOP/s, i.e. 74 ms;
//    the micro-kernel alone reaches 113 GFLOP/s per core on cached panels. W is read once from
//    DRAM while being packed (64 MiB, ~5% of the time); x (8 MiB) is packed once, into L3.
//    Measured ~205 GFLOP/s (84 ms), about OpenBLAS's x·Wᵀ alone on the same machine.
#include <algorithm>

#include "core/parallel.h"
#include "cpu/dispatch/kernels.h"
#include "cpu/gemm_microkernel.h"
#include "cpu/lora_gemm.h"
#include "cpu/packed_gemm.h"
#include "cpu/vec.h"

namespace lk::cpu::LK_SIMD_NS {
namespace {

constexpr int kNR = kGemmNR;

// Buffers owned by the thread that called lora_forward (shared read-only with the workers for the
// duration of the call) and buffers used inside one task. Separate, because the calling thread
// also runs tasks.
enum class CallerBuffer { XRows, MaskedRows, LowRank, Bias, Count };
enum class TaskBuffer { Tile, Count };

float* caller_buffer(CallerBuffer which, int64_t count) { return scratch(which, count); }
float* task_buffer(TaskBuffer which, int64_t count) { return scratch(which, count); }

// y row segment = column_scale ⊙ values + bias, in y's dtype (either may be null).
template <DType T>
void store_row(const float* values, const float* column_scale, const float* bias, int64_t count, void* y,
               int64_t y_offset) {
  int64_t j = 0;
  for (; j + kLanes <= count; j += kLanes) {
    Vec v = vload(values + j);
    if (column_scale) v = vmul(v, vload(column_scale + j));
    if (bias) v = vadd(v, vload(bias + j));
    vstore_from_float<T>(y, y_offset + j, v);
  }
  for (; j < count; ++j) {
    const float v = column_scale ? values[j] * column_scale[j] : values[j];
    store_from_float<T>(y, y_offset + j, v + (bias ? bias[j] : 0.0f));
  }
}

// ---- small m: stream the weight ---------------------------------------------------------------
template <DType T>
void forward_streaming(const LoraForwardParams& p) {
  const int64_t m = p.m, k = p.k, r = p.r;
  float* x = caller_buffer(CallerBuffer::XRows, m * k);
  widen_rows<T>(p.x, p.x_stride, m, k, x, k);
  const float* bias = bias_as_float(p.bias, p.bias_f32, p.dtype, p.n, CallerBuffer::Bias);

  float* t = nullptr;
  if (r > 0) {
    const float* xm = x;
    if (p.dropout_mask) {
      float* masked = caller_buffer(CallerBuffer::MaskedRows, m * k);
      multiply_by_mask_rows<T>(p.dropout_mask, p.mask_stride, 0, m, k, x, k, masked, k);
      xm = masked;
    }
    t = caller_buffer(CallerBuffer::LowRank, m * r);
    constexpr int64_t kRanksPerTask = 8;
    parallel_for(ceil_div(r, kRanksPerTask), [&](int64_t task, int) {
      const int64_t t0 = task * kRanksPerTask, t1 = std::min(r, t0 + kRanksPerTask);
      low_rank_rows<T>(p, xm, k, m, t0, t1, t, r);
    });
  }

  parallel_for(ceil_div(p.n, kSmallColsPerTask), [&](int64_t task, int) {
    const int64_t j0 = task * kSmallColsPerTask, j1 = std::min(p.n, j0 + kSmallColsPerTask), cols = j1 - j0;
    float* tile = task_buffer(TaskBuffer::Tile, m * kSmallColsPerTask);
    rows_dot<T>(x, k, m, p.weight, p.weight_stride, j0, j1, k, tile, cols, false);
    if (r > 0) rows_dot<T>(t, r, m, p.b, p.b_stride, j0, j1, r, tile, cols, true);
    const float* column_scale = p.column_scale ? p.column_scale + j0 : nullptr;
    for (int64_t i = 0; i < m; ++i)
      store_row<T>(tile + i * cols, column_scale, bias ? bias + j0 : nullptr, cols, p.y, i * p.y_stride + j0);
  });
}

// ---- larger m: packed BLIS-style GEMM over the augmented K (cpu/lora_gemm.h) ------------------
// The right operand: columns [c0, c1) of [W | B] rows j .. j + NR (valid of them real) as one
// NR-wide micro-panel of kc rows, transposed and widened on the way in.
template <DType T>
struct WeightAndLoraB {
  const LoraForwardParams& p;
  void operator()(int64_t j, int64_t valid, int64_t c0, int64_t c1, float* dst) const {
    if (c0 < p.k) pack_transposed<T>(p.weight, p.weight_stride, j, valid, c0, std::min(c1, p.k) - c0, dst);
    if (c1 > p.k) {
      const int64_t from = std::max(c0, p.k);
      pack_transposed<T>(p.b, p.b_stride, j, valid, from - p.k, c1 - from, dst + (from - c0) * kNR);
    }
  }
};

}  // namespace

void lora_forward(const LoraForwardParams& p) {
  with_float_dtype(p.dtype, [&](auto tag) {
    constexpr DType T = decltype(tag)::value;
    if (p.m <= kSmallRows) forward_streaming<T>(p);
    else lora_forward_packed<T>(p, WeightAndLoraB<T>{p}, bias_as_float(p.bias, p.bias_f32, p.dtype, p.n, CallerBuffer::Bias));
  });
}

}  // namespace lk::cpu::LK_SIMD_NS
