// quant.matmul / matmulAsync and quant.matmulBackward / matmulBackwardAsync: JS descriptors →
// QuantMatmulParams / QuantMatmulBackwardParams. The TypeScript layer validates for the user; this
// re-checks what memory safety needs (every buffer covers the shape the kernel touches).
#include <string>

#include "common.h"
#include "ops/quant_matmul.h"
#include "quant_weight.h"

namespace lk::binding {
namespace {

struct Checker {
  const char* op;
  DType dtype;
  Device device;
  void expect(bool ok, ErrorCode code, const std::string& message) const {
    if (!ok) throw Error(code, std::string(op) + ": " + message);
  }
  // An operand in the dtype of x (or float32 for the gates) on the weight's device, `numel` elements.
  void operand(const TensorArg& t, const char* name, int64_t numel, DType want) const {
    if (!t.data) return;
    expect(t.dtype == want, ErrorCode::DType, std::string(name) + " must be " + dtype_name(want));
    expect(t.device.index == device.index, ErrorCode::Device, std::string(name) + " must be on the device of the weight");
    expect(t.numel() == numel, ErrorCode::Shape, std::string(name) + " must hold " + std::to_string(numel) + " elements");
  }
};

Napi::Value matmul_entry(const Napi::CallbackInfo& info, bool async) {
  constexpr const char* op = "quant.matmul";
  return guarded(info.Env(), [&]() -> Napi::Value {
    const Napi::Object d = descriptor(info, op);
    KeepAlive keep;
    QuantMatmulParams p;
    Device device;
    p.weight = quant_weight_arg(d, "weight", op, keep, &device);
    const TensorArg x = tensor_arg(d, "x", keep), y = tensor_arg(d, "out", keep);
    const TensorArg bias = optional_tensor_arg(d, "bias", keep), a = optional_tensor_arg(d, "a", keep),
                    b = optional_tensor_arg(d, "b", keep), gate = optional_tensor_arg(d, "gatePerOutput", keep);
    const Checker c{op, x.dtype, device};
    const int64_t k = p.weight.k, n = p.weight.n;
    c.expect(is_float_dtype(x.dtype), ErrorCode::DType, "x must be float32, float16 or bfloat16");
    c.expect(x.ndim() >= 1 && x.dim(-1) == k, ErrorCode::Shape, "x must be [..., K] with K of the weight");
    const int64_t m = x.numel() / k;
    c.operand(x, "x", m * k, x.dtype);
    c.operand(y, "out", m * n, x.dtype);
    c.operand(bias, "bias", n, bias.dtype);
    const bool bias_f32 = mixed_bias(bias, x.dtype, op);
    c.operand(gate, "gatePerOutput", n, DType::Float32);
    c.expect((a.data == nullptr) == (b.data == nullptr), ErrorCode::Argument, "a and b come together");
    if (a.data) {
      c.expect(a.ndim() == 2 && a.dim(1) == k && a.dim(0) >= 1, ErrorCode::Shape, "a must be [r, K]");
      p.r = a.dim(0);
      c.operand(a, "a", p.r * k, x.dtype);
      c.operand(b, "b", n * p.r, x.dtype);
    }
    p.dtype = x.dtype;
    p.m = m;
    p.x = x.data; p.x_stride = k;
    p.bias = bias.data;
    p.bias_f32 = bias_f32;
    p.a = a.data; p.a_stride = k;
    p.b = b.data; p.b_stride = p.r;
    p.scale = static_cast<float>(number_arg(d, "scale", 1.0));
    p.gate = static_cast<float>(number_arg(d, "gate", 1.0));
    p.gate_per_output = static_cast<const float*>(gate.data);
    p.y = y.data; p.y_stride = n;
    return run(info.Env(), async, device, std::move(keep), [p, device] { quant_matmul(p, device); });
  });
}

Napi::Value backward_entry(const Napi::CallbackInfo& info, bool async) {
  constexpr const char* op = "quant.matmulBackward";
  return guarded(info.Env(), [&]() -> Napi::Value {
    const Napi::Object d = descriptor(info, op);
    KeepAlive keep;
    QuantMatmulBackwardParams p;
    Device device;
    p.weight = quant_weight_arg(d, "weight", op, keep, &device);
    const TensorArg g = tensor_arg(d, "gradOutput", keep), x = tensor_arg(d, "x", keep), a = tensor_arg(d, "a", keep),
                    b = tensor_arg(d, "b", keep), grad_a = tensor_arg(d, "gradA", keep), grad_b = tensor_arg(d, "gradB", keep);
    const TensorArg gate = optional_tensor_arg(d, "gatePerOutput", keep), grad_input = optional_tensor_arg(d, "gradInput", keep),
                    grad_gate = optional_tensor_arg(d, "gradGate", keep);
    const Checker c{op, x.dtype, device};
    const int64_t k = p.weight.k, n = p.weight.n;
    c.expect(is_float_dtype(x.dtype), ErrorCode::DType, "x must be float32, float16 or bfloat16");
    c.expect(x.ndim() >= 1 && x.dim(-1) == k, ErrorCode::Shape, "x must be [..., K] with K of the weight");
    c.expect(a.ndim() == 2 && a.dim(1) == k && a.dim(0) >= 1, ErrorCode::Shape, "a must be [r, K]");
    const int64_t m = x.numel() / k, r = a.dim(0);
    c.operand(x, "x", m * k, x.dtype);
    c.operand(g, "gradOutput", m * n, x.dtype);
    c.operand(a, "a", r * k, x.dtype);
    c.operand(b, "b", n * r, x.dtype);
    c.operand(grad_a, "gradA", r * k, x.dtype);
    c.operand(grad_b, "gradB", n * r, x.dtype);
    c.operand(grad_input, "gradInput", m * k, x.dtype);
    c.operand(gate, "gatePerOutput", n, DType::Float32);
    c.operand(grad_gate, "gradGate", gate.data ? n : 1, DType::Float32);
    p.dtype = x.dtype;
    p.m = m;
    p.r = r;
    p.grad_output = g.data; p.grad_output_stride = n;
    p.x = x.data; p.x_stride = k;
    p.a = a.data; p.a_stride = k;
    p.b = b.data; p.b_stride = r;
    p.scale = static_cast<float>(number_arg(d, "scale", 1.0));
    p.gate = static_cast<float>(number_arg(d, "gate", 1.0));
    p.gate_per_output = static_cast<const float*>(gate.data);
    p.grad_input = grad_input.data; p.grad_input_stride = k;
    p.grad_a = grad_a.data; p.grad_a_stride = k;
    p.grad_b = grad_b.data; p.grad_b_stride = r;
    p.grad_gate = static_cast<float*>(grad_gate.data);
    return run(info.Env(), async, device, std::move(keep), [p, device] { quant_matmul_backward(p, device); });
  });
}

}  // namespace

void register_quant_matmul(Napi::Env env, Napi::Object exports) {
  exports.Set("quantMatmul", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return matmul_entry(info, false); }));
  exports.Set("quantMatmulAsync", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return matmul_entry(info, true); }));
  exports.Set("quantMatmulBackward", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return backward_entry(info, false); }));
  exports.Set("quantMatmulBackwardAsync", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return backward_entry(info, true); }));
}

}  // namespace lk::binding
