// The fused LoRA backward on the CPU for a frozen weight (see LoraBackwardParams in ops/lora_linear.h),
// shared by lora.backward (csrc/cpu/lora_backward.cpp) and quant.matmulBackward
// (csrc/cpu/quant_matmul.cpp). They differ in where W's rows come from (a float weight, or packed
// quantized codes dequantized while they are packed: the WeightRows callable below) and in the
// gate of quant.matmul, a multiplier of the low-rank term per output column (LowRankGate; 1 for
// lora.backward). With g = grad_output [m, n], xm = x ⊙ mask and T = xm·Aᵀ [m, r]:
//   gradB = scale·gᵀ·T [n, r],  dT = scale·g·B [m, r],  gradA = dTᵀ·xm [r, k],
//   gradInput = g·W + mask ⊙ (dT·A) [m, k].
//
// Two phases per chunk of rows, each reading g and x once:
//  1. Per MR-row panel (one task = a fixed group of consecutive panels): widen the panel's g rows
//     and x rows to float32, and while they are in L1/L2
//       dT_panel = g_panel·(scale·B)            (dot tiles against a float32 scale·Bᵀ [r, n], gate folded in)
//       T_panel  = xm_panel·Aᵀ                  (dot tiles against A's [r, k] rows)
//       gradBᵀ_group += T_panelᵀ·g_panel        [r, n]   (outer-product accumulation)
//       gradA_group  += dT_panelᵀ·xm_panel      [r, k]
//     and pack g_panel and dT_panel into MR-row panels (the left operands of the big GEMM and of
//     its epilogue). gradA/gradB partial sums live per group (a fixed split of the rows,
//     independent of threads and scheduling) and are summed in group order at the end: the
//     result is deterministic.
//  2. gradInput = g·W as one packed GEMM (reduction over n; W [n, k] rows are already contiguous
//     along the output columns, so its NR-wide micro-panels are plain widened copies, no
//     transpose) whose epilogue adds mask ⊙ (dT·A) to each finished MR×NR tile while it is in L1
//     (dT·A as an r-step run of the micro-kernel on the dT panel and an NR-column panel of A) and
//     stores gradInput once.
//
// Napkin math (m=512, K=N=4096, r=16, float32): the big GEMM is 2·m·n·k = 17.2 GFLOP (~75 ms at
// the 2-core peak, ~88 ms at the ~195 GFLOP/s the micro-kernel sustains in the forward); the five
// low-rank products are 5·2·m·r·(n or k) = 0.34 GFLOP (2%), done on data already in cache:
// phase 1 reads g and x (8 MiB each) once, phase 2 reads W (64 MiB) once while packing it.
// Unfused, the same math reads g three times, x twice and writes/re-reads gradInput once more.
// Measured on 2 Zen4 cores (CPU time of one thread, by leaving parts out; ~174 ms in all): the
// micro-kernel ~158 ms (109 GFLOP/s, 93% of the FMA peak), packing W ~8.5 ms (a copy, but every
// line comes from DRAM at the ~9.5 GB/s one core gets; software prefetching of the next panel,
// or packing it a few rows per micro-kernel call, measured no gain), phase 1's products ~4.5 ms,
// the epilogue ~1.5 ms. Both cores: ~88 ms, i.e. the GEMM plus ~9 ms.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "core/parallel.h"
#include "cpu/gemm_microkernel.h"
#include "cpu/packed_gemm.h"
#include "cpu/vec.h"
#include "ops/lora_linear.h"

