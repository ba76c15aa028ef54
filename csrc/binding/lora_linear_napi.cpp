// lora.forward / forwardAsync and lora.backward / backwardAsync: JS descriptors → params structs.
#include "common.h"
#include "ops/lora_linear.h"

namespace lk::binding {
namespace {

Napi::Value forward_entry(const Napi::CallbackInfo& info, bool async) {
  OpArgs args(info, "lora.forward", async);
  const TensorArg x = args.tensor("x"), w = args.tensor("weight"), y = args.tensor("out");
  const TensorArg bias = args.optional_tensor("bias"), a = args.optional_tensor("a"), b = args.optional_tensor("b"),
                  mask = args.optional_tensor("dropoutMask");

  args.expect(x.ndim() >= 1 && w.ndim() == 2, ErrorCode::Shape, "x must be [..., K] and weight [N, K]");
  const int64_t k = x.dim(-1), n = w.dim(0), m = k > 0 ? x.numel() / k : 0;
  args.expect(w.dim(1) == k, ErrorCode::Shape, "weight must be [N, K] with K = x.shape[-1]");
  args.expect_placed({&w, &y, &a, &b, &mask}, x.dtype, x);
  const bool bias_f32 = args.expect_bias(bias, x);
  args.expect(y.numel() == m * n, ErrorCode::Shape, "out must hold M·N elements");
  args.expect(!bias.data || bias.numel() == n, ErrorCode::Shape, "bias must be [N]");
  args.expect(!mask.data || mask.numel() == x.numel(), ErrorCode::Shape, "dropoutMask must have the shape of x");
  args.expect((a.data == nullptr) == (b.data == nullptr), ErrorCode::Argument, "a and b come together");
  int64_t r = 0;
  if (a.data) {
    args.expect(a.ndim() == 2 && a.dim(1) == k, ErrorCode::Shape, "a must be [r, K]");
    r = a.dim(0);
    args.expect(b.ndim() == 2 && b.dim(0) == n && b.dim(1) == r, ErrorCode::Shape, "b must be [N, r]");
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
  p.scale = static_cast<float>(args.number("scale", 1.0));
  p.y = y.data; p.y_stride = n;
  p.allow_tf32 = args.boolean("allowTf32", false);
  const Device device = x.device;
  return args.run(device, [p, device] { lora_forward(p, device); });
}

// The addon re-checks what memory safety needs: every buffer covers the shape the kernel will touch.
Napi::Value backward_entry(const Napi::CallbackInfo& info, bool async) {
  OpArgs args(info, "lora.backward", async);
  const TensorArg g = args.tensor("gradOutput"), x = args.tensor("x"), w = args.tensor("weight"), a = args.tensor("a"),
                  b = args.tensor("b"), grad_a = args.tensor("gradA"), grad_b = args.tensor("gradB");
  const TensorArg mask = args.optional_tensor("dropoutMask"), grad_input = args.optional_tensor("gradInput");

  args.expect(x.ndim() >= 1 && w.ndim() == 2 && a.ndim() == 2 && b.ndim() == 2, ErrorCode::Shape,
              "x must be [..., K], weight [N, K], a [r, K] and b [N, r]");
  const int64_t k = x.dim(-1), n = w.dim(0), r = a.dim(0), m = k > 0 ? x.numel() / k : 0;
  args.expect(k >= 1 && n >= 1 && r >= 1, ErrorCode::Shape, "K, N and r must be at least 1");
  args.expect(w.dim(1) == k && a.dim(1) == k && b.dim(0) == n && b.dim(1) == r, ErrorCode::Shape,
              "weight must be [N, K], a [r, K] and b [N, r] with K = x.shape[-1]");
  args.expect_placed({&g, &w, &a, &b, &grad_a, &grad_b, &mask, &grad_input}, x.dtype, x);
  args.expect(g.numel() == m * n, ErrorCode::Shape, "gradOutput must hold M·N elements");
  args.expect(grad_a.numel() == r * k && grad_b.numel() == n * r, ErrorCode::Shape, "gradA must be [r, K] and gradB [N, r]");
  args.expect(!mask.data || mask.numel() == x.numel(), ErrorCode::Shape, "dropoutMask must have the shape of x");
  args.expect(!grad_input.data || grad_input.numel() == x.numel(), ErrorCode::Shape, "gradInput must have the shape of x");

  LoraBackwardParams p;
  p.dtype = x.dtype;
  p.m = m; p.k = k; p.n = n; p.r = r;
  p.grad_output = g.data; p.grad_output_stride = n;
  p.x = x.data; p.x_stride = k;
  p.weight = w.data; p.weight_stride = k;
  p.a = a.data; p.a_stride = k;
  p.b = b.data; p.b_stride = r;
  p.dropout_mask = mask.data; p.mask_stride = k;
  p.scale = static_cast<float>(args.number("scale", 1.0));
  p.grad_input = grad_input.data; p.grad_input_stride = k;
  p.grad_a = grad_a.data; p.grad_a_stride = k;
  p.grad_b = grad_b.data; p.grad_b_stride = r;
  const Device device = x.device;
  return args.run(device, [p, device] { lora_backward(p, device); });
}

}  // namespace

void register_lora_linear(Napi::Env env, Napi::Object exports) {
  export_op(env, exports, "loraForward", forward_entry);
  export_op(env, exports, "loraBackward", backward_entry);
}

}  // namespace lk::binding
