// Quantize and dequantize on the CPU (see csrc/ops/quant.h; formats in csrc/formats). Compiled
// once per SIMD level into lk::cpu::LK_SIMD_NS.
//
// NF4 quantize, bitsandbytes' bytes: per block absmax = max |x| (NaN ignored), v = x·(1/absmax)
// (a float32 reciprocal, then a float32 product: not a division), and the code is the number of
// the 15 float32 thresholds of bitsandbytes' decision tree (nf4::midpoint: four of them one ulp off
// the rounded midpoint) that v is strictly greater than, so a value on a threshold takes the lower
// code and NaN takes code 0. That count is a 4-step binary search,
// one vector compare per step against thresholds looked up by the candidate code (the decoder's
// 16-entry table lookup). An all-zero block keeps absmax = 0 and scales by 1 instead of 1/0, so its
// codes are 7 (0x77, the code of 0.0), as bitsandbytes' CPU path gives; the padding nibble of an
// odd element count is 7 too (bitsandbytes pads with 0.0). Double quantization (nf4.h's order and
// rules, shared with the CUDA kernel): offset = the mean of the absmax values (float64 sums per
// nested block of 256, then over those sums, rounded once), and absmax − offset quantized in blocks
// of 256 to the 256 codes of the dynamic map (an 8-step binary search over its 255 float32
// midpoints, then nf4::encode_nested's tie rule: a value on a midpoint takes the even code).
// Ternary quantize: scale = max(mean |w|, eps) (float64 sums per row in element order, then over
// rows in order: the same float64 on every SIMD level and in the reference), q = w·(1/scale) (the
// product with the float32 reciprocal, as BitNet's reference code and ternary::encode have it: a
// division differs for a w one ulp above scale/2), code 2 (+1) where q > 0.5, 0 (−1) where
// q < −0.5, else 1 (0): round-half-even then clamp to [−1, 1] in two compares; NaN gives 0.
//
// Napkin math, W 4096 × 4096: quantize reads 64 MiB and writes 8-9 MiB once (~5 ms of DRAM time
// on 2 cores); per element ~6 vector ops (NF4) or ~4 (ternary) over 16 lanes, ~2 ms. Dequantize
// writes 64 MiB (float32) from 8-9 MiB: bound by the writes, ~4 ms.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/parallel.h"
#include "cpu/dispatch/kernels.h"
#include "cpu/packed_gemm.h"
#include "cpu/quant_decode.h"
#include "cpu/vec.h"

