// quant.matmul / matmulAsync and quant.matmulBackward / matmulBackwardAsync: JS descriptors →
// QuantMatmulParams / QuantMatmulBackwardParams. The TypeScript layer validates for the user; this
// re-checks what memory safety needs (every buffer covers the shape the kernel touches).
#include <string>

#include "common.h"
#include "ops/quant_matmul.h"
#include "quant_weight.h"

namespace lk::binding {
namespace {

// x [..., K] of a float dtype on the device of the weight (every other operand is checked against
// x); returns M.
int64_t rows_of_x(const OpArgs& args, const TensorArg& x, int64_t k, const Device& weight_device) {
  args.expect(is_float_dtype(x.dtype), ErrorCode::DType, "x must be float32, float16 or bfloat16");
  args.expect(x.ndim() >= 1 && x.dim(-1) == k, ErrorCode::Shape, "x must be [..., K] with K of the weight");
  args.expect(x.device.index == weight_device.index, ErrorCode::Device, "x must be on the device of the weight");
  return x.numel() / k;
}

Napi::Value matmul_entry(const Napi::CallbackInfo& info, bool async) {
  OpArgs args(info, "quant.matmul", async);
  QuantMatmulParams p;
  Device device;
  p.weight = quant_weight_arg(args, "weight", &device);
  const TensorArg x = args.tensor("x"), y = args.tensor("out");
  const TensorArg bias = args.optional_tensor("bias"), a = args.optional_tensor("a"), b = args.optional_tensor("b"),
                  gate = args.optional_tensor("gatePerOutput");
  const int64_t k = p.weight.k, n = p.weight.n, m = rows_of_x(args, x, k, device);
  args.expect_part(y, x.dtype, m * n, x);
  const bool bias_f32 = args.expect_bias(bias, x);
  if (bias.data) args.expect_part(bias, bias.dtype, n, x);
  if (gate.data) args.expect_part(gate, DType::Float32, n, x);
  args.expect((a.data == nullptr) == (b.data == nullptr), ErrorCode::Argument, "a and b come together");
  if (a.data) {
    args.expect(a.ndim() == 2 && a.dim(1) == k && a.dim(0) >= 1, ErrorCode::Shape, "a must be [r, K]");
    p.r = a.dim(0);
    args.expect_part(a, x.dtype, p.r * k, x);
    args.expect_part(b, x.dtype, n * p.r, x);
  }
  p.dtype = x.dtype;
  p.m = m;
  p.x = x.data; p.x_stride = k;
  p.bias = bias.data;
  p.bias_f32 = bias_f32;
  p.a = a.data; p.a_stride = k;
  p.b = b.data; p.b_stride = p.r;
  p.scale = static_cast<float>(args.number("scale", 1.0));
  p.gate = static_cast<float>(args.number("gate", 1.0));
  p.gate_per_output = static_cast<const float*>(gate.data);
  p.y = y.data; p.y_stride = n;
  return args.run(device, [p, device] { quant_matmul(p, device); });
}

Napi::Value backward_entry(const Napi::CallbackInfo& info, bool async) {
  OpArgs args(info, "quant.matmulBackward", async);
  QuantMatmulBackwardParams p;
  Device device;
  p.weight = quant_weight_arg(args, "weight", &device);
  const TensorArg g = args.tensor("gradOutput"), x = args.tensor("x"), a = args.tensor("a"), b = args.tensor("b"),
                  grad_a = args.tensor("gradA"), grad_b = args.tensor("gradB");
  const TensorArg gate = args.optional_tensor("gatePerOutput"), grad_input = args.optional_tensor("gradInput"),
                  grad_gate = args.optional_tensor("gradGate");
  const int64_t k = p.weight.k, n = p.weight.n, m = rows_of_x(args, x, k, device);
  args.expect(a.ndim() == 2 && a.dim(1) == k && a.dim(0) >= 1, ErrorCode::Shape, "a must be [r, K]");
  const int64_t r = a.dim(0);
  args.expect_part(g, x.dtype, m * n, x);
  args.expect_part(a, x.dtype, r * k, x);
  args.expect_part(b, x.dtype, n * r, x);
  args.expect_part(grad_a, x.dtype, r * k, x);
  args.expect_part(grad_b, x.dtype, n * r, x);
  if (grad_input.data) args.expect_part(grad_input, x.dtype, m * k, x);
  if (gate.data) args.expect_part(gate, DType::Float32, n, x);
  if (grad_gate.data) args.expect_part(grad_gate, DType::Float32, gate.data ? n : 1, x);
  p.dtype = x.dtype;
  p.m = m;
  p.r = r;
  p.grad_output = g.data; p.grad_output_stride = n;
  p.x = x.data; p.x_stride = k;
  p.a = a.data; p.a_stride = k;
  p.b = b.data; p.b_stride = r;
  p.scale = static_cast<float>(args.number("scale", 1.0));
  p.gate = static_cast<float>(args.number("gate", 1.0));
  p.gate_per_output = static_cast<const float*>(gate.data);
  p.grad_input = grad_input.data; p.grad_input_stride = k;
  p.grad_a = grad_a.data; p.grad_a_stride = k;
  p.grad_b = grad_b.data; p.grad_b_stride = r;
  p.grad_gate = static_cast<float*>(grad_gate.data);
  return args.run(device, [p, device] { quant_matmul_backward(p, device); });
}

}  // namespace

void register_quant_matmul(Napi::Env env, Napi::Object exports) {
  export_op(env, exports, "quantMatmul", matmul_entry);
  export_op(env, exports, "quantMatmulBackward", backward_entry);
}

}  // namespace lk::binding
