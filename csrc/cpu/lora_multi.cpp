// Multi-adapter LoRA forward on the CPU (see csrc/ops/lora_multi.h for the math). Compiled once
// per SIMD level into lk::cpu::LK_SIMD_NS, like lora_linear.cpp, whose GEMM pieces it shares
// (packed_gemm.h, gemm_microkernel.h).
//
// Rows are processed in grouped order (AdapterSegments: rows sorted by adapter, stable), so the
// rows of one adapter are contiguous and y rows are scattered back through `order` when stored.
//  * shrink, SGMV style: T = scale·x·A[id][:r]ᵀ per run of rows sharing an adapter ([rows, rMax]
//    float32, zero beyond r): a dot-product tile reads each A row once per run and reuses it for
//    up to 4 rows.
//  * base GEMM: x·Wᵀ over ALL rows at once, exactly as the single-adapter forward (streamed W for
//    m ≤ 64, packed BLIS-style otherwise), so W is read/packed once whatever the ids are.
//  * expand: the tile of x·Wᵀ for an MR-row panel and NR columns gets + T·B[id]ᵀ for each run of
//    the panel's rows (B[id] packed per NR column panel once per adapter: runs come in adapter
//    order), then + bias, and is stored once, in y's dtype, to the rows' places in y.
//
// Napkin math (M=512, K=N=4096, r=16, 64 adapters, 2 Zen4 cores): the base GEMM is the fused
// forward's ~85-90 ms. The shrink is 2·M·r·K = 67 MFLOP in dot tiles (~1 ms) plus reading 64 A's
// (16 MiB); the expand runs ~M/MR + 64 ≈ 150 micro-kernel calls of kc = r per NR panel
// (64 panels): 150·64·16·24 FMA-vectors ≈ 3.7 M vector FMAs ≈ 1-2 ms over two cores, plus reading
// 64 B's (16 MiB) once per column task. Expected: within ~5% of the single-adapter forward.
// Measured (idle machine, bench/lora_multi.bench.ts): 87.3 ms (64 adapters, uniform) and 86.9 ms
// (Zipf) vs 86.9 ms for the single-adapter forward in the same run; M=1: 1.8 vs 1.9 ms.
#include <algorithm>
#include <cstddef>

#include "core/parallel.h"
#include "cpu/dispatch/kernels.h"
#include "cpu/gemm_microkernel.h"
#include "cpu/packed_gemm.h"
#include "cpu/vec.h"

