// The packed BLIS-style GEMM of the fused LoRA forward, y = [x | T]·[W | B]ᵀ + bias with
// T = scale·(x ⊙ mask)·Aᵀ, shared by lora.forward (csrc/cpu/lora_linear.cpp, the napkin math of
// its packed path is there) and quant.matmul's prefill (csrc/cpu/quant_matmul.cpp). What differs
// between them is only where the right operand's micro-panels come from: a float weight in the
// dtype of x, or packed quantized codes dequantized while they are packed. So the driver takes a
// RightPanels callable:
//
//   right(j, valid, c0, c1, dst): the NR-wide micro-panel of the augmented weight [W | B] for
//   output columns j .. j + valid (valid ≤ NR; zero beyond) and reduction columns [c0, c1)
//   (c < K: W, c ≥ K: B), transposed: dst[kk·NR + jj] = [W | B][j + jj][c0 + kk].
//
// Include only from csrc/cpu/*.cpp (inside no namespace); everything lands in lk::cpu::LK_SIMD_NS.
#pragma once
#include <algorithm>
#include <cstdint>

#include "core/parallel.h"
#include "cpu/gemm_microkernel.h"
#include "cpu/packed_gemm.h"
#include "cpu/vec.h"
#include "ops/lora_linear.h"

namespace lk::cpu::LK_SIMD_NS {

// Buffers of the packed forward. The caller's are shared read-only with the workers for the
// duration of a call; the task's are used inside one task (the calling thread also runs tasks).
enum class LoraGemmCallerBuffer { PackedLeft, Count };
enum class LoraGemmTaskBuffer { Rows, MaskedRows, PackedRight, Partial, Count };

// T rows: t[i][t0..t1) = scale·Σ_k xm[i][k]·A[t][k] for the given rows of (x ⊙ mask).
template <DType T>
void low_rank_rows(const LoraForwardParams& p, const float* xm, int64_t ldxm, int64_t rows, int64_t t0, int64_t t1,
                   float* t, int64_t ldt) {
  rows_dot<T>(xm, ldxm, rows, p.a, p.a_stride, t0, t1, p.k, t + t0, ldt, false);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = t0; j < t1; ++j) t[i * ldt + j] *= p.scale;
}

// Phase 1 for one MR-row panel: widen its rows of x (float32, row stride K + r), compute the
// panel's T into the r trailing columns, then interleave every K block into the packed layout.
template <DType T>
void pack_left_panel(const LoraForwardParams& p, int64_t row0, int64_t rows, const KBlocks& kb, const PackedLeft& left,
                     int64_t panel) {
  const int64_t k = p.k, ld = kb.total;
  float* aug = scratch(LoraGemmTaskBuffer::Rows, kGemmMR * ld);
  widen_rows<T>(static_cast<const Elem<T>*>(p.x) + row0 * p.x_stride, p.x_stride, rows, k, aug, ld);
  if (p.r > 0) {
    const float* xm = aug;
    int64_t ldxm = ld;
    if (p.dropout_mask) {
      float* masked = scratch(LoraGemmTaskBuffer::MaskedRows, kGemmMR * k);
      multiply_by_mask_rows<T>(p.dropout_mask, p.mask_stride, row0, rows, k, aug, ld, masked, k);
      xm = masked;
      ldxm = k;
    }
    low_rank_rows<T>(p, xm, ldxm, rows, 0, p.r, aug + k, ld);
  }
  pack_left_rows(aug, ld, rows, kb, left, panel);
}