namespace lk::cpu::LK_SIMD_NS {
namespace {

enum class TaskBuffer { Values, Codes, Row, Count };

int32_t* code_buffer(int64_t count) { return reinterpret_cast<int32_t*>(scratch(TaskBuffer::Codes, count)); }

// Elements per parallel task of the element-wise passes: 64 Ki (256 KiB of float32 in flight).
constexpr int64_t kElementsPerTask = int64_t{1} << 16;

// thresholds[t] = (code[t] + code[t + 1])·0.5f, float32 arithmetic as nf4::encode_nested has it.
void midpoints(const float* code, int count, float* thresholds) {
  for (int t = 0; t + 1 < count; ++t) thresholds[t] = (code[t] + code[t + 1]) * 0.5f;
}

// The code of v among count + 1 codes with ascending thresholds: #{t : v > thresholds[t]}, by a
// binary search whose first step is `top` (a power of two, top·2 − 1 = count).
int32_t count_below(float v, const float* thresholds, int top) {
  int32_t code = 0;
  for (int step = top; step >= 1; step /= 2)
    if (v > thresholds[code + step - 1]) code += step;
  return code;
}

// Elements [e0, e0 + count) of w flattened row-major (row length k, row stride w_stride), widened.
template <DType T>
void gather_flat(const void* w, int64_t k, int64_t w_stride, int64_t e0, int64_t count, float* dst) {
  while (count > 0) {
    const int64_t row = e0 / k, col = e0 % k, len = std::min(count, k - col);
    widen_row<T>(w, row * w_stride + col, len, dst);
    dst += len;
    e0 += len;
    count -= len;
  }
}

// max |v| over count values, NaN ignored (0 for none).
float absmax_of(const float* v, int64_t count) {
  Vec acc = vzero();
  int64_t i = 0;
  for (; i + kLanes <= count; i += kLanes) acc = vmax_number(acc, vabs(vload(v + i)));
  float m = vmax_lanes(acc);
  for (; i < count; ++i) m = std::fabs(v[i]) > m ? std::fabs(v[i]) : m;
  return m;
}

// NF4 codes of values·inv (see the top); thresholds[c] = the threshold below code c (c = 1 … 15).
void nf4_codes(const float* values, int64_t count, float inv, const float (&thresholds)[16], int32_t* codes) {
  const Table16 table = make_table16(thresholds);
  const Vec scale = vset1(inv);
  int64_t i = 0;
  for (; i + kLanes <= count; i += kLanes) {
    const Vec v = vmul(vload(values + i), scale);
    IVec code = iset1(0);
    for (int step = 8; step >= 1; step /= 2) {
      const IVec candidate = iadd(code, iset1(step));
      code = select_greater(v, lookup16(table, candidate), candidate, code);
    }
    istore(codes + i, code);
  }
  for (; i < count; ++i) codes[i] = count_below(values[i] * inv, thresholds + 1, 8);
}

// Absmax of every nested block of 256 absmax values and their 8-bit codes (see the top).
void double_quantize(const Nf4QuantizeParams& p, int64_t blocks) {
  double sum = 0;
  for (int64_t b0 = 0; b0 < blocks; b0 += nf4::kNestedBlock) {
    double nested_sum = 0;
    for (int64_t b = b0; b < std::min(blocks, b0 + nf4::kNestedBlock); ++b) nested_sum += p.absmax[b];
    sum += nested_sum;
  }
  const float offset = static_cast<float>(sum / static_cast<double>(blocks));
  *p.offset = offset;
  float thresholds[255];
  midpoints(p.nested_code, 256, thresholds);
  parallel_for(ceil_div(blocks, nf4::kNestedBlock), [&](int64_t nested, int) {
    const int64_t b0 = nested * nf4::kNestedBlock, count = std::min<int64_t>(nf4::kNestedBlock, blocks - b0);
    float shifted[nf4::kNestedBlock] = {};
    for (int64_t i = 0; i < count; ++i) shifted[i] = p.absmax[b0 + i] - offset;
    const float absmax = absmax_of(shifted, count);
    p.nested_absmax[nested] = absmax;
    const float inv = absmax > 0.0f ? 1.0f / absmax : 1.0f;
    for (int64_t i = 0; i < count; ++i) {
      const float v = shifted[i] * inv;
      int32_t code = count_below(v, thresholds, 128);
      if (code < 255 && (code & 1) && v == thresholds[code]) ++code;  // on a midpoint: the even code
      p.absmax_code[b0 + i] = static_cast<uint8_t>(code);
    }
  });
}

template <DType T>
void nf4_quantize_impl(const Nf4QuantizeParams& p) {
  const int64_t total = p.n * p.k, block_size = p.block_size, blocks = nf4::blocks(total, block_size);
  float thresholds[16] = {-INFINITY};  // entry 0 is never read
  for (int c = 1; c < nf4::kCodes; ++c) thresholds[c] = nf4::midpoint(c - 1);
  constexpr int32_t kZeroCode = 7;
  const int64_t blocks_per_task = std::max<int64_t>(1, kElementsPerTask / block_size);
  parallel_for(ceil_div(blocks, blocks_per_task), [&](int64_t task, int) {
    float* values = scratch(TaskBuffer::Values, block_size);
    int32_t* codes = code_buffer(block_size);
    const int64_t b1 = std::min(blocks, (task + 1) * blocks_per_task);
    for (int64_t b = task * blocks_per_task; b < b1; ++b) {
      const int64_t e0 = b * block_size, count = std::min(block_size, total - e0);
      gather_flat<T>(p.w, p.k, p.w_stride, e0, count, values);
      const float absmax = absmax_of(values, count);
      p.absmax[b] = absmax;
      nf4_codes(values, count, absmax > 0.0f ? 1.0f / absmax : 1.0f, thresholds, codes);
      uint8_t* out = p.packed + e0 / 2;  // blocks start at even elements
      for (int64_t i = 0; i < count; i += 2) out[i / 2] = static_cast<uint8_t>(codes[i] << 4 | (i + 1 < count ? codes[i + 1] : kZeroCode));
    }
  });
  if (p.double_quant) double_quantize(p, blocks);
}

template <DType T>
void ternary_quantize_impl(const TernaryQuantizeParams& p) {
  const int64_t n = p.n, k = p.k, rows_per_task = std::max<int64_t>(1, kElementsPerTask / k);
  std::vector<double> row_sums(static_cast<size_t>(n));
  parallel_for(ceil_div(n, rows_per_task), [&](int64_t task, int) {
    float* row = scratch(TaskBuffer::Row, k);
    for (int64_t i = task * rows_per_task, end = std::min(n, i + rows_per_task); i < end; ++i) {
      widen_row<T>(p.w, i * p.w_stride, k, row);
      double sum = 0;
      for (int64_t c = 0; c < k; ++c) sum += std::fabs(row[c]);
      row_sums[static_cast<size_t>(i)] = sum;
    }
  });
  double total = 0;
  for (double s : row_sums) total += s;
  const float scale = std::max(static_cast<float>(total / (static_cast<double>(n) * static_cast<double>(k))), p.eps);
  *p.scale = scale;

  const int64_t row_bytes = ternary::row_bytes(k);
  parallel_for(ceil_div(n, rows_per_task), [&](int64_t task, int) {
    float* row = scratch(TaskBuffer::Row, k);
    int32_t* codes = code_buffer(row_bytes * 4);
    const float inverse = 1.0f / scale;
    const Vec s = vset1(inverse), half = vset1(0.5f), minus_half = vset1(-0.5f);
    for (int64_t i = task * rows_per_task, end = std::min(n, i + rows_per_task); i < end; ++i) {
      widen_row<T>(p.w, i * p.w_stride, k, row);
      int64_t c = 0;
      for (; c + kLanes <= k; c += kLanes) {
        const Vec q = vmul(vload(row + c), s);
        const IVec code = select_greater(q, half, iset1(2), iset1(1));
        istore(codes + c, select_greater(minus_half, q, iset1(0), code));
      }
      for (; c < k; ++c) codes[c] = ternary::encode(row[c], inverse);
      for (; c < row_bytes * 4; ++c) codes[c] = 1;  // padding: the code of 0
      uint8_t* out = p.packed + i * row_bytes;
      for (int64_t b = 0; b < row_bytes; ++b)
        out[b] = static_cast<uint8_t>(codes[4 * b] | codes[4 * b + 1] << 2 | codes[4 * b + 2] << 4 | codes[4 * b + 3] << 6);
    }
  });
}

template <DType T>
void dequantize_impl(const DequantizeParams& p) {
  const QuantRows rows(p.weight);
  const int64_t n = p.weight.n, k = p.weight.k, rows_per_task = std::max<int64_t>(1, kElementsPerTask / k);
  parallel_for(ceil_div(n, rows_per_task), [&](int64_t task, int) {
    for (int64_t i = task * rows_per_task, end = std::min(n, i + rows_per_task); i < end; ++i) {
      if constexpr (T == DType::Float32) {
        rows.decode(i, 0, k, static_cast<float*>(p.out) + i * p.out_stride);
      } else {
        float* row = scratch(TaskBuffer::Row, k);
        rows.decode(i, 0, k, row);
        int64_t c = 0;
        for (; c + kLanes <= k; c += kLanes) vstore_from_float<T>(p.out, i * p.out_stride + c, vload(row + c));
        for (; c < k; ++c) store_from_float<T>(p.out, i * p.out_stride + c, row[c]);
      }
    }
  });
}

}  // namespace

void nf4_quantize(const Nf4QuantizeParams& p) {
  with_float_dtype(p.dtype, [&](auto tag) { nf4_quantize_impl<decltype(tag)::value>(p); });
}

void ternary_quantize(const TernaryQuantizeParams& p) {
  with_float_dtype(p.dtype, [&](auto tag) { ternary_quantize_impl<decltype(tag)::value>(p); });
}

void dequantize(const DequantizeParams& p) {
  with_float_dtype(p.dtype, [&](auto tag) { dequantize_impl<decltype(tag)::value>(p); });
}

}  // namespace lk::cpu::LK_SIMD_NS
