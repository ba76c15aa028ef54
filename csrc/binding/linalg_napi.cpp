// linalg.svd / linalg.qr (+ Async): JS descriptors → the params structs of ops/linalg.h. The
// TypeScript layer (lib/ops/linalg.ts) validates for the user; this re-checks what memory safety
// needs: every strided operand's largest element offset lies inside its tensor, an output never
// has a zero stride along a dimension of extent > 1 (two elements written to one place), dtypes,
// and one device for all.
#include <algorithm>
#include <cmath>
#include <string>

#include "common.h"
#include "ops/linalg.h"

namespace lk::binding {
namespace {

// A non-negative integer below 2^53.
int64_t count_arg(const Napi::Object& d, const char* op, const char* name) {
  const double v = number_arg(d, name, -1);
  expect(v >= 0 && v <= 9.0e15 && v == std::floor(v), ErrorCode::Argument, op, std::string(name) + " must be a non-negative integer");
  return static_cast<int64_t>(v);
}

// `name` [batch, rows, cols] of `dtype` through the strides in d[strides_name] ([batch, row, col]
// elements): each stride a non-negative integer, the largest offset inside the tensor. Overflow-
// free: each step is checked against the room left before it is added.
MatrixArg strided_arg(const Napi::Object& d, const char* op, const TensorArg& t, const char* name, const char* strides_name,
                      DType dtype, const Device& device, int64_t batch, int64_t rows, int64_t cols, bool output) {
  expect(t.dtype == dtype, ErrorCode::DType, op, std::string(name) + " must be " + dtype_name(dtype));
  expect(t.device.index == device.index, ErrorCode::Device, op, std::string(name) + " must be on one device with the other tensors");
  const Napi::Value v = d.Get(strides_name);
  expect(v.IsArray() && v.As<Napi::Array>().Length() == 3, ErrorCode::Argument, op,
         std::string(strides_name) + " must be an array [batch, row, column] of element strides");
  const Napi::Array arr = v.As<Napi::Array>();
  const int64_t extents[3] = {batch, rows, cols};
  int64_t strides[3];
  for (uint32_t i = 0; i < 3; ++i) {
    const Napi::Value s = arr.Get(i);
    const double sv = s.IsNumber() ? s.As<Napi::Number>().DoubleValue() : -1;
    expect(sv >= 0 && sv <= 9.0e15 && sv == std::floor(sv), ErrorCode::Argument, op,
           std::string(strides_name) + "[" + std::to_string(i) + "] must be a non-negative integer");
    strides[i] = static_cast<int64_t>(sv);
    expect(!output || strides[i] > 0 || extents[i] <= 1, ErrorCode::Argument, op,
           std::string(strides_name) + "[" + std::to_string(i) + "] must not be 0 for an output (its elements would overlap)");
  }
  if (batch > 0 && rows > 0 && cols > 0) {
    const int64_t numel = t.numel();
    int64_t last = 0;
    bool inside = numel > 0;
    for (int i = 0; i < 3 && inside; ++i) {
      if (extents[i] <= 1) continue;
      inside = strides[i] <= (numel - 1 - last) / (extents[i] - 1);
      if (inside) last += (extents[i] - 1) * strides[i];
    }
    expect(inside, ErrorCode::Shape, op,
           std::string(name) + " [" + std::to_string(batch) + ", " + std::to_string(rows) + ", " + std::to_string(cols) +
               "] through " + strides_name + " reaches past its " + std::to_string(numel) + " elements");
  }
  return MatrixArg{strides[0], strides[1], strides[2]};
}

Napi::Value svd_entry(const Napi::CallbackInfo& info, bool async) {
  constexpr const char* op = "linalg.svd";
  return guarded(info.Env(), [&]() -> Napi::Value {
    const Napi::Object d = descriptor(info, op);
    KeepAlive keep;
    SvdParams p;
    p.batch = count_arg(d, op, "batch");
    p.m = count_arg(d, op, "m");
    p.n = count_arg(d, op, "n");
    p.keep = count_arg(d, op, "keep");
    p.full_matrices = bool_arg(d, "fullMatrices", false);
    const double max_sweeps = number_arg(d, "maxSweeps", 30);
    expect(max_sweeps >= 1 && max_sweeps <= 1e6 && max_sweeps == std::floor(max_sweeps), ErrorCode::Argument, op,
           "maxSweeps must be an integer in [1, 1e6]");
    p.max_sweeps = static_cast<int32_t>(max_sweeps);
    p.tol = static_cast<float>(number_arg(d, "tol", 0));
    const int64_t k = std::min(p.m, p.n);
    expect(p.keep <= k, ErrorCode::Shape, op, "keep must be ≤ min(m, n) = " + std::to_string(k));
    const TensorArg a = tensor_arg(d, "a", keep);
    const Device device = a.device;
    p.a_layout = strided_arg(d, op, a, "a", "aStrides", DType::Float32, device, p.batch, p.m, p.n, false);
    p.a = static_cast<const float*>(a.data);
    const TensorArg s = tensor_arg(d, "s", keep), sweeps = tensor_arg(d, "sweeps", keep);
    expect_part(s, op, "s", DType::Float32, p.batch * p.keep, device);
    expect_part(sweeps, op, "sweeps", DType::Int32, p.batch, device);
    p.s = static_cast<float*>(s.data);
    p.sweeps = static_cast<int32_t*>(sweeps.data);
    const TensorArg u = optional_tensor_arg(d, "u", keep), vh = optional_tensor_arg(d, "vh", keep);
    expect((u.data == nullptr) == (vh.data == nullptr), ErrorCode::Argument, op, "u and vh must be given both or neither");
    if (u.data) {
      const int64_t u_cols = p.full_matrices ? p.m : p.keep, vh_rows = p.full_matrices ? p.n : p.keep;
      p.u_layout = strided_arg(d, op, u, "u", "uStrides", DType::Float32, device, p.batch, p.m, u_cols, true);
      p.vh_layout = strided_arg(d, op, vh, "vh", "vhStrides", DType::Float32, device, p.batch, vh_rows, p.n, true);
      p.u = static_cast<float*>(u.data);
      p.vh = static_cast<float*>(vh.data);
    }
    return run(info.Env(), async, device, std::move(keep), [p, device] { svd(p, device); });
  });
}

Napi::Value qr_entry(const Napi::CallbackInfo& info, bool async) {
  constexpr const char* op = "linalg.qr";
  return guarded(info.Env(), [&]() -> Napi::Value {
    const Napi::Object d = descriptor(info, op);
    KeepAlive keep;
    QrParams p;
    p.batch = count_arg(d, op, "batch");
    p.m = count_arg(d, op, "m");
    p.n = count_arg(d, op, "n");
    const int64_t k = std::min(p.m, p.n);
    const TensorArg a = tensor_arg(d, "a", keep);
    const Device device = a.device;
    p.a_layout = strided_arg(d, op, a, "a", "aStrides", DType::Float32, device, p.batch, p.m, p.n, false);
    p.a = static_cast<const float*>(a.data);
    const TensorArg q = tensor_arg(d, "q", keep);
    p.q_layout = strided_arg(d, op, q, "q", "qStrides", DType::Float32, device, p.batch, p.m, k, true);
    p.q = static_cast<float*>(q.data);
    const TensorArg r = optional_tensor_arg(d, "r", keep);
    if (r.data) {
      p.r_layout = strided_arg(d, op, r, "r", "rStrides", DType::Float32, device, p.batch, k, p.n, true);
      p.r = static_cast<float*>(r.data);
    }
    return run(info.Env(), async, device, std::move(keep), [p, device] { qr(p, device); });
  });
}

}  // namespace

void register_linalg(Napi::Env env, Napi::Object exports) {
  exports.Set("linalgSvd", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return svd_entry(info, false); }));
  exports.Set("linalgSvdAsync", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return svd_entry(info, true); }));
  exports.Set("linalgQr", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return qr_entry(info, false); }));
  exports.Set("linalgQrAsync", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return qr_entry(info, true); }));
}

}  // namespace lk::binding
