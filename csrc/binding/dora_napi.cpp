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

  explicit DoraOperands(const OpArgs& args)
      : x(args.tensor("x")), weight(args.tensor("weight")), a(args.tensor("a")), b(args.tensor("b")),
        magnitude(args.tensor("magnitude")) {
    args.expect(x.ndim() >= 1 && weight.ndim() == 2 && a.ndim() == 2 && b.ndim() == 2, ErrorCode::Shape,
                "x must be [..., K], weight [N, K], a [r, K] and b [N, r]");
    k = x.dim(-1);
    n = weight.dim(0);
    r = a.dim(0);
    m = k > 0 ? x.numel() / k : 0;
    args.expect(weight.dim(1) == k && a.dim(1) == k && b.dim(0) == n && b.dim(1) == r && r >= 1, ErrorCode::Shape,
                "weight must be [N, K], a [r, K] (r ≥ 1) and b [N, r] with K = x.shape[-1]");
    args.expect(magnitude.numel() == n, ErrorCode::Shape, "magnitude must be [N]");
    args.expect(magnitude.dtype == DType::Float32 || magnitude.dtype == x.dtype, ErrorCode::DType,
                "magnitude must be float32 or the dtype of x");
    args.expect_placed({&weight, &a, &b}, x.dtype, x);
    args.expect_placed({&magnitude}, magnitude.dtype, x);
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

Napi::Value forward_entry(const Napi::CallbackInfo& info, bool async) {
  OpArgs args(info, "lora.doraForward", async);
  const DoraOperands o(args);
  const TensorArg y = args.tensor("out"), bias = args.optional_tensor("bias");
  args.expect_placed({&y}, o.x.dtype, o.x);
  const bool bias_f32 = args.expect_bias(bias, o.x);
  args.expect(y.numel() == o.m * o.n, ErrorCode::Shape, "out must hold M·N elements");
  args.expect(!bias.data || bias.numel() == o.n, ErrorCode::Shape, "bias must be [N]");

  DoraForwardParams p;
  o.fill(p.lora);
  p.lora.bias = bias.data;
  p.lora.bias_f32 = bias_f32;
  p.lora.scale = static_cast<float>(args.number("scale", 1.0));
  p.lora.y = y.data;
  p.lora.y_stride = o.n;
  p.magnitude = o.magnitude.data;
  p.magnitude_dtype = o.magnitude.dtype;
  const Device device = o.x.device;
  return args.run(device, [p, device] { dora_forward(p, device); });
}

Napi::Value backward_entry(const Napi::CallbackInfo& info, bool async) {
  OpArgs args(info, "lora.doraBackward", async);
  const DoraOperands o(args);
  const TensorArg g = args.tensor("gradOutput"), grad_input = args.optional_tensor("gradInput"), grad_a = args.tensor("gradA"),
                  grad_b = args.tensor("gradB"), grad_m = args.tensor("gradMagnitude");
  args.expect_placed({&g, &grad_input, &grad_a, &grad_b}, o.x.dtype, o.x);
  args.expect_placed({&grad_m}, o.magnitude.dtype, o.x);
  args.expect(g.numel() == o.m * o.n, ErrorCode::Shape, "gradOutput must hold M·N elements");
  args.expect(!grad_input.data || grad_input.numel() == o.m * o.k, ErrorCode::Shape, "gradInput must have the shape of x");
  args.expect(grad_a.numel() == o.r * o.k, ErrorCode::Shape, "gradA must be [r, K]");
  args.expect(grad_b.numel() == o.n * o.r, ErrorCode::Shape, "gradB must be [N, r]");
  args.expect(grad_m.numel() == o.n, ErrorCode::Shape, "gradMagnitude must be [N]");

  DoraBackwardParams p;
  o.fill(p.lora);
  p.lora.grad_output = g.data; p.lora.grad_output_stride = o.n;
  p.lora.scale = static_cast<float>(args.number("scale", 1.0));
  p.lora.grad_input = grad_input.data; p.lora.grad_input_stride = o.k;
  p.lora.grad_a = grad_a.data; p.lora.grad_a_stride = o.k;
  p.lora.grad_b = grad_b.data; p.lora.grad_b_stride = o.r;
  p.magnitude = o.magnitude.data;
  p.magnitude_dtype = o.magnitude.dtype;
  p.grad_magnitude = grad_m.data;
  const Device device = o.x.device;
  return args.run(device, [p, device] { dora_backward(p, device); });
}

}  // namespace

void register_dora(Napi::Env env, Napi::Object exports) {
  export_op(env, exports, "doraForward", forward_entry);
  export_op(env, exports, "doraBackward", backward_entry);
}

}  // namespace lk::binding