// Include only from csrc/cpu/*.cpp (inside no namespace); everything lands in lk::cpu::LK_SIMD_NS,
// the engine's internals in its nested namespace fused_backward.
namespace lk::cpu::LK_SIMD_NS {

// The gate of the low-rank term: y = x·Wᵀ + gate ⊙ (scale·T·Bᵀ), one multiplier per output column
// or one for all. Folded into B (scale·gate ⊙ B), so dT = g·(scale·gate ⊙ B) and
// gradB = scale·gate ⊙ gᵀ·T; its own gradient is gradGate_j = scale·Σ_t B[j][t]·(gᵀ·T)[j][t],
// summed over the columns for a scalar gate.
struct LowRankGate {
  float scalar = 1;                   // when per_column is null
  const float* per_column = nullptr;  // float32 [n], or null
  float* grad = nullptr;              // float32 [n] (per_column) or [1], or null: not wanted
  float at(int64_t j) const { return per_column ? per_column[j] : scalar; }
};

// W rows for gradInput = g·W: `weight_rows(panel, dst)` writes dst[kk·NR + jj] = W[panel.row0 + kk][panel.col + jj]
// for kk < panel.count, jj < panel.valid, and zero for valid ≤ jj < NR (an NR-wide micro-panel of
// W's rows, which already run along gradInput's columns).
struct RowPanel {
  int64_t row0 = 0, count = 0, col = 0, valid = 0;
};

// dst = the micro-panel `panel` of a row-major matrix src (row stride ld) in dtype T (see RowPanel):
// `count` widened row segments.
template <DType T>
void pack_row_panel(const void* src, int64_t ld, const RowPanel& panel, float* dst) {
  for (int64_t kk = 0; kk < panel.count; ++kk) {
    const int64_t from = (panel.row0 + kk) * ld + panel.col;
    float* d = dst + kk * kGemmNR;
    if (panel.valid == kGemmNR) {
      for (int v = 0; v < kGemmNV; ++v) vstore(d + v * kLanes, vload_as_float<T>(src, from + v * kLanes));
    } else {
      int64_t jj = 0;
      for (; jj < panel.valid; ++jj) d[jj] = load_as_float<T>(src, from + jj);
      for (; jj < kGemmNR; ++jj) d[jj] = 0.0f;
    }
  }
}

namespace fused_backward {

constexpr int kMR = kGemmMR;
constexpr int kNR = kGemmNR;

// Block sizes of the big GEMM: K blocks and column tasks as in the forward (packed_gemm.h;
// measured in lora_linear.cpp); row panels per sweep below.
// Row groups with their own gradA/gradB partial sums: 8·r·(n + k) floats (4 MiB at r=16,
// n=k=4096), enough tasks to balance phase 1 over the cores.
constexpr int64_t kGroups = 8;
// Columns per step of the outer-product accumulation: an MR×512 float32 block of g or xm
// (12 KiB) stays in L1 while the r accumulator rows pass over it.
constexpr int64_t kOuterCols = 512;
// Row panels per sweep over a packed W micro-panel. Up to this many (576 rows), one sweep covers
// all row panels of a task: each micro-panel is used right after it is packed, so a single
// buffer, hot in L1/L2, holds it, and the sweep's K-block slice of packed g (96·MR·KC·4 B =
// 576 KiB) stays in the 1 MiB L2 next to the 64 KiB micro-panel. Measured at M=512 on Zen4
// against the forward's 64-panel sweeps, whose micro-panels of a K block are all kept (1 MiB per
// task) for the later sweep and so are written to lines that left the L2 long ago: ~1% less CPU
// time (172 vs 174 ms on one thread). More rows are split into equal sweeps that keep every
// micro-panel, as the forward does.
constexpr int64_t kSweepPanels = 96;

enum class LoraBackwardCallerBuffer { ScaledBt, APanels, DT, Partials, PackedLeft, Count };
enum class LoraBackwardTaskBuffer { GradRows, XRows, MaskedRows, LowRank, DTRows, PackedRight, Partial, Count };

// acc[t][c] (+)= Σ_{i<rows} coef[i·ldc + t0 + t]·vals[i·ldv + c] for TB ranks t and c < len: one
// vector of vals feeds TB FMAs.
template <int TB>
void outer_accumulate_ranks(const float* coef, int64_t ldc, int64_t t0, int64_t rows, const float* vals, int64_t ldv,
                            int64_t c0, int64_t c1, float* acc, int64_t lda, bool overwrite) {
  int64_t c = c0;
  for (; c + kLanes <= c1; c += kLanes) {
    Vec s[TB];
    for (int t = 0; t < TB; ++t) s[t] = overwrite ? vzero() : vload(acc + (t0 + t) * lda + c);
    for (int64_t i = 0; i < rows; ++i) {
      const Vec v = vload(vals + i * ldv + c);
      for (int t = 0; t < TB; ++t) s[t] = vfma(vset1(coef[i * ldc + t0 + t]), v, s[t]);
    }
    for (int t = 0; t < TB; ++t) vstore(acc + (t0 + t) * lda + c, s[t]);
  }
  for (; c < c1; ++c)
    for (int t = 0; t < TB; ++t) {
      float s = overwrite ? 0.0f : acc[(t0 + t) * lda + c];
      for (int64_t i = 0; i < rows; ++i) s += coef[i * ldc + t0 + t] * vals[i * ldv + c];
      acc[(t0 + t) * lda + c] = s;
    }
}

// acc [r, len] (+)= coefᵀ·vals for coef [rows, r] and vals [rows, len] (row strides ldc, ldv).
inline void outer_accumulate(const float* coef, int64_t ldc, int64_t r, int64_t rows, const float* vals, int64_t ldv,
                             int64_t len, float* acc, bool overwrite) {
  for (int64_t c0 = 0; c0 < len; c0 += kOuterCols) {
    const int64_t c1 = std::min(len, c0 + kOuterCols);
    int64_t t = 0;
    for (; t + 4 <= r; t += 4) outer_accumulate_ranks<4>(coef, ldc, t, rows, vals, ldv, c0, c1, acc, len, overwrite);
    for (; t < r; ++t) outer_accumulate_ranks<1>(coef, ldc, t, rows, vals, ldv, c0, c1, acc, len, overwrite);
  }
}

// What phase 1 and phase 2 share for one call.
struct Prepared {
  const float* scaled_bt;  // [r, n]: scale·gate ⊙ Bᵀ
  const float* a_panels;   // A in r-row micro-panels (the epilogue's right operand): columns j.. at j·r
  float* partials;         // kGroups × ([r, n] gradBᵀ/scale, then [r, k] gradA)
  int64_t partial_stride;  // r·(n + k)
};

// Phase 1 for row panels [q0, q1) of the chunk starting at row0; dt receives the chunk's dT in
// MR-row panels (the epilogue's left operand).
template <DType T>
void low_rank_panels(const LoraBackwardParams& p, const Prepared& prep, int64_t row0, int64_t rows, int64_t q0,
                     int64_t q1, const PackedLeft& dt, float* partial, bool first_of_group, const KBlocks* kb,
                     const PackedLeft* left) {
  const int64_t n = p.n, k = p.k, r = p.r;
  const KBlocks dt_blocks{1, r, r};
  float* g = scratch(LoraBackwardTaskBuffer::GradRows, kMR * n);
  float* x = scratch(LoraBackwardTaskBuffer::XRows, kMR * k);
  float* t = scratch(LoraBackwardTaskBuffer::LowRank, kMR * r);
  float* dt_rows = scratch(LoraBackwardTaskBuffer::DTRows, kMR * r);
  for (int64_t q = q0; q < q1; ++q) {
    const int64_t i0 = q * kMR, count = std::min<int64_t>(kMR, rows - i0), row = row0 + i0;
    widen_rows<T>(static_cast<const Elem<T>*>(p.grad_output) + row * p.grad_output_stride, p.grad_output_stride,
                  count, n, g, n);
    widen_rows<T>(static_cast<const Elem<T>*>(p.x) + row * p.x_stride, p.x_stride, count, k, x, k);
    const float* xm = x;
    if (p.dropout_mask) {
      float* masked = scratch(LoraBackwardTaskBuffer::MaskedRows, kMR * k);
      multiply_by_mask_rows<T>(p.dropout_mask, p.mask_stride, row, count, k, x, k, masked, k);
      xm = masked;
    }
    rows_dot<DType::Float32>(g, n, count, prep.scaled_bt, n, 0, r, n, dt_rows, r, false);
    rows_dot<T>(xm, k, count, p.a, p.a_stride, 0, r, k, t, r, false);
    const bool overwrite = first_of_group && q == q0;
    outer_accumulate(t, r, r, count, g, n, n, partial, overwrite);
    outer_accumulate(dt_rows, r, r, count, xm, k, k, partial + r * n, overwrite);
    pack_left_rows(dt_rows, r, count, dt_blocks, dt, q);
    if (left) pack_left_rows(g, n, count, *kb, *left, q);
  }
}

// The epilogue of one finished MR×NR tile of g·W (float32 in c, row stride ldc): adds
// mask ⊙ (dT·A) and stores gradInput rows [row, row + rows) × columns [col, col + cols).
// dT·A is an r-step run of the GEMM's micro-kernel on the packed dT panel and A micro-panel
// (r·MR·NR FMAs: 6% of the tile's last K block, 0.4% of all its FMAs). Row by row against A's
// [r, k] rows instead, one broadcast and one load per FMA, with the r rows 16 KiB apart in the
// same few L1 sets, it took ~3.8 ms of one thread's ~176 ms (now ~1.5).
template <DType T>
void finish_tile(const LoraBackwardParams& p, const float* c, int64_t ldc, const float* dt_panel,
                 const float* a_panel, int64_t row, int rows, int64_t col, int cols) {
  Vec acc[kMR][kGemmNV];
  gemm_micro_accumulate(p.r, dt_panel, a_panel, acc);
  alignas(64) float low[kMR * kNR];
  for (int i = 0; i < kMR; ++i)
    for (int v = 0; v < kGemmNV; ++v) vstore(low + i * kNR + v * kLanes, acc[i][v]);
  for (int i = 0; i < rows; ++i) {
    const float* li = low + i * kNR;
    const float* ci = c + i * ldc;
    const int64_t out = (row + i) * p.grad_input_stride + col, mask = (row + i) * p.mask_stride + col;
    int j = 0;
    for (; j + kLanes <= cols; j += kLanes) {
      Vec v = vload(li + j);
      if (p.dropout_mask) v = vmul(v, vload_as_float<T>(p.dropout_mask, mask + j));
      vstore_from_float<T>(p.grad_input, out + j, vadd(vload(ci + j), v));
    }
    for (; j < cols; ++j) {
      float v = li[j];
      if (p.dropout_mask) v *= load_as_float<T>(p.dropout_mask, mask + j);
      store_from_float<T>(p.grad_input, out + j, ci[j] + v);
    }
  }
}

// Phase 2 for row panels [q0, q1) and output columns [j0, j1): the loop nest of the forward's
// multiply_block (K blocks, sweeps of row panels, NR-column micro-panels packed on the first
// sweep, MR-row micro-panels), reducing over n.
template <DType T, class WeightRows>
void input_grad_block(const LoraBackwardParams& p, const WeightRows& weight_rows, const Prepared& prep, int64_t row0,
                      int64_t rows, const KBlocks& kb, const PackedLeft& left, const PackedLeft& dt, int64_t q0,
                      int64_t q1, int64_t j0, int64_t j1) {
  const KBlocks dt_blocks{1, p.r, p.r};
  const int64_t cols = j1 - j0, cols_pad = round_up(cols, kNR);
  const int64_t sweeps = ceil_div(q1 - q0, kSweepPanels);
  float* right = scratch(LoraBackwardTaskBuffer::PackedRight, (sweeps == 1 ? kNR : cols_pad) * kb.width);
  constexpr bool kInPlace = T == DType::Float32;  // float32 gradInput holds the partial sums itself
  float* partial = kInPlace ? nullptr : scratch(LoraBackwardTaskBuffer::Partial, (q1 - q0) * kMR * cols_pad);
  for (int64_t b = 0; b < kb.count; ++b) {
    const int64_t c0 = kb.begin(b), kc = kb.end(b) - c0;
    const bool last = b + 1 == kb.count;
    for (int64_t s = 0; s < sweeps; ++s) {
      const int64_t qb = q0 + s * (q1 - q0) / sweeps, qe = q0 + (s + 1) * (q1 - q0) / sweeps;
      for (int64_t j = j0; j < j1; j += kNR) {
        float* right_panel = sweeps == 1 ? right : right + (j - j0) * kc;
        const int valid = static_cast<int>(std::min<int64_t>(kNR, j1 - j));
        if (s == 0) weight_rows(RowPanel{c0, kc, j, valid}, right_panel);
        for (int64_t q = qb; q < qe; ++q) {
          const int64_t i = q * kMR;
          const int count = static_cast<int>(std::min<int64_t>(kMR, rows - i));
          TileTarget target;
          if (kInPlace) {
            target.c = static_cast<float*>(p.grad_input) + (row0 + i) * p.grad_input_stride + j;
            target.ldc = p.grad_input_stride;
          } else {
            target.c = partial + (i - q0 * kMR) * cols_pad + (j - j0);
            target.ldc = cols_pad;
          }
          target.accumulate = b > 0;
          gemm_micro_kernel<T>(kc, left.panel(kb, b, q), right_panel, count, valid, target);
          if (last)
            finish_tile<T>(p, target.c, target.ldc, dt.panel(dt_blocks, 0, q), prep.a_panels + j * p.r,
                           row0 + i, count, j, valid);
        }
      }
    }
  }
}

// gradGate from P = gᵀ·T ([r, n], row t at pt + t·n; see LowRankGate): per column in rank order,
// and for a scalar gate the columns summed in float64 in order. n·r multiply-adds (64 K at
// N = 4096, r = 16): done on one thread, deterministic.
template <DType T>
void gate_gradient(const LoraBackwardParams& p, const float* pt, const LowRankGate& gate) {
  double total = 0;
  for (int64_t j = 0; j < p.n; ++j) {
    float sum = 0;
    for (int64_t t = 0; t < p.r; ++t) sum += load_as_float<T>(p.b, j * p.b_stride + t) * pt[t * p.n + j];
    const float column = p.scale * sum;
    if (gate.per_column) gate.grad[j] = column;
    total += column;
  }
  if (!gate.per_column) gate.grad[0] = static_cast<float>(total);
}

// The fused backward of y = x·Wᵀ + gate ⊙ (scale·(x ⊙ mask)·Aᵀ·Bᵀ) for a frozen W whose rows come from
// `weight_rows` (see the top); p.weight is not read.
template <DType T, class WeightRows>
void lora_backward_fused(const LoraBackwardParams& p, const WeightRows& weight_rows, const LowRankGate& gate) {
  const int64_t m = p.m, n = p.n, k = p.k, r = p.r;
  // scale·gate ⊙ Bᵀ and A as float32 rows, shared read-only by the tasks.
  float* scaled_bt = scratch(LoraBackwardCallerBuffer::ScaledBt, r * n);
  for (int64_t j = 0; j < n; ++j) {
    const float column_scale = p.scale * gate.at(j);
    for (int64_t t = 0; t < r; ++t) scaled_bt[t * n + j] = column_scale * load_as_float<T>(p.b, j * p.b_stride + t);
  }
  float* a_panels = scratch(LoraBackwardCallerBuffer::APanels, round_up(k, kNR) * r);
  for (int64_t j = 0; j < k; j += kNR)
    pack_row_panel<T>(p.a, p.a_stride, RowPanel{0, r, j, std::min<int64_t>(kNR, k - j)}, a_panels + j * r);
  const int64_t partial_stride = r * (n + k);
  const Prepared prep{scaled_bt, a_panels, scratch(LoraBackwardCallerBuffer::Partials, kGroups * partial_stride), partial_stride};

  const bool input_grad = p.grad_input != nullptr;
  const KBlocks kb = split_k(n, kTargetKC);
  const int64_t chunk_rows = std::max<int64_t>(kMR, kPackedLeftBytes / (n * 4) / kMR * kMR);
  const int64_t groups = std::min(kGroups, ceil_div(std::min(m, chunk_rows), kMR));
  for (int64_t row0 = 0; row0 < m; row0 += chunk_rows) {
    const int64_t rows = std::min(chunk_rows, m - row0), panels = ceil_div(rows, kMR);
    const PackedLeft dt{scratch(LoraBackwardCallerBuffer::DT, panels * kMR * r), panels * kMR};
    PackedLeft left{nullptr, panels * kMR};
    if (input_grad) left.data = scratch(LoraBackwardCallerBuffer::PackedLeft, panels * kMR * n);
    // Group g of this chunk: panels [g·panels/groups, (g+1)·panels/groups) — never empty in the
    // first chunk (the largest), where each group's partial sums start.
    parallel_for(groups, [&](int64_t g, int) {
      const int64_t q0 = g * panels / groups, q1 = (g + 1) * panels / groups;
      low_rank_panels<T>(p, prep, row0, rows, q0, q1, dt, prep.partials + g * partial_stride, row0 == 0, &kb,
                         input_grad ? &left : nullptr);
    });
    if (input_grad) {
      parallel_panels_by_columns(panels, k, kMaxNC, [&](int64_t q0, int64_t q1, int64_t j0, int64_t j1) {
        input_grad_block<T>(p, weight_rows, prep, row0, rows, kb, left, dt, q0, q1, j0, j1);
      });
    }
  }

  // gradB = scale·gate ⊙ Σ_g (gradBᵀ_g)ᵀ and gradA = Σ_g gradA_g, groups in order: one rank per task.
  // With a gate gradient wanted, the sum P = gᵀ·T over all rows ([r, n], transposed) replaces group
  // 0's partial (each task only touches its own rank's row).
  parallel_for(r, [&](int64_t t, int) {
    float* sum = scratch(LoraBackwardTaskBuffer::Partial, std::max(n, k));
    for (int64_t part = 0; part < 2; ++part) {
      const int64_t len = part == 0 ? n : k, offset = part == 0 ? t * n : r * n + t * k;
      std::memset(sum, 0, static_cast<size_t>(len) * sizeof(float));
      for (int64_t g = 0; g < groups; ++g) {
        const float* src = prep.partials + g * partial_stride + offset;
        int64_t c = 0;
        for (; c + kLanes <= len; c += kLanes) vstore(sum + c, vadd(vload(sum + c), vload(src + c)));
        for (; c < len; ++c) sum[c] += src[c];
      }
      if (part == 0) {
        for (int64_t j = 0; j < n; ++j)
          store_from_float<T>(p.grad_b, j * p.grad_b_stride + t, p.scale * gate.at(j) * sum[j]);
        if (gate.grad) std::memcpy(prep.partials + t * n, sum, static_cast<size_t>(n) * sizeof(float));
      } else {
        int64_t c = 0;
        for (; c + kLanes <= k; c += kLanes) vstore_from_float<T>(p.grad_a, t * p.grad_a_stride + c, vload(sum + c));
        for (; c < k; ++c) store_from_float<T>(p.grad_a, t * p.grad_a_stride + c, sum[c]);
      }
    }
  });
  if (gate.grad) gate_gradient<T>(p, prep.partials, gate);
}

}  // namespace fused_backward

using fused_backward::lora_backward_fused;

}  // namespace lk::cpu::LK_SIMD_NS
