// int8 per-token activation quantization on the CPU (rules: csrc/ops/quant_activations.h). Compiled
// once per SIMD level into lk::cpu::LK_SIMD_NS.
//
// Tasks of whole rows (≥ 64 Ki elements each, one row at least); per row: widen to float32, the
// max |x| and a NaN count in vectors (vmax_number skips NaN lanes, so the NaN count says whether
// the row's scale is NaN), then x·s in vectors, then int8act::code_of per element (rintf, the
// clamp, NaN → 0: the rule the CUDA kernel applies, so both write the same bytes), a loop GCC
// vectorizes (vrndscaleps / vroundps). Dequantize: int8 → float32, one vector division by s, one
// rounding to the dtype.
//
// Measured (2 shared cores, load ~8, including the call from JS): m = 512, k = 4096 (2 Mi
// elements) quantize 0.9 ms with AVX-512, 2.8 ms AVX2, 22 ms scalar; dequantize 0.55 / 1.4 /
// 1.8 ms; m = 1 ~25 µs, mostly the call. Against that layer's matmul (17 GFLOP at m = 512, ~100 ms
// here; at m = 1 the ~9 MiB NF4 weight streamed) it is noise.
#include <algorithm>
#include <cmath>

#include "core/parallel.h"
#include "cpu/dispatch/kernels.h"
#include "cpu/packed_gemm.h"
#include "cpu/quant_decode.h"
#include "cpu/vec.h"

namespace lk::cpu::LK_SIMD_NS {
namespace {

enum class TaskBuffer { Row, Count };

constexpr int64_t kElementsPerTask = int64_t{1} << 16;

int64_t rows_per_task(int64_t k) { return std::max<int64_t>(1, kElementsPerTask / k); }

// s of one widened row (see csrc/ops/quant_activations.h).
float row_scale(const float* row, int64_t k) {
  Vec amax = vzero();
  IVec nans = iset1(0);
  const Vec below_any = vset1(-1.0f);  // |x| > −1 is false only for NaN
  int64_t c = 0;
  for (; c + kLanes <= k; c += kLanes) {
    const Vec a = vabs(vload(row + c));
    amax = vmax_number(amax, a);
    nans = iadd(nans, select_greater(a, below_any, iset1(0), iset1(1)));
  }
  float m = vmax_lanes(amax);
  int32_t lanes[kLanes];
  istore(lanes, nans);
  bool has_nan = std::any_of(lanes, lanes + kLanes, [](int32_t n) { return n != 0; });
  for (; c < k; ++c) {
    const float a = std::fabs(row[c]);
    if (a != a) has_nan = true;
    else if (a > m) m = a;
  }
  return int8act::scale_of(m, has_nan);
}

// The codes of one widened row, overwritten with x·s on the way. k by value: the int8 stores may
// alias anything, and a k read through a reference would keep GCC from vectorizing the last loop.
void quantize_row(float* row, int64_t k, float s, int8_t* out) {
  const Vec sv = vset1(s);
  int64_t c = 0;
  for (; c + kLanes <= k; c += kLanes) vstore(row + c, vmul(vload(row + c), sv));
  for (; c < k; ++c) row[c] *= s;
  for (c = 0; c < k; ++c) out[c] = int8act::code_of(row[c]);
}

template <DType T>
void quantize_impl(const Int8QuantizeParams& p) {
  const int64_t k = p.k, step = rows_per_task(k);
  parallel_for(ceil_div(p.m, step), [&](int64_t task, int) {
    float* row = scratch(TaskBuffer::Row, k);
    for (int64_t i = task * step, end = std::min(p.m, i + step); i < end; ++i) {
      widen_row<T>(p.x, i * k, k, row);
      const float s = row_scale(row, k);
      p.scales[i] = s;
      quantize_row(row, k, s, p.values + i * k);
    }
  });
}

// Row `i` of out = codes / s, through the float32 buffer `row` (k by value, as in quantize_row).
template <DType T>
void dequantize_row(const int8_t* codes, int64_t k, float s, float* row, void* out, int64_t i) {
  for (int64_t c = 0; c < k; ++c) row[c] = static_cast<float>(codes[c]);
  const Vec sv = vset1(s);
  int64_t c = 0;
  for (; c + kLanes <= k; c += kLanes) vstore_from_float<T>(out, i * k + c, vdiv(vload(row + c), sv));
  for (; c < k; ++c) store_from_float<T>(out, i * k + c, row[c] / s);
}

template <DType T>
void dequantize_impl(const Int8DequantizeParams& p) {
  const int64_t k = p.k, step = rows_per_task(k);
  parallel_for(ceil_div(p.m, step), [&](int64_t task, int) {
    float* row = scratch(TaskBuffer::Row, k);
    for (int64_t i = task * step, end = std::min(p.m, i + step); i < end; ++i)
      dequantize_row<T>(p.values + i * k, k, p.scales[i], row, p.out, i);
  });
}

}  // namespace

void int8_quantize(const Int8QuantizeParams& p) {
  with_float_dtype(p.dtype, [&](auto tag) { quantize_impl<decltype(tag)::value>(p); });
}

void int8_dequantize(const Int8DequantizeParams& p) {
  with_float_dtype(p.dtype, [&](auto tag) { dequantize_impl<decltype(tag)::value>(p); });
}

}  // namespace lk::cpu::LK_SIMD_NS
