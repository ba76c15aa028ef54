// lora.forwardMulti / forwardMultiAsync: JS descriptors → LoraMultiParams. The TypeScript layer
// validates for the user; this re-checks what memory safety needs (shapes against the buffers,
// dtypes, one device). The ids themselves are checked by the op on every backend.
#include "common.h"
#include "ops/lora_multi.h"

namespace lk::binding {
namespace {

void expect(bool ok, ErrorCode code, const std::string& message) {
  if (!ok) throw Error(code, "lora.forwardMulti: " + message);
}

Napi::Value lora_forward_multi_entry(const Napi::CallbackInfo& info, bool async) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    if (info.Length() < 1 || !info[0].IsObject()) throw Error(ErrorCode::Argument, "lora.forwardMulti: expected an argument object");
    Napi::Object d = info[0].As<Napi::Object>();
    KeepAlive keep;
    TensorArg x = tensor_arg(d, "x", keep), w = tensor_arg(d, "weight", keep), a = tensor_arg(d, "a", keep),
              b = tensor_arg(d, "b", keep), scales = tensor_arg(d, "scales", keep), ids = tensor_arg(d, "adapterIds", keep),
              y = tensor_arg(d, "out", keep);
    TensorArg bias = optional_tensor_arg(d, "bias", keep), ranks = optional_tensor_arg(d, "ranks", keep);

    expect(x.ndim() >= 1 && w.ndim() == 2 && a.ndim() == 3 && b.ndim() == 3, ErrorCode::Shape,
           "x must be [..., K], weight [N, K], a [L, rMax, K] and b [L, N, rMax]");
    const int64_t k = x.dim(-1), n = w.dim(0), m = k > 0 ? x.numel() / k : 0, l = a.dim(0), r_max = a.dim(1);
    expect(w.dim(1) == k && a.dim(2) == k, ErrorCode::Shape, "weight and a must have K = x.shape[-1] columns");
    expect(b.dim(0) == l && b.dim(1) == n && b.dim(2) == r_max, ErrorCode::Shape, "b must be [L, N, rMax]");
    for (const TensorArg* t : {&w, &a, &b, &y}) {
      expect(t->dtype == x.dtype, ErrorCode::DType, "every float tensor must have the dtype of x");
    }
    const bool bias_f32 = mixed_bias(bias, x.dtype, "lora.forwardMulti");
    expect(ids.dtype == DType::Int32 && (!ranks.data || ranks.dtype == DType::Int32) && scales.dtype == DType::Float32,
           ErrorCode::DType, "adapterIds and ranks must be int32, scales float32");
    for (const TensorArg* t : {&w, &a, &b, &y, &bias, &ranks, &scales, &ids}) {
      if (t->data) expect(t->device.index == x.device.index, ErrorCode::Device, "every tensor must be on the device of x");
    }
    expect(y.numel() == m * n, ErrorCode::Shape, "out must hold M·N elements");
    expect(ids.numel() == m, ErrorCode::Shape, "adapterIds must hold one id per row of x");
    expect(scales.numel() == l && (!ranks.data || ranks.numel() == l), ErrorCode::Shape, "scales and ranks must be [L]");
    expect(!bias.data || bias.numel() == n, ErrorCode::Shape, "bias must be [N]");

    LoraMultiParams p;
    p.dtype = x.dtype;
    p.m = m; p.k = k; p.n = n; p.num_adapters = l; p.r_max = r_max;
    p.x = x.data; p.x_stride = k;
    p.weight = w.data; p.weight_stride = k;
    p.bias = bias.data;
    p.bias_f32 = bias_f32;
    p.a = a.data;
    p.b = b.data;
    p.ranks = static_cast<const int32_t*>(ranks.data);
    p.scales = static_cast<const float*>(scales.data);
    p.adapter_ids = static_cast<const int32_t*>(ids.data);
    p.y = y.data; p.y_stride = n;
    const Device device = x.device;
    return run(env, async, device, std::move(keep), [p, device] { lora_forward_multi(p, device); });
  });
}

}  // namespace

void register_lora_multi(Napi::Env env, Napi::Object exports) {
  exports.Set("loraForwardMulti", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return lora_forward_multi_entry(info, false); }));
  exports.Set("loraForwardMultiAsync", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return lora_forward_multi_entry(info, true); }));
}

}  // namespace lk::binding
