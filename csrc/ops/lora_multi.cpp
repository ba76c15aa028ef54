// The one place that picks a backend for the multi-adapter LoRA op, and the host-side grouping of
// rows by adapter that both backends use.
#include "lora_multi.h"

#include <string>

#include "core/status.h"
#include "cpu/dispatch/kernels.h"
#if defined(LK_WITH_CUDA)
#include "cuda/lora_multi.cuh"
#endif

namespace lk {

AdapterSegments group_rows_by_adapter(const int32_t* ids, int64_t m, const int32_t* ranks, int64_t num_adapters,
                                      int64_t r_max, const char* op) {
  auto fail = [op](const std::string& what) { throw Error(ErrorCode::Argument, std::string(op) + ": " + what); };
  if (ranks) {
    for (int64_t l = 0; l < num_adapters; ++l) {
      if (ranks[l] < 1 || ranks[l] > r_max)
        fail("ranks[" + std::to_string(l) + "] must be in [1, " + std::to_string(r_max) + "] (rMax), got " +
             std::to_string(ranks[l]));
    }
  }
  // Counting sort by id + 1 (bucket 0: base-only rows). Stable: rows keep their order in a segment.
  std::vector<int64_t> count(static_cast<size_t>(num_adapters) + 2, 0);
  for (int64_t t = 0; t < m; ++t) {
    if (ids[t] < -1 || ids[t] >= num_adapters)
      fail("adapterIds[" + std::to_string(t) + "] must be -1 (base only) or an adapter index in [0, " +
           std::to_string(num_adapters) + "), got " + std::to_string(ids[t]));
    ++count[static_cast<size_t>(ids[t]) + 2];
  }
  AdapterSegments s;
  for (int64_t bucket = 0; bucket <= num_adapters; ++bucket) {
    const int64_t rows = count[static_cast<size_t>(bucket) + 1];
    count[static_cast<size_t>(bucket) + 1] += count[static_cast<size_t>(bucket)];  // → start of bucket + 1
    if (rows == 0) continue;
    s.begin.push_back(count[static_cast<size_t>(bucket)]);
    s.adapter.push_back(static_cast<int32_t>(bucket - 1));
  }
  s.begin.push_back(m);
  s.order.resize(static_cast<size_t>(m));
  for (int64_t t = 0; t < m; ++t) s.order[static_cast<size_t>(count[static_cast<size_t>(ids[t]) + 1]++)] = static_cast<int32_t>(t);
  return s;
}

namespace {

void check_params(const LoraMultiParams& p) {
  auto fail = [](const std::string& what) { throw Error(ErrorCode::Argument, "lora.forwardMulti: " + what); };
  if (!is_float_dtype(p.dtype))
    throw Error(ErrorCode::DType, std::string("lora.forwardMulti: dtype must be float32, float16 or bfloat16, got ") + dtype_name(p.dtype));
  if (p.m < 0 || p.k < 1 || p.n < 1 || p.num_adapters < 1 || p.r_max < 1) fail("sizes must be m ≥ 0, k ≥ 1, n ≥ 1, L ≥ 1, rMax ≥ 1");
  if (p.m > 0 && (!p.x || !p.y || !p.adapter_ids)) fail("x, adapterIds and y must not be null");
  if (!p.weight || !p.a || !p.b || !p.scales) fail("weight, a, b and scales must not be null");
  if (p.x_stride < p.k || p.weight_stride < p.k || p.y_stride < p.n) fail("row strides must cover a row");
}

}  // namespace

void lora_forward_multi(const LoraMultiParams& p, Device device) {
  check_params(p);
  if (p.m == 0) return;
  if (device.is_cpu()) {
    const AdapterSegments segments =
        group_rows_by_adapter(p.adapter_ids, p.m, p.ranks, p.num_adapters, p.r_max, "lora.forwardMulti");
    return cpu::lora_forward_multi(p, segments);
  }
#if defined(LK_WITH_CUDA)
  return cuda_ops::lora_forward_multi(p, device.index);
#else
  throw Error(ErrorCode::Device, "lora.forwardMulti: CUDA support was not compiled into this binary");
#endif
}

}  // namespace lk