// Phase 2 for row panels [q0, q1) of the chunk and columns [j0, j1): K blocks outer, then MC-row
// blocks of x, NR-column micro-panels, MR-row micro-panels. Each right micro-panel is packed
// right before its first sweep (the first MC block) and reused by the later MC blocks, so the
// DRAM reads of packing are spread between micro-kernel calls instead of coming in one burst.
// (Software-prefetching the next micro-panel's weight rows during a sweep measured no gain.)
template <DType T, class RightPanels>
void multiply_block(const LoraForwardParams& p, const RightPanels& right, int64_t row0, int64_t rows, const KBlocks& kb,
                    const PackedLeft& left, const float* bias, int64_t q0, int64_t q1, int64_t j0, int64_t j1) {
  constexpr int kMR = kGemmMR, kNR = kGemmNR;
  const int64_t cols = j1 - j0, cols_pad = round_up(cols, kNR);
  float* right_panels = scratch(LoraGemmTaskBuffer::PackedRight, cols_pad * kb.width);
  // float32 y accumulates in place; half types keep partial sums in a float32 tile.
  constexpr bool kInPlace = T == DType::Float32;
  float* partial = kInPlace ? nullptr : scratch(LoraGemmTaskBuffer::Partial, (q1 - q0) * kMR * cols_pad);

  for (int64_t b = 0; b < kb.count; ++b) {
    const int64_t c0 = kb.begin(b), c1 = kb.end(b), kc = c1 - c0;
    const bool last = b + 1 == kb.count;
    for (int64_t qb = q0; qb < q1; qb += kMCPanels) {
      const int64_t qe = std::min(q1, qb + kMCPanels);
      const bool first_sweep = qb == q0;
      for (int64_t j = j0; j < j1; j += kNR) {
        float* right_panel = right_panels + (j - j0) * kc;
        const int64_t valid = std::min<int64_t>(kNR, j1 - j);
        if (first_sweep) right(j, valid, c0, c1, right_panel);
        for (int64_t q = qb; q < qe; ++q) {
          const int64_t i = q * kMR;  // row within the chunk
          const int row_count = static_cast<int>(std::min<int64_t>(kMR, rows - i));
          const int64_t y_offset = (row0 + i) * p.y_stride + j;
          TileTarget target;
          if (kInPlace) {
            target.c = static_cast<float*>(p.y) + y_offset;
            target.ldc = p.y_stride;
          } else {
            target.c = partial + (i - q0 * kMR) * cols_pad + (j - j0);
            target.ldc = cols_pad;
          }
          target.accumulate = b > 0;
          if (last) {
            target.y = element_at<T>(p.y, y_offset);
            target.ldy = p.y_stride;
            target.bias = bias ? bias + j : nullptr;
            target.column_scale = p.column_scale ? p.column_scale + j : nullptr;
          }
          gemm_micro_kernel<T>(kc, left.panel(kb, b, q), right_panel, row_count, static_cast<int>(valid), target);
        }
      }
    }
  }
}

// y = [x | T]·[W | B]ᵀ + bias for all p.m rows, the right operand from `right` (see the top);
// `bias` is float32 [n] or null (p.bias is not read).
template <DType T, class RightPanels>
void lora_forward_packed(const LoraForwardParams& p, const RightPanels& right, const float* bias) {
  constexpr int kMR = kGemmMR;
  // The K + r augmented columns in equal blocks near kTargetKC.
  const KBlocks kb = split_k(p.k + p.r, kTargetKC);
  const int64_t chunk_rows = std::max<int64_t>(kMR, kPackedLeftBytes / (kb.total * 4) / kMR * kMR);
  for (int64_t row0 = 0; row0 < p.m; row0 += chunk_rows) {
    const int64_t rows = std::min(chunk_rows, p.m - row0), panels = ceil_div(rows, kMR);
    const PackedLeft left{scratch(LoraGemmCallerBuffer::PackedLeft, panels * kMR * kb.total), panels * kMR};
    parallel_for(panels, [&](int64_t panel, int) {
      pack_left_panel<T>(p, row0 + panel * kMR, std::min<int64_t>(kMR, rows - panel * kMR), kb, left, panel);
    });
    parallel_panels_by_columns(panels, p.n, kMaxNC, [&](int64_t q0, int64_t q1, int64_t j0, int64_t j1) {
      multiply_block<T>(p, right, row0, rows, kb, left, bias, q0, q1, j0, j1);
    });
  }
}

}  // namespace lk::cpu::LK_SIMD_NS
