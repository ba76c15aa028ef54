// lora.doraForward / doraBackward (+ Async): JS descriptors → DoraForwardParams / DoraBackwardParams.
// The TypeScript layer validates for the user; this re-checks what memory safety needs.
#include "common.h"
#include "ops/dora.h"

namespace lk::binding {
namespace {

// The operands every DoRA call shares, checked against x: sizes m, k, n, r and one placement.
struct DoraOperands {
  TensorArg x, weight, a, b, magnitude;
  int64_t m = 0, k = 0, n = 0, r = 0;
  const char* op;

  DoraOperands(const Napi::Object& d, const char* op_name, KeepAlive& keep) : op(op_name) {
    x = tensor_arg(d, "x", keep);
    weight = tensor_arg(d, "weight", keep);
    a = tensor_arg(d, "a", keep);
    b = tensor_arg(d, "b", keep);
    magnitude = tensor_arg(d, "magnitude", keep);
    expect(x.ndim() >= 1 && weight.ndim() == 2 && a.ndim() == 2 && b.ndim() == 2, ErrorCode::Shape,
           "x must be [..., K], weight [N, K], a [r, K] and b [N, r]");
    k = x.dim(-1);
    n = weight.dim(0);
    r = a.dim(0);
    m = k > 0 ? x.numel() / k : 0;
    expect(weight.dim(1) == k && a.dim(1) == k && b.dim(0) == n && b.dim(1) == r && r >= 1, ErrorCode::Shape,
           "weight must be [N, K], a [r, K] (r ≥ 1) and b [N, r] with K = x.shape[-1]");
    expect(magnitude.numel() == n, ErrorCode::Shape, "magnitude must be [N]");
    expect(magnitude.dtype == DType::Float32 || magnitude.dtype == x.dtype, ErrorCode::DType,
           "magnitude must be float32 or the dtype of x");
    placed(weight, x.dtype);
    placed(a, x.dtype);
    placed(b, x.dtype);
    placed(magnitude, magnitude.dtype);
  }

  void expect(bool ok, ErrorCode code, const std::string& message) const {
    if (!ok) throw Error(code, std::string(op) + ": " + message);
  }
  // On the device of x, with the given dtype (absent optional tensors pass).
  void placed(const TensorArg& t, DType dtype) const {
    if (!t.data) return;
    expect(t.dtype == dtype, ErrorCode::DType, "every tensor must have the dtype of x (magnitude: float32 or it)");
    expect(t.device.index == x.device.index, ErrorCode::Device, "every tensor must be on the device of x");
  }
  void sized(const TensorArg& t, int64_t numel, const char* what) const {
    expect(t.numel() == numel, ErrorCode::Shape, what);
  }

  template <class P>
  void fill(P& p) const {
    p.dtype = x.dtype;
    p.m = m; p.k = k; p.n = n; p.r = r;
    p.x = x.data; p.x_stride = k;
    p.weight = weight.data; p.weight_stride = k;
    p.a = a.data; p.a_stride = k;
    p.b = b.data; p.b_stride = r;
  }
};

Napi::Value dora_forward_entry(const Napi::CallbackInfo& info, bool async) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const char* op = async ? "lora.doraForwardAsync" : "lora.doraForward";
    if (info.Length() < 1 || !info[0].IsObject()) throw Error(ErrorCode::Argument, std::string(op) + ": expected an argument object");
    Napi::Object d = info[0].As<Napi::Object>();
    KeepAlive keep;
    const DoraOperands o(d, op, keep);
    TensorArg y = tensor_arg(d, "out", keep), bias = optional_tensor_arg(d, "bias", keep);
    o.placed(y, o.x.dtype);
    o.placed(bias, bias.dtype);
    const bool bias_f32 = mixed_bias(bias, o.x.dtype, o.op);
    o.sized(y, o.m * o.n, "out must hold M·N elements");
    if (bias.data) o.sized(bias, o.n, "bias must be [N]");

    DoraForwardParams p;
    o.fill(p.lora);
    p.lora.bias = bias.data;
    p.lora.bias_f32 = bias_f32;
    p.lora.scale = static_cast<float>(number_arg(d, "scale", 1.0));
    p.lora.y = y.data;
    p.lora.y_stride = o.n;
    p.magnitude = o.magnitude.data;
    p.magnitude_dtype = o.magnitude.dtype;
    const Device device = o.x.device;
    return run(env, async, device, std::move(keep), [p, device] { dora_forward(p, device); });
  });
}

Napi::Value dora_backward_entry(const Napi::CallbackInfo& info, bool async) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const char* op = async ? "lora.doraBackwardAsync" : "lora.doraBackward";
    if (info.Length() < 1 || !info[0].IsObject()) throw Error(ErrorCode::Argument, std::string(op) + ": expected an argument object");
    Napi::Object d = info[0].As<Napi::Object>();
    KeepAlive keep;
    const DoraOperands o(d, op, keep);
    TensorArg g = tensor_arg(d, "gradOutput", keep), grad_input = optional_tensor_arg(d, "gradInput", keep),
              grad_a = tensor_arg(d, "gradA", keep), grad_b = tensor_arg(d, "gradB", keep),
              grad_m = tensor_arg(d, "gradMagnitude", keep);
    for (const TensorArg* t : {&g, &grad_input, &grad_a, &grad_b}) o.placed(*t, o.x.dtype);
    o.placed(grad_m, o.magnitude.dtype);
    o.sized(g, o.m * o.n, "gradOutput must hold M·N elements");
    if (grad_input.data) o.sized(grad_input, o.m * o.k, "gradInput must have the shape of x");
    o.sized(grad_a, o.r * o.k, "gradA must be [r, K]");
    o.sized(grad_b, o.n * o.r, "gradB must be [N, r]");
    o.sized(grad_m, o.n, "gradMagnitude must be [N]");

    DoraBackwardParams p;
    o.fill(p.lora);
    p.lora.grad_output = g.data; p.lora.grad_output_stride = o.n;
    p.lora.scale = static_cast<float>(number_arg(d, "scale", 1.0));
    p.lora.grad_input = grad_input.data; p.lora.grad_input_stride = o.k;
    p.lora.grad_a = grad_a.data; p.lora.grad_a_stride = o.k;
    p.lora.grad_b = grad_b.data; p.lora.grad_b_stride = o.r;
    p.magnitude = o.magnitude.data;
    p.magnitude_dtype = o.magnitude.dtype;
    p.grad_magnitude = grad_m.data;
    const Device device = o.x.device;
    return run(env, async, device, std::move(keep), [p, device] { dora_backward(p, device); });
  });
}

}  // namespace

void register_dora(Napi::Env env, Napi::Object exports) {
  exports.Set("doraForward", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return dora_forward_entry(info, false); }));
  exports.Set("doraForwardAsync", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return dora_forward_entry(info, true); }));
  exports.Set("doraBackward", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return dora_backward_entry(info, false); }));
  exports.Set("doraBackwardAsync", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return dora_backward_entry(info, true); }));
}

}  // namespace lk::binding
