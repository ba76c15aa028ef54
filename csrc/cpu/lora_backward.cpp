// Fused LoRA backward on the CPU for a frozen weight (see LoraBackwardParams in ops/lora_linear.h).
// Compiled once per SIMD level into lk::cpu::LK_SIMD_NS. With g = grad_output [m, n],
// xm = x ⊙ mask and T = xm·Aᵀ [m, r]:
//   gradB = scale·gᵀ·T [n, r],  dT = scale·g·B [m, r],  gradA = dTᵀ·xm [r, k],
//   gradInput = g·W + mask ⊙ (dT·A) [m, k].
//
// Two phases per chunk of rows, each reading g and x once:
//  1. Per MR-row panel (one task = a fixed group of consecutive panels): widen the panel's g rows
//     and x rows to float32, and while they are in L1/L2
//       dT_panel = g_panel·(scale·B)            (dot tiles against a float32 scale·Bᵀ [r, n])
//       T_panel  = xm_panel·Aᵀ                  (dot tiles against a float32 A [r, k])
//       gradBᵀ_group += T_panelᵀ·g_panel        [r, n]   (outer-product accumulation)
//       gradA_group  += dT_panelᵀ·xm_panel      [r, k]
//     and pack g_panel into the MR-row panels of the big GEMM. gradA/gradB partial sums live per
//     group (a fixed split of the rows, independent of threads and scheduling) and are summed in
//     group order at the end: the result is deterministic.
//  2. gradInput = g·W as one packed GEMM (reduction over n; W [n, k] rows are already contiguous
//     along the output columns, so its NR-wide micro-panels are plain widened copies, no
//     transpose) whose epilogue adds mask ⊙ (dT·A) to each finished MR×NR tile while it is in L1
//     and stores gradInput once.
//
// Napkin math (m=512, K=N=4096, r=16, float32): the big GEMM is 2·m·n·k = 17.2 GFLOP (~75 ms at
// the 2-core peak, ~88 ms at the ~195 GFLOP/s the micro-kernel sustains in the forward); the five
// low-rank products are 5·2·m·r·(n or k) = 0.34 GFLOP (2%), done on data already in cache:
// phase 1 reads g and x (8 MiB each) once, phase 2 reads W (64 MiB) once while packing it.
// Unfused, the same math reads g three times, x twice and writes/re-reads gradInput once more.
#include <algorithm>
#include <cstring>

#include "core/parallel.h"
#include "cpu/dispatch/kernels.h"
#include "cpu/gemm_microkernel.h"
#include "cpu/packed_gemm.h"
#include "cpu/vec.h"