namespace lk::cpu::LK_SIMD_NS {
namespace {

constexpr int kMR = kGemmMR;
constexpr int kNR = kGemmNR;

enum class CallerBuffer { XRows, LowRank, Bias, PackedLeft, PackedLowRank, Count };
enum class TaskBuffer { Rows, LowRank, PackedRight, PackedB, Partial, Tile, Count };

float* caller_buffer(CallerBuffer which, int64_t count) { return scratch(which, count); }
float* task_buffer(TaskBuffer which, int64_t count) { return scratch(which, count); }

template <DType T>
const void* adapter_matrix(const void* base, int64_t offset) {
  return element_at<T>(const_cast<void*>(base), offset);
}

// fn(i0, i1, adapter) for each run of grouped rows [g0, g1) that shares an adapter, in order
// (so adapters come non-decreasing); i0, i1 are relative to g0.
template <class Fn>
void for_each_run(const AdapterSegments& s, int64_t g0, int64_t g1, Fn&& fn) {
  auto seg = static_cast<size_t>(std::upper_bound(s.begin.begin(), s.begin.end(), g0) - s.begin.begin() - 1);
  for (int64_t g = g0; g < g1; ++seg) {
    const int64_t end = std::min(g1, s.begin[seg + 1]);
    fn(g - g0, end - g0, s.adapter[seg]);
    g = end;
  }
}

// t[i][0..rMax) = scale·x[i]·A[l][0..r)ᵀ, zero from r on (and for l = -1), for `rows` float32 rows.
template <DType T>
void shrink_rows(const LoraMultiParams& p, int32_t l, const float* x, int64_t ldx, int64_t rows, float* t, int64_t ldt) {
  const int64_t r = l >= 0 ? p.rank(l) : 0;
  if (r > 0) rows_dot<T>(x, ldx, rows, adapter_matrix<T>(p.a, p.a_offset(l)), p.k, 0, r, p.k, t, ldt, false);
  for (int64_t i = 0; i < rows; ++i) {
    float* ti = t + i * ldt;
    for (int64_t j = 0; j < r; ++j) ti[j] *= p.scales[l];
    std::fill(ti + r, ti + p.r_max, 0.0f);
  }
}

// y row = values + bias (count columns), in y's dtype.
template <DType T>
void store_row(const float* values, const float* bias, int64_t count, void* y, int64_t y_offset) {
  TileTarget target;
  target.y = element_at<T>(y, y_offset);
  target.bias = bias;
  for (int64_t j = 0; j < count; j += kNR) {
    const int cols = static_cast<int>(std::min<int64_t>(kNR, count - j));
    Vec acc[kGemmNV];
    if (cols == kNR) {
      for (int v = 0; v < kGemmNV; ++v) acc[v] = vload(values + j + v * kLanes);
      finish_row_vectors<T>(acc, 0, target);
    } else {
      finish_partial_tile<T>(values + j, 1, cols, target);
    }
    target.y = element_at<T>(target.y, kNR);
    if (target.bias) target.bias += kNR;
  }
}

// ---- small m (decode): stream the weight --------------------------------------------------------
template <DType T>
void forward_streaming(const LoraMultiParams& p, const AdapterSegments& s, const float* bias) {
  const int64_t m = p.m, k = p.k, rmax = p.r_max;
  float* x = caller_buffer(CallerBuffer::XRows, m * k);  // grouped order
  for (int64_t i = 0; i < m; ++i) widen_row<T>(p.x, s.order[static_cast<size_t>(i)] * p.x_stride, k, x + i * k);
  float* t = caller_buffer(CallerBuffer::LowRank, m * rmax);
  parallel_for(s.count(), [&](int64_t seg, int) {
    const int64_t b = s.begin[static_cast<size_t>(seg)], e = s.begin[static_cast<size_t>(seg) + 1];
    shrink_rows<T>(p, s.adapter[static_cast<size_t>(seg)], x + b * k, k, e - b, t + b * rmax, rmax);
  });

  parallel_for(ceil_div(p.n, kSmallColsPerTask), [&](int64_t task, int) {
    const int64_t j0 = task * kSmallColsPerTask, j1 = std::min(p.n, j0 + kSmallColsPerTask), cols = j1 - j0;
    float* tile = task_buffer(TaskBuffer::Tile, m * kSmallColsPerTask);
    rows_dot<T>(x, k, m, p.weight, p.weight_stride, j0, j1, k, tile, cols, false);
    // BGMV: each run of rows against its adapter's B columns [j0, j1) (r values per column).
    for_each_run(s, 0, m, [&](int64_t i0, int64_t i1, int32_t l) {
      if (l < 0) return;
      rows_dot<T>(t + i0 * rmax, rmax, i1 - i0, adapter_matrix<T>(p.b, p.b_offset(l)), rmax, j0, j1, p.rank(l),
                  tile + i0 * cols, cols, true);
    });
    for (int64_t i = 0; i < m; ++i)
      store_row<T>(tile + i * cols, bias ? bias + j0 : nullptr, cols, p.y, s.order[static_cast<size_t>(i)] * p.y_stride + j0);
  });
}

// ---- larger m (prefill): packed GEMM, expand before the one store --------------------------------
// Packed T: row panel q is rMax×MR floats at q·MR·rMax, column kk at kk·MR (the micro-kernel's
// left layout, so the first r columns of a panel are a kc = r left operand).
struct PackedLowRank {
  float* data;
  int64_t r_max;
  float* panel(int64_t q) const { return data + q * kMR * r_max; }
};

// Phase 1 for one MR-row panel of grouped rows [g0, g0 + rows): widen them, pack them into every
// K block of `left`, and compute and pack their T rows.
template <DType T>
void pack_panel(const LoraMultiParams& p, const AdapterSegments& s, int64_t g0, int64_t rows, const KBlocks& kb,
                const PackedLeft& left, const PackedLowRank& low, int64_t panel) {
  const int64_t k = p.k, rmax = p.r_max;
  float* x = task_buffer(TaskBuffer::Rows, kMR * k);
  for (int64_t i = 0; i < rows; ++i) widen_row<T>(p.x, s.order[static_cast<size_t>(g0 + i)] * p.x_stride, k, x + i * k);
  pack_left_rows(x, k, rows, kb, left, panel);
  float* t = task_buffer(TaskBuffer::LowRank, kMR * rmax);
  for_each_run(s, g0, g0 + rows, [&](int64_t i0, int64_t i1, int32_t l) {
    shrink_rows<T>(p, l, x + i0 * k, k, i1 - i0, t + i0 * rmax, rmax);
  });
  float* dst = low.panel(panel);
  for (int64_t kk = 0; kk < rmax; ++kk) {
    int64_t i = 0;
    for (; i < rows; ++i) dst[kk * kMR + i] = t[i * rmax + kk];
    for (; i < kMR; ++i) dst[kk * kMR + i] = 0.0f;
  }
}

// Phase 2 for row panels [q0, q1) of the chunk starting at grouped row `row0` and columns
// [j0, j1): the base GEMM into a float32 tile (K blocks outer, as lora_linear.cpp), then per NR
// column panel and row panel the expand of each run and the one store of its rows.
template <DType T>
void multiply_block(const LoraMultiParams& p, const AdapterSegments& s, int64_t row0, int64_t rows, const KBlocks& kb,
                    const PackedLeft& left, const PackedLowRank& low, const float* bias, int64_t q0, int64_t q1,
                    int64_t j0, int64_t j1) {
  const int64_t cols = j1 - j0, cols_pad = round_up(cols, kNR), rmax = p.r_max;
  float* right = task_buffer(TaskBuffer::PackedRight, cols_pad * kb.width);
  float* partial = task_buffer(TaskBuffer::Partial, (q1 - q0) * kMR * cols_pad);
  auto partial_at = [&](int64_t q, int64_t i, int64_t j) { return partial + ((q - q0) * kMR + i) * cols_pad + (j - j0); };

  for (int64_t b = 0; b < kb.count; ++b) {
    const int64_t c0 = kb.begin(b), kc = kb.end(b) - c0;
    for (int64_t qb = q0; qb < q1; qb += kMCPanels) {
      const int64_t qe = std::min(q1, qb + kMCPanels);
      for (int64_t j = j0; j < j1; j += kNR) {
        float* right_panel = right + (j - j0) * kc;
        const int64_t valid = std::min<int64_t>(kNR, j1 - j);
        if (qb == q0) pack_transposed<T>(p.weight, p.weight_stride, j, valid, c0, kc, right_panel);
        for (int64_t q = qb; q < qe; ++q) {
          TileTarget target;
          target.c = partial_at(q, 0, j);
          target.ldc = cols_pad;
          target.accumulate = b > 0;
          const int row_count = static_cast<int>(std::min<int64_t>(kMR, rows - q * kMR));
          gemm_micro_kernel<T>(kc, left.panel(kb, b, q), right_panel, row_count, static_cast<int>(valid), target);
        }
      }
    }
  }

  float* b_panel = task_buffer(TaskBuffer::PackedB, rmax * kNR);
  alignas(64) float row_tile[kNR];
  for (int64_t j = j0; j < j1; j += kNR) {
    const int valid = static_cast<int>(std::min<int64_t>(kNR, j1 - j));
    int32_t packed = -1;  // adapter whose B columns [j, j + NR) are in b_panel
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t g0 = row0 + q * kMR;
      for_each_run(s, g0, g0 + std::min<int64_t>(kMR, rows - q * kMR), [&](int64_t i0, int64_t i1, int32_t l) {
        const int64_t r = l >= 0 ? p.rank(l) : 0;
        if (r > 0 && l != packed) {
          pack_transposed<T>(adapter_matrix<T>(p.b, p.b_offset(l)), rmax, j, valid, 0, r, b_panel);
          packed = l;
        }
        Vec acc[kMR][kGemmNV];
        gemm_micro_accumulate(r, low.panel(q), b_panel, acc);  // rows outside [i0, i1) are not used
        for (int64_t i = i0; i < i1; ++i) {
          TileTarget target;
          target.c = partial_at(q, i, j);
          target.accumulate = true;
          target.y = element_at<T>(p.y, s.order[static_cast<size_t>(g0 + i)] * p.y_stride + j);
          target.bias = bias ? bias + j : nullptr;
          if (valid == kNR) {
            finish_row_vectors<T>(acc[i], 0, target);
          } else {
            for (int v = 0; v < kGemmNV; ++v) vstore(row_tile + v * kLanes, acc[i][v]);
            finish_partial_tile<T>(row_tile, 1, valid, target);
          }
        }
      });
    }
  }
}

template <DType T>
void forward_packed(const LoraMultiParams& p, const AdapterSegments& s, const float* bias) {
  const KBlocks kb = split_k(p.k, kTargetKC);
  const int64_t chunk_rows = std::max<int64_t>(kMR, kPackedLeftBytes / (p.k * 4) / kMR * kMR);

  for (int64_t row0 = 0; row0 < p.m; row0 += chunk_rows) {
    const int64_t rows = std::min(chunk_rows, p.m - row0), panels = ceil_div(rows, kMR);
    const PackedLeft left{caller_buffer(CallerBuffer::PackedLeft, panels * kMR * p.k), panels * kMR};
    const PackedLowRank low{caller_buffer(CallerBuffer::PackedLowRank, panels * kMR * p.r_max), p.r_max};
    parallel_for(panels, [&](int64_t panel, int) {
      pack_panel<T>(p, s, row0 + panel * kMR, std::min<int64_t>(kMR, rows - panel * kMR), kb, left, low, panel);
    });
    parallel_panels_by_columns(panels, p.n, kMaxNC, [&](int64_t q0, int64_t q1, int64_t j0, int64_t j1) {
      multiply_block<T>(p, s, row0, rows, kb, left, low, bias, q0, q1, j0, j1);
    });
  }
}

}  // namespace

void lora_forward_multi(const LoraMultiParams& p, const AdapterSegments& s) {
  const float* bias = bias_as_float(p.bias, p.bias_f32, p.dtype, p.n, CallerBuffer::Bias);
  with_float_dtype(p.dtype, [&](auto tag) {
    constexpr DType T = decltype(tag)::value;
    if (p.m <= kSmallRows) forward_streaming<T>(p, s, bias);
    else forward_packed<T>(p, s, bias);
  });
}

}  // namespace lk::cpu::LK_SIMD_NS
