// quant.matmul and its backward on the CPU (see csrc/ops/quant_matmul.h): one pass over the packed
// weight, which is never dequantized to memory. Compiled once per SIMD level into
// lk::cpu::LK_SIMD_NS.
//
// Decode (m ≤ kDecodeRows): a GEMV over the packed codes. x is widened and permuted once so that
// its lanes line up with the code planes of cpu/quant_decode.h (NF4: per chunk of 2·kLanes
// elements, the even elements then the odd ones; ternary: per 4·kLanes, elements 4l + s for
// s = 0 … 3); each vector of packed bytes is decoded once per kTileRows rows of x and multiplied
// into kTileRows × kTileCols accumulators (kTileCols weight rows, i.e. output columns, each its own
// FMA chain). NF4 sums a block's products before one FMA with its absmax; ternary multiplies by the
// tensor's scale at the end. In the same pass over the output, y = that + bias + gate ⊙ (T·Bᵀ)
// with T = scale·x·Aᵀ (m × r) computed first. The fused GEMV needs K to be a multiple of the
// chunk, so that rows start on byte boundaries and NF4 blocks on chunk boundaries (true of every
// real model's K); otherwise each group of 4 weight rows is decoded into a float tile (64 KiB at
// K = 4096, in L2) and dotted with x by the streaming tiles of lora.forward.
//   Napkin math, m = 1, K = N = 4096, AVX-512 on 2 Zen4 cores (~16 GB/s from DRAM): NF4 reads 8 MiB
//   of codes and 1 MiB of absmax (~0.6 ms); per 32 weights a 16-byte widening load, a shift, two
//   vpermps and two FMAs, ~3 M vector ops in all, ~0.4 ms on two cores: bandwidth-bound. Ternary
//   reads 4 MiB (~0.25 ms); per 64 weights a load, 3 shifts, 4 vpermps and 4 FMAs, also ~3 M ops:
//   there the decode, not DRAM, sets the time. torch's float32 x@W.T reads 64 MiB (~4 ms).
// Prefill: lora.forward's packed GEMM (cpu/lora_gemm.h) over [x | T]·[deq(W) | gate ⊙ B]ᵀ, each
//   weight micro-panel decoded (QuantRows) into a float tile and transposed into the packed layout
//   as it is packed: every weight element is decoded once per chunk of rows, ~16 M decodes at
//   M = 512, K = N = 4096 (~1 ms next to the ~85 ms GEMM), and 9 MiB instead of 64 MiB come from DRAM.
// Backward: lora.backward's fused engine (cpu/lora_backward_engine.h), its W micro-panels decoded
//   by the same QuantRows for gradInput = g·deq(W) + dT·A, the gate folded into B, and gradGate from
//   the gᵀ·T it already sums for gradB. Deterministic like lora.backward.
#include <algorithm>

#include "core/parallel.h"
#include "cpu/dispatch/kernels.h"
#include "cpu/gemm_microkernel.h"
#include "cpu/lora_backward_engine.h"
#include "cpu/lora_gemm.h"
#include "cpu/packed_gemm.h"
#include "cpu/quant_decode.h"
#include "cpu/vec.h"