namespace lk::cpu::LK_SIMD_NS {
namespace {

constexpr int kMR = kGemmMR;
constexpr int kNR = kGemmNR;

// Block sizes of the big GEMM: as in the forward (packed_gemm.h; measured in lora_linear.cpp).
// Row groups with their own gradA/gradB partial sums: 8·r·(n + k) floats (4 MiB at r=16,
// n=k=4096), enough tasks to balance phase 1 over the cores.
constexpr int64_t kGroups = 8;
// Columns per step of the outer-product accumulation: an MR×512 float32 block of g or xm
// (12 KiB) stays in L1 while the r accumulator rows pass over it.
constexpr int64_t kOuterCols = 512;

enum class CallerBuffer { ScaledBt, A, DT, Partials, PackedLeft, Count };
enum class TaskBuffer { GradRows, XRows, MaskedRows, LowRank, PackedRight, Partial, Count };

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
void outer_accumulate(const float* coef, int64_t ldc, int64_t r, int64_t rows, const float* vals, int64_t ldv,
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
  const float* scaled_bt;  // [r, n]: scale·Bᵀ
  const float* a;          // [r, k]
  float* partials;         // kGroups × ([r, n] gradBᵀ/scale, then [r, k] gradA)
  int64_t partial_stride;  // r·(n + k)
};

// Phase 1 for row panels [q0, q1) of the chunk starting at row0; dt holds the chunk's dT rows.
template <DType T>
void low_rank_panels(const LoraBackwardParams& p, const Prepared& prep, int64_t row0, int64_t rows, int64_t q0,
                     int64_t q1, float* dt, float* partial, bool first_of_group, const KBlocks* kb,
                     const PackedLeft* left) {
  const int64_t n = p.n, k = p.k, r = p.r;
  float* g = scratch(TaskBuffer::GradRows, kMR * n);
  float* x = scratch(TaskBuffer::XRows, kMR * k);
  float* t = scratch(TaskBuffer::LowRank, kMR * r);
  for (int64_t q = q0; q < q1; ++q) {
    const int64_t i0 = q * kMR, count = std::min<int64_t>(kMR, rows - i0), row = row0 + i0;
    widen_rows<T>(static_cast<const Elem<T>*>(p.grad_output) + row * p.grad_output_stride, p.grad_output_stride,
                  count, n, g, n);
    widen_rows<T>(static_cast<const Elem<T>*>(p.x) + row * p.x_stride, p.x_stride, count, k, x, k);
    const float* xm = x;
    if (p.dropout_mask) {
      float* masked = scratch(TaskBuffer::MaskedRows, kMR * k);
      multiply_by_mask_rows<T>(p.dropout_mask, p.mask_stride, row, count, k, x, k, masked, k);
      xm = masked;
    }
    float* dt_rows = dt + i0 * r;
    rows_dot<DType::Float32>(g, n, count, prep.scaled_bt, n, 0, r, n, dt_rows, r, false);
    rows_dot<DType::Float32>(xm, k, count, prep.a, k, 0, r, k, t, r, false);
    const bool overwrite = first_of_group && q == q0;
    outer_accumulate(t, r, r, count, g, n, n, partial, overwrite);
    outer_accumulate(dt_rows, r, r, count, xm, k, k, partial + r * n, overwrite);
    if (left) pack_left_rows(g, n, count, *kb, *left, q);
  }
}

// dst[kk·NR + jj] = W[c0 + kk][j + jj] for kk < kc, jj < valid (zero beyond): W's rows already
// run along the output columns, so a micro-panel is kc widened row segments.
template <DType T>
void pack_weight_rows(const LoraBackwardParams& p, int64_t c0, int64_t kc, int64_t j, int64_t valid, float* dst) {
  for (int64_t kk = 0; kk < kc; ++kk) {
    const int64_t src = (c0 + kk) * p.weight_stride + j;
    float* d = dst + kk * kNR;
    if (valid == kNR) {
      for (int v = 0; v < kGemmNV; ++v) vstore(d + v * kLanes, vload_as_float<T>(p.weight, src + v * kLanes));
    } else {
      int64_t jj = 0;
      for (; jj < valid; ++jj) d[jj] = load_as_float<T>(p.weight, src + jj);
      for (; jj < kNR; ++jj) d[jj] = 0.0f;
    }
  }
}

// The epilogue of one finished tile of g·W (float32 in c, row stride ldc): adds
// mask ⊙ (dT·A) and stores gradInput rows [row, row + rows) × columns [col, col + cols).
template <DType T>
void finish_tile(const LoraBackwardParams& p, const Prepared& prep, const float* c, int64_t ldc, const float* dt,
                 int64_t row, int rows, int64_t col, int cols) {
  const int64_t r = p.r;
  for (int i = 0; i < rows; ++i) {
    const float* d = dt + i * r;
    const float* ci = c + i * ldc;
    const int64_t out = (row + i) * p.grad_input_stride + col, mask = (row + i) * p.mask_stride + col;
    int j = 0;
    for (; j + kLanes <= cols; j += kLanes) {
      Vec low = vzero();
      for (int64_t t = 0; t < r; ++t) low = vfma(vset1(d[t]), vload(prep.a + t * p.k + col + j), low);
      if (p.dropout_mask) low = vmul(low, vload_as_float<T>(p.dropout_mask, mask + j));
      vstore_from_float<T>(p.grad_input, out + j, vadd(vload(ci + j), low));
    }
    for (; j < cols; ++j) {
      float low = 0.0f;
      for (int64_t t = 0; t < r; ++t) low += d[t] * prep.a[t * p.k + col + j];
      if (p.dropout_mask) low *= load_as_float<T>(p.dropout_mask, mask + j);
      store_from_float<T>(p.grad_input, out + j, ci[j] + low);
    }
  }
}

// Phase 2 for row panels [q0, q1) and output columns [j0, j1): the loop nest of the forward's
// multiply_block (K blocks, MC-row blocks, NR-column micro-panels packed on the first sweep,
// MR-row micro-panels), reducing over n.
template <DType T>
void input_grad_block(const LoraBackwardParams& p, const Prepared& prep, int64_t row0, int64_t rows, const KBlocks& kb,
                      const PackedLeft& left, const float* dt, int64_t q0, int64_t q1, int64_t j0, int64_t j1) {
  const int64_t cols = j1 - j0, cols_pad = round_up(cols, kNR);
  float* right = scratch(TaskBuffer::PackedRight, cols_pad * kb.width);
  constexpr bool kInPlace = T == DType::Float32;  // float32 gradInput holds the partial sums itself
  float* partial = kInPlace ? nullptr : scratch(TaskBuffer::Partial, (q1 - q0) * kMR * cols_pad);
  for (int64_t b = 0; b < kb.count; ++b) {
    const int64_t c0 = kb.begin(b), kc = kb.end(b) - c0;
    const bool last = b + 1 == kb.count;
    for (int64_t qb = q0; qb < q1; qb += kMCPanels) {
      const int64_t qe = std::min(q1, qb + kMCPanels);
      for (int64_t j = j0; j < j1; j += kNR) {
        float* right_panel = right + (j - j0) * kc;
        const int valid = static_cast<int>(std::min<int64_t>(kNR, j1 - j));
        if (qb == q0) pack_weight_rows<T>(p, c0, kc, j, valid, right_panel);
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
          if (last) finish_tile<T>(p, prep, target.c, target.ldc, dt + i * p.r, row0 + i, count, j, valid);
        }
      }
    }
  }
}

template <DType T>
void backward(const LoraBackwardParams& p) {
  const int64_t m = p.m, n = p.n, k = p.k, r = p.r;
  // scale·Bᵀ and A as float32 rows, shared read-only by the tasks.
  float* scaled_bt = scratch(CallerBuffer::ScaledBt, r * n);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t t = 0; t < r; ++t) scaled_bt[t * n + j] = p.scale * load_as_float<T>(p.b, j * p.b_stride + t);
  float* a = scratch(CallerBuffer::A, r * k);
  widen_rows<T>(p.a, p.a_stride, r, k, a, k);
  const int64_t partial_stride = r * (n + k);
  const Prepared prep{scaled_bt, a, scratch(CallerBuffer::Partials, kGroups * partial_stride), partial_stride};

