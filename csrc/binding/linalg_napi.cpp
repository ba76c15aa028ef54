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

// Sizes and strides: non-negative integers below 2^53 (exact in a double).
constexpr int64_t kMaxCount = int64_t{1} << 53;

// `t` [batch, rows, cols] of `dtype` on the device of `ref`, through the strides in
// args[strides_name] ([batch, row, col] elements): each stride a non-negative integer, the largest
// offset inside the tensor. Overflow-free: each step is checked against the room left before it is
// added.
MatrixArg strided_arg(const OpArgs& args, const TensorArg& t, const char* strides_name, DType dtype, const TensorArg& ref,
                      int64_t batch, int64_t rows, int64_t cols, bool output) {
  args.expect_placed({&t}, dtype, ref);
  const Napi::Value v = args.value(strides_name);
  args.expect(v.IsArray() && v.As<Napi::Array>().Length() == 3, ErrorCode::Argument,
              std::string(strides_name) + " must be an array [batch, row, column] of element strides");
  const Napi::Array arr = v.As<Napi::Array>();
  const int64_t extents[3] = {batch, rows, cols};
  int64_t strides[3];
  for (uint32_t i = 0; i < 3; ++i) {
    const Napi::Value s = arr.Get(i);
    const double sv = s.IsNumber() ? s.As<Napi::Number>().DoubleValue() : -1;
    args.expect(sv >= 0 && sv <= static_cast<double>(kMaxCount) && sv == std::floor(sv), ErrorCode::Argument,
                std::string(strides_name) + "[" + std::to_string(i) + "] must be a non-negative integer");
    strides[i] = static_cast<int64_t>(sv);
    args.expect(!output || strides[i] > 0 || extents[i] <= 1, ErrorCode::Argument,
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
    args.expect(inside, ErrorCode::Shape,
                t.name + " [" + std::to_string(batch) + ", " + std::to_string(rows) + ", " + std::to_string(cols) + "] through " +
                    strides_name + " reaches past its " + std::to_string(numel) + " elements");
  }
  return MatrixArg{strides[0], strides[1], strides[2]};
}

Napi::Value svd_entry(const Napi::CallbackInfo& info, bool async) {
  OpArgs args(info, "linalg.svd", async);
  SvdParams p;
  p.batch = args.integer("batch", 0, kMaxCount);
  p.m = args.integer("m", 0, kMaxCount);
  p.n = args.integer("n", 0, kMaxCount);
  p.keep = args.integer("keep", 0, kMaxCount);
  p.full_matrices = args.boolean("fullMatrices", false);
  p.max_sweeps = static_cast<int32_t>(args.integer("maxSweeps", 1, 1000000, 30));
  p.tol = static_cast<float>(args.number("tol", 0));
  const int64_t k = std::min(p.m, p.n);
  args.expect(p.keep <= k, ErrorCode::Shape, "keep must be ≤ min(m, n) = " + std::to_string(k));
  const TensorArg a = args.tensor("a");
  p.a_layout = strided_arg(args, a, "aStrides", DType::Float32, a, p.batch, p.m, p.n, false);
  p.a = static_cast<const float*>(a.data);
  const TensorArg s = args.tensor("s"), sweeps = args.tensor("sweeps");
  args.expect_part(s, DType::Float32, p.batch * p.keep, a);
  args.expect_part(sweeps, DType::Int32, p.batch, a);
  p.s = static_cast<float*>(s.data);
  p.sweeps = static_cast<int32_t*>(sweeps.data);
  const TensorArg u = args.optional_tensor("u"), vh = args.optional_tensor("vh");
  args.expect((u.data == nullptr) == (vh.data == nullptr), ErrorCode::Argument, "u and vh must be given both or neither");
  if (u.data) {
    const int64_t u_cols = p.full_matrices ? p.m : p.keep, vh_rows = p.full_matrices ? p.n : p.keep;
    p.u_layout = strided_arg(args, u, "uStrides", DType::Float32, a, p.batch, p.m, u_cols, true);
    p.vh_layout = strided_arg(args, vh, "vhStrides", DType::Float32, a, p.batch, vh_rows, p.n, true);
    p.u = static_cast<float*>(u.data);
    p.vh = static_cast<float*>(vh.data);
  }
  const Device device = a.device;
  return args.run(device, [p, device] { svd(p, device); });
}

Napi::Value qr_entry(const Napi::CallbackInfo& info, bool async) {
  OpArgs args(info, "linalg.qr", async);
  QrParams p;
  p.batch = args.integer("batch", 0, kMaxCount);
  p.m = args.integer("m", 0, kMaxCount);
  p.n = args.integer("n", 0, kMaxCount);
  const int64_t k = std::min(p.m, p.n);
  const TensorArg a = args.tensor("a");
  p.a_layout = strided_arg(args, a, "aStrides", DType::Float32, a, p.batch, p.m, p.n, false);
  p.a = static_cast<const float*>(a.data);
  const TensorArg q = args.tensor("q");
  p.q_layout = strided_arg(args, q, "qStrides", DType::Float32, a, p.batch, p.m, k, true);
  p.q = static_cast<float*>(q.data);
  const TensorArg r = args.optional_tensor("r");
  if (r.data) {
    p.r_layout = strided_arg(args, r, "rStrides", DType::Float32, a, p.batch, k, p.n, true);
    p.r = static_cast<float*>(r.data);
  }
  const Device device = a.device;
  return args.run(device, [p, device] { qr(p, device); });
}

}  // namespace

void register_linalg(Napi::Env env, Napi::Object exports) {
  export_op(env, exports, "linalgSvd", svd_entry);
  export_op(env, exports, "linalgQr", qr_entry);
}

}  // namespace lk::binding