namespace lk::cpu::LK_SIMD_NS {
namespace {

// Up to this many rows the decode GEMV runs; more rows amortize the decode over the packed GEMM.
constexpr int64_t kDecodeRows = 16;
// Output columns per task of the decode GEMV: 64 weight rows of K = 4096 are 128 KiB of NF4.
constexpr int64_t kColumnsPerTask = 64;
// The fused tile: kTileCols weight rows (independent FMA chains) × kTileRows rows of x. AVX-512
// and NEON have 32 registers: 2·4 accumulators, NF4's 2·4 block totals, 2·4 x vectors and the
// planes fit; AVX2 and scalar have 16.
#if defined(LK_SIMD_AVX512) || defined(LK_SIMD_NEON)
constexpr int kTileRows = 2;
#else
constexpr int kTileRows = 1;
#endif
constexpr int kTileCols = 4;

enum class CallerBuffer { XRows, XPlanes, LowRank, Bias, GatedB, Count };
enum class TaskBuffer { Tile, LowTile, DecodedRows, Count };

template <QuantFormat F>
constexpr int64_t kChunk = kPlanes<F> * kLanes;

// ---- decode: the GEMV over packed codes -----------------------------------------------------------
// An x row in plane order: dst[c + p·kLanes + l] = x[c + P·l + p] for every chunk c.
template <QuantFormat F>
void permute_to_planes(const float* x, int64_t k, float* dst) {
  constexpr int P = kPlanes<F>;
  for (int64_t c = 0; c < k; c += kChunk<F>)
    for (int p = 0; p < P; ++p)
      for (int l = 0; l < kLanes; ++l) dst[c + p * kLanes + l] = x[c + P * l + p];
}

// out[i·ldo + jj] = Σ_k x[i][k]·deq(W)[j + jj][k] for i < RI, jj < RJ; xp: RI rows in plane order.
template <QuantFormat F, int RI, int RJ>
void fused_dot_tile(const QuantWeight& w, const Table16& table, const float* xp, int64_t ldx, int64_t j, float* out,
                    int64_t ldo) {
  constexpr int P = kPlanes<F>;
  constexpr bool kBlocks = F == QuantFormat::Nf4;
  const int64_t k = w.k, block_size = w.block_size;
  Vec acc[RI][RJ], total[RI][RJ];
  const uint8_t* rows[RJ];
  int64_t next_block[RJ] = {};  // NF4: the column where row j + jj's next block starts
  int64_t block[RJ] = {};       // NF4: the block before it (counted, not divided: an idiv per block
                                // and column was ~7% of a single-threaded M=1 call at K=N=4096)
  float absmax[RJ] = {};
  for (int jj = 0; jj < RJ; ++jj) {
    for (int i = 0; i < RI; ++i) acc[i][jj] = total[i][jj] = vzero();
    if constexpr (kBlocks) {
      const int64_t e0 = (j + jj) * k;
      rows[jj] = w.packed + e0 / 2;
      block[jj] = e0 / block_size;
      absmax[jj] = nf4_absmax(w, block[jj]);
      next_block[jj] = (block[jj] + 1) * block_size - e0;
    } else {
      rows[jj] = w.packed + (j + jj) * (k / 4);
    }
  }
  for (int64_t c = 0; c < k; c += kChunk<F>) {
    Vec xv[RI][P];
    for (int i = 0; i < RI; ++i)
      for (int p = 0; p < P; ++p) xv[i][p] = vload(xp + i * ldx + c + p * kLanes);
    for (int jj = 0; jj < RJ; ++jj) {
      if constexpr (kBlocks) {
        if (c == next_block[jj]) {
          const Vec a = vset1(absmax[jj]);
          for (int i = 0; i < RI; ++i) {
            total[i][jj] = vfma(a, acc[i][jj], total[i][jj]);
            acc[i][jj] = vzero();
          }
          absmax[jj] = nf4_absmax(w, ++block[jj]);
          next_block[jj] += block_size;
        }
      }
      Vec planes[P];
      decode_planes<F>(table, rows[jj] + c / P, planes);
      for (int i = 0; i < RI; ++i)
        for (int p = 0; p < P; ++p) acc[i][jj] = vfma(planes[p], xv[i][p], acc[i][jj]);
    }
  }
  for (int i = 0; i < RI; ++i)
    for (int jj = 0; jj < RJ; ++jj) {
      if constexpr (kBlocks) out[i * ldo + jj] = vsum(vfma(vset1(absmax[jj]), acc[i][jj], total[i][jj]));
      else out[i * ldo + jj] = w.scale * vsum(acc[i][jj]);
    }
}

template <QuantFormat F, int RI>
void fused_dot_columns(int rj, const QuantWeight& w, const Table16& table, const float* xp, int64_t ldx, int64_t j,
                       float* out, int64_t ldo) {
  switch (rj) {
    case 1: return fused_dot_tile<F, RI, 1>(w, table, xp, ldx, j, out, ldo);
    case 2: return fused_dot_tile<F, RI, 2>(w, table, xp, ldx, j, out, ldo);
    case 3: return fused_dot_tile<F, RI, 3>(w, table, xp, ldx, j, out, ldo);
    default: return fused_dot_tile<F, RI, 4>(w, table, xp, ldx, j, out, ldo);
  }
}

// tile[i][j - j0] = x_i·deq(W)_j for all m rows and columns [j0, j1), x in plane order.
template <QuantFormat F>
void fused_columns(const QuantWeight& w, const float* xp, int64_t m, int64_t j0, int64_t j1, float* tile) {
  const Table16 table = code_table(F);
  const int64_t cols = j1 - j0, k = w.k;
  for (int64_t j = j0; j < j1; j += kTileCols) {
    const int rj = static_cast<int>(std::min<int64_t>(kTileCols, j1 - j));
    int64_t i = 0;
    for (; i + kTileRows <= m; i += kTileRows)
      fused_dot_columns<F, kTileRows>(rj, w, table, xp + i * k, k, j, tile + i * cols + (j - j0), cols);
    for (; i < m; ++i) fused_dot_columns<F, 1>(rj, w, table, xp + i * k, k, j, tile + i * cols + (j - j0), cols);
  }
}

// The same for any K: groups of 4 weight rows decoded into a float tile, dotted with x (natural order).
void decoded_columns(const QuantRows& rows, int64_t k, const float* x, int64_t m, int64_t j0, int64_t j1, float* tile) {
  constexpr int64_t kGroup = 4;
  float* decoded = scratch(TaskBuffer::DecodedRows, kGroup * k);
  for (int64_t j = j0; j < j1; j += kGroup) {
    const int64_t count = std::min(kGroup, j1 - j);
    for (int64_t jj = 0; jj < count; ++jj) rows.decode(j + jj, 0, k, decoded + jj * k);
    rows_dot<DType::Float32>(x, k, m, decoded, k, 0, count, k, tile + (j - j0), j1 - j0, false);
  }
}

// y row i, columns [j0, j0 + cols) = base + gate ⊙ low + bias (low and bias may be null).
template <DType T>
void store_output(const QuantMatmulParams& p, const float* base, const float* low, const float* bias, int64_t i,
                  int64_t j0, int64_t cols) {
  const int64_t y0 = i * p.y_stride + j0;
  int64_t j = 0;
  for (; j + kLanes <= cols; j += kLanes) {
    Vec v = vload(base + j);
    if (low) v = vfma(p.gate_per_output ? vload(p.gate_per_output + j0 + j) : vset1(p.gate), vload(low + j), v);
    if (bias) v = vadd(v, vload(bias + j0 + j));
    vstore_from_float<T>(p.y, y0 + j, v);
  }
  for (; j < cols; ++j) {
    float v = base[j];
    if (low) v += (p.gate_per_output ? p.gate_per_output[j0 + j] : p.gate) * low[j];
    if (bias) v += bias[j0 + j];
    store_from_float<T>(p.y, y0 + j, v);
  }
}

// The params of the LoRA engines for the parts of quant.matmul they share (x, the low-rank path, y).
LoraForwardParams as_lora_forward(const QuantMatmulParams& p) {
  LoraForwardParams lp;
  lp.dtype = p.dtype;
  lp.m = p.m; lp.k = p.weight.k; lp.n = p.weight.n; lp.r = p.r;
  lp.x = p.x; lp.x_stride = p.x_stride;
  lp.a = p.a; lp.a_stride = p.a_stride;
  lp.scale = p.scale;
  lp.y = p.y; lp.y_stride = p.y_stride;
  return lp;
}

template <DType T>
void decode(const QuantMatmulParams& p) {
  const QuantWeight& w = p.weight;
  const int64_t m = p.m, k = w.k, n = w.n, r = p.r;
  const LoraForwardParams lp = as_lora_forward(p);
  float* x = scratch(CallerBuffer::XRows, m * k);
  widen_rows<T>(p.x, p.x_stride, m, k, x, k);
  const bool nf4 = w.format == QuantFormat::Nf4;
  const bool fused = k % (nf4 ? kChunk<QuantFormat::Nf4> : kChunk<QuantFormat::Ternary>) == 0;
  float* xp = nullptr;
  if (fused) {
    xp = scratch(CallerBuffer::XPlanes, m * k);
    for (int64_t i = 0; i < m; ++i) {
      if (nf4) permute_to_planes<QuantFormat::Nf4>(x + i * k, k, xp + i * k);
      else permute_to_planes<QuantFormat::Ternary>(x + i * k, k, xp + i * k);
    }
  }
  const float* bias = bias_as_float(p.bias, p.bias_f32, p.dtype, n, CallerBuffer::Bias);
  float* t = nullptr;
  if (r > 0) {
    t = scratch(CallerBuffer::LowRank, m * r);
    constexpr int64_t kRanksPerTask = 8;
    parallel_for(ceil_div(r, kRanksPerTask), [&](int64_t task, int) {
      const int64_t t0 = task * kRanksPerTask, t1 = std::min(r, t0 + kRanksPerTask);
      low_rank_rows<T>(lp, x, k, m, t0, t1, t, r);
    });
  }
  const QuantRows rows(w);
  parallel_for(ceil_div(n, kColumnsPerTask), [&](int64_t task, int) {
    const int64_t j0 = task * kColumnsPerTask, j1 = std::min(n, j0 + kColumnsPerTask), cols = j1 - j0;
    float* tile = scratch(TaskBuffer::Tile, m * cols);
    if (!fused) decoded_columns(rows, k, x, m, j0, j1, tile);
    else if (nf4) fused_columns<QuantFormat::Nf4>(w, xp, m, j0, j1, tile);
    else fused_columns<QuantFormat::Ternary>(w, xp, m, j0, j1, tile);
    float* low = nullptr;
    if (r > 0) {
      low = scratch(TaskBuffer::LowTile, m * cols);
      rows_dot<T>(t, r, m, p.b, p.b_stride, j0, j1, r, low, cols, false);
    }
    for (int64_t i = 0; i < m; ++i) store_output<T>(p, tile + i * cols, low ? low + i * cols : nullptr, bias, i, j0, cols);
  });
}

// ---- prefill: the packed GEMM on dequantized panels --------------------------------------------
// Rows whose packed bytes are asked for ahead of their decode (QuantRows::prefetch): 8 rows of a
// 257-column segment are ~16 lines in flight, about what one core keeps outstanding to DRAM.
constexpr int64_t kPrefetchRows = 8;

// The right operand of cpu/lora_gemm.h: [deq(W) | gate ⊙ B], W's part decoded row by row into a
// float tile (NR × kc, 64 KiB at kc = 257 on AVX-512: in L2) and transposed into the panel.

struct DequantizedWeightAndGatedB {
  const QuantRows& rows;
  const float* gated_b;  // float32 [n, r]
  int64_t k, r;
  void operator()(int64_t j, int64_t valid, int64_t c0, int64_t c1, float* dst) const {
    if (c0 < k) {
      const int64_t len = std::min(c1, k) - c0;
      float* decoded = scratch(TaskBuffer::DecodedRows, kGemmNR * len);
      for (int64_t jj = 0; jj < std::min<int64_t>(kPrefetchRows, valid); ++jj) rows.prefetch(j + jj, c0, len);
      for (int64_t jj = 0; jj < valid; ++jj) {
        if (jj + kPrefetchRows < valid) rows.prefetch(j + jj + kPrefetchRows, c0, len);
        rows.decode(j + jj, c0, len, decoded + jj * len);
      }
      pack_transposed<DType::Float32>(decoded, len, 0, valid, 0, len, dst);
    }
    if (c1 > k) {
      const int64_t from = std::max(c0, k);
      pack_transposed<DType::Float32>(gated_b, r, j, valid, from - k, c1 - from, dst + (from - c0) * kGemmNR);
    }
  }
};

template <DType T>
void prefill(const QuantMatmulParams& p) {
  const int64_t n = p.weight.n, r = p.r;
  float* gated_b = nullptr;
  if (r > 0) {
    gated_b = scratch(CallerBuffer::GatedB, n * r);
    for (int64_t j = 0; j < n; ++j) {
      const float gate = p.gate_per_output ? p.gate_per_output[j] : p.gate;
      for (int64_t t = 0; t < r; ++t) gated_b[j * r + t] = gate * load_as_float<T>(p.b, j * p.b_stride + t);
    }
  }
  const QuantRows rows(p.weight);
  lora_forward_packed<T>(as_lora_forward(p), DequantizedWeightAndGatedB{rows, gated_b, p.weight.k, r},
                         bias_as_float(p.bias, p.bias_f32, p.dtype, n, CallerBuffer::Bias));
}

// ---- backward ------------------------------------------------------------------------------------
// W's rows for cpu/lora_backward_engine.h, decoded straight into the micro-panel.
struct DequantizedWeightRows {
  const QuantRows& rows;
  void operator()(const RowPanel& panel, float* dst) const {
    for (int64_t kk = 0; kk < panel.count; ++kk) {
      float* d = dst + kk * kGemmNR;
      rows.decode(panel.row0 + kk, panel.col, panel.valid, d);
      std::fill(d + panel.valid, d + kGemmNR, 0.0f);
    }
  }
};

template <DType T>
void backward(const QuantMatmulBackwardParams& p) {
  LoraBackwardParams lp;
  lp.dtype = p.dtype;
  lp.m = p.m; lp.k = p.weight.k; lp.n = p.weight.n; lp.r = p.r;
  lp.grad_output = p.grad_output; lp.grad_output_stride = p.grad_output_stride;
  lp.x = p.x; lp.x_stride = p.x_stride;
  lp.a = p.a; lp.a_stride = p.a_stride;
  lp.b = p.b; lp.b_stride = p.b_stride;
  lp.scale = p.scale;
  lp.grad_input = p.grad_input; lp.grad_input_stride = p.grad_input_stride;
  lp.grad_a = p.grad_a; lp.grad_a_stride = p.grad_a_stride;
  lp.grad_b = p.grad_b; lp.grad_b_stride = p.grad_b_stride;
  const QuantRows rows(p.weight);
  lora_backward_fused<T>(lp, DequantizedWeightRows{rows}, LowRankGate{p.gate, p.gate_per_output, p.grad_gate});
}

}  // namespace

void quant_matmul(const QuantMatmulParams& p) {
  with_float_dtype(p.dtype, [&](auto tag) {
    constexpr DType T = decltype(tag)::value;
    if (p.m <= kDecodeRows) decode<T>(p);
    else prefill<T>(p);
  });
}

void quant_matmul_backward(const QuantMatmulBackwardParams& p) {
  with_float_dtype(p.dtype, [&](auto tag) { backward<decltype(tag)::value>(p); });
}

}  // namespace lk::cpu::LK_SIMD_NS