  const bool input_grad = p.grad_input != nullptr;
  const KBlocks kb = split_k(n, kTargetKC);
  const int64_t chunk_rows = std::max<int64_t>(kMR, kPackedLeftBytes / (n * 4) / kMR * kMR);
  const int64_t groups = std::min(kGroups, ceil_div(std::min(m, chunk_rows), kMR));
  for (int64_t row0 = 0; row0 < m; row0 += chunk_rows) {
    const int64_t rows = std::min(chunk_rows, m - row0), panels = ceil_div(rows, kMR);
    float* dt = scratch(CallerBuffer::DT, panels * kMR * r);
    PackedLeft left{nullptr, panels * kMR};
    if (input_grad) left.data = scratch(CallerBuffer::PackedLeft, panels * kMR * n);
    // Group g of this chunk: panels [g·panels/groups, (g+1)·panels/groups) — never empty in the
    // first chunk (the largest), where each group's partial sums start.
    parallel_for(groups, [&](int64_t g, int) {
      const int64_t q0 = g * panels / groups, q1 = (g + 1) * panels / groups;
      low_rank_panels<T>(p, prep, row0, rows, q0, q1, dt, prep.partials + g * partial_stride, row0 == 0, &kb,
                         input_grad ? &left : nullptr);
    });
    if (input_grad) {
      parallel_panels_by_columns(panels, k, kMaxNC, [&](int64_t q0, int64_t q1, int64_t j0, int64_t j1) {
        input_grad_block<T>(p, prep, row0, rows, kb, left, dt, q0, q1, j0, j1);
      });
    }
  }

  // gradB = scale·Σ_g (gradBᵀ_g)ᵀ and gradA = Σ_g gradA_g, groups in order: one rank per task.
  parallel_for(r, [&](int64_t t, int) {
    float* sum = scratch(TaskBuffer::Partial, std::max(n, k));
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
        for (int64_t j = 0; j < n; ++j) store_from_float<T>(p.grad_b, j * p.grad_b_stride + t, p.scale * sum[j]);
      } else {
        int64_t c = 0;
        for (; c + kLanes <= k; c += kLanes) vstore_from_float<T>(p.grad_a, t * p.grad_a_stride + c, vload(sum + c));
        for (; c < k; ++c) store_from_float<T>(p.grad_a, t * p.grad_a_stride + c, sum[c]);
      }
    }
  });
}

}  // namespace

void lora_backward(const LoraBackwardParams& p) {
  with_float_dtype(p.dtype, [&](auto tag) { backward<decltype(tag)::value>(p); });
}

}  // namespace lk::cpu::LK_SIMD_NS
