// lora.forward / forwardAsync and lora.backward / backwardAsync: JS descriptors → params structs.
#include "common.h"
#include "ops/lora_linear.h"

namespace lk::binding {
namespace {

void expect(bool ok, ErrorCode code, const std::string& message, const char* op = "lora.forward") {
  if (!ok) throw Error(code, std::string(op) + ": " + message);
}

void expect_same_placement(const TensorArg& ref, const TensorArg& t, const char* name, const char* op = "lora.forward") {
  if (!t.data) return;
  expect(t.dtype == ref.dtype, ErrorCode::DType, std::string(name) + " must have the dtype of x", op);
  expect(t.device.index == ref.device.index, ErrorCode::Device, std::string(name) + " must be on the device of x", op);
}

Napi::Value lora_forward_entry(const Napi::CallbackInfo& info, bool async) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    if (info.Length() < 1 || !info[0].IsObject()) throw Error(ErrorCode::Argument, "lora.forward: expected an argument object");
    Napi::Object d = info[0].As<Napi::Object>();
    KeepAlive keep;
    TensorArg x = tensor_arg(d, "x", keep), w = tensor_arg(d, "weight", keep), y = tensor_arg(d, "out", keep);
    TensorArg bias = optional_tensor_arg(d, "bias", keep), a = optional_tensor_arg(d, "a", keep),
              b = optional_tensor_arg(d, "b", keep), mask = optional_tensor_arg(d, "dropoutMask", keep);

    expect(x.ndim() >= 1 && w.ndim() == 2, ErrorCode::Shape, "x must be [..., K] and weight [N, K]");
    const int64_t k = x.dim(-1), n = w.dim(0), m = k > 0 ? x.numel() / k : 0;
    expect(w.dim(1) == k, ErrorCode::Shape, "weight must be [N, K] with K = x.shape[-1]");
    for (auto* t : {&w, &y, &a, &b, &mask}) expect_same_placement(x, *t, "every tensor");
    const bool bias_f32 = mixed_bias(bias, x.dtype, "lora.forward");
    expect(!bias.data || bias.device.index == x.device.index, ErrorCode::Device, "bias must be on the device of x");
    expect(y.numel() == m * n, ErrorCode::Shape, "out must hold M·N elements");
    expect(!bias.data || bias.numel() == n, ErrorCode::Shape, "bias must be [N]");
    expect(!mask.data || mask.numel() == x.numel(), ErrorCode::Shape, "dropoutMask must have the shape of x");
    expect((a.data == nullptr) == (b.data == nullptr), ErrorCode::Argument, "a and b come together");
    int64_t r = 0;
    if (a.data) {
      expect(a.ndim() == 2 && a.dim(1) == k, ErrorCode::Shape, "a must be [r, K]");
      r = a.dim(0);
      expect(b.ndim() == 2 && b.dim(0) == n && b.dim(1) == r, ErrorCode::Shape, "b must be [N, r]");
    }

    LoraForwardParams p;
    p.dtype = x.dtype;
    p.m = m; p.k = k; p.n = n; p.r = r;
    p.x = x.data; p.x_stride = k;
    p.weight = w.data; p.weight_stride = k;
    p.bias = bias.data;
    p.bias_f32 = bias_f32;
    p.a = a.data; p.a_stride = k;
    p.b = b.data; p.b_stride = r;
    p.dropout_mask = mask.data; p.mask_stride = k;
    p.scale = static_cast<float>(number_arg(d, "scale", 1.0));
    p.y = y.data; p.y_stride = n;
    p.allow_tf32 = bool_arg(d, "allowTf32", false);
    const Device device = x.device;
    return run(env, async, device, std::move(keep), [p, device] { lora_forward(p, device); });
  });
}

// The addon re-checks what memory safety needs: every buffer covers the shape the kernel will touch.
Napi::Value lora_backward_entry(const Napi::CallbackInfo& info, bool async) {
  Napi::Env env = info.Env();
  constexpr const char* op = "lora.backward";
  return guarded(env, [&]() -> Napi::Value {
    if (info.Length() < 1 || !info[0].IsObject()) throw Error(ErrorCode::Argument, "lora.backward: expected an argument object");
    Napi::Object d = info[0].As<Napi::Object>();
    KeepAlive keep;
    TensorArg g = tensor_arg(d, "gradOutput", keep), x = tensor_arg(d, "x", keep), w = tensor_arg(d, "weight", keep),
              a = tensor_arg(d, "a", keep), b = tensor_arg(d, "b", keep), grad_a = tensor_arg(d, "gradA", keep),
              grad_b = tensor_arg(d, "gradB", keep);
    TensorArg mask = optional_tensor_arg(d, "dropoutMask", keep), grad_input = optional_tensor_arg(d, "gradInput", keep);

    expect(x.ndim() >= 1 && w.ndim() == 2 && a.ndim() == 2 && b.ndim() == 2, ErrorCode::Shape,
           "x must be [..., K], weight [N, K], a [r, K] and b [N, r]", op);
    const int64_t k = x.dim(-1), n = w.dim(0), r = a.dim(0), m = k > 0 ? x.numel() / k : 0;
    expect(k >= 1 && n >= 1 && r >= 1, ErrorCode::Shape, "K, N and r must be at least 1", op);
    expect(w.dim(1) == k && a.dim(1) == k && b.dim(0) == n && b.dim(1) == r, ErrorCode::Shape,
           "weight must be [N, K], a [r, K] and b [N, r] with K = x.shape[-1]", op);
    for (auto* t : {&g, &w, &a, &b, &grad_a, &grad_b, &mask, &grad_input}) expect_same_placement(x, *t, "every tensor", op);
    expect(g.numel() == m * n, ErrorCode::Shape, "gradOutput must hold M·N elements", op);
    expect(grad_a.numel() == r * k && grad_b.numel() == n * r, ErrorCode::Shape, "gradA must be [r, K] and gradB [N, r]", op);
    expect(!mask.data || mask.numel() == x.numel(), ErrorCode::Shape, "dropoutMask must have the shape of x", op);
    expect(!grad_input.data || grad_input.numel() == x.numel(), ErrorCode::Shape, "gradInput must have the shape of x", op);

    LoraBackwardParams p;
    p.dtype = x.dtype;
    p.m = m; p.k = k; p.n = n; p.r = r;
    p.grad_output = g.data; p.grad_output_stride = n;
    p.x = x.data; p.x_stride = k;
    p.weight = w.data; p.weight_stride = k;
    p.a = a.data; p.a_stride = k;
    p.b = b.data; p.b_stride = r;
    p.dropout_mask = mask.data; p.mask_stride = k;
    p.scale = static_cast<float>(number_arg(d, "scale", 1.0));
    p.grad_input = grad_input.data; p.grad_input_stride = k;
    p.grad_a = grad_a.data; p.grad_a_stride = k;
    p.grad_b = grad_b.data; p.grad_b_stride = r;
    const Device device = x.device;
    return run(env, async, device, std::move(keep), [p, device] { lora_backward(p, device); });
  });
}

}  // namespace

void register_lora_linear(Napi::Env env, Napi::Object exports) {
  exports.Set("loraForward", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return lora_forward_entry(info, false); }));
  exports.Set("loraForwardAsync", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return lora_forward_entry(info, true); }));
  exports.Set("loraBackward", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return lora_backward_entry(info, false); }));
  exports.Set("loraBackwardAsync", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return lora_backward_entry(info, true); }));
}

}  // namespace lk::binding
