// lora.forwardMulti / forwardMultiAsync: JS descriptors → LoraMultiParams. The TypeScript layer
// validates for the user; this re-checks what memory safety needs (shapes against the buffers,
// dtypes, one device). The ids themselves are checked by the op on every backend.
#include "common.h"
#include "ops/lora_multi.h"

namespace lk::binding {
namespace {

Napi::Value forward_multi_entry(const Napi::CallbackInfo& info, bool async) {
  OpArgs args(info, "lora.forwardMulti", async);
  const TensorArg x = args.tensor("x"), w = args.tensor("weight"), a = args.tensor("a"), b = args.tensor("b"),
                  scales = args.tensor("scales"), ids = args.tensor("adapterIds"), y = args.tensor("out");
  const TensorArg bias = args.optional_tensor("bias"), ranks = args.optional_tensor("ranks");

  args.expect(x.ndim() >= 1 && w.ndim() == 2 && a.ndim() == 3 && b.ndim() == 3, ErrorCode::Shape,
              "x must be [..., K], weight [N, K], a [L, rMax, K] and b [L, N, rMax]");
  const int64_t k = x.dim(-1), n = w.dim(0), m = k > 0 ? x.numel() / k : 0, l = a.dim(0), r_max = a.dim(1);
  args.expect(w.dim(1) == k && a.dim(2) == k, ErrorCode::Shape, "weight and a must have K = x.shape[-1] columns");
  args.expect(b.dim(0) == l && b.dim(1) == n && b.dim(2) == r_max, ErrorCode::Shape, "b must be [L, N, rMax]");
  args.expect_placed({&w, &a, &b, &y}, x.dtype, x);
  // The small arguments live on x's device, or all three on the host (numbers the TS layer kept
  // there for a CUDA x: the op then needs no read-back).
  const bool small_args_on_host = x.device.is_cuda() && ids.device.is_cpu();
  const TensorArg& small_place = small_args_on_host ? ids : x;
  args.expect_placed({&ids, &ranks}, DType::Int32, small_place);
  args.expect_placed({&scales}, DType::Float32, small_place);
  const bool bias_f32 = args.expect_bias(bias, x);
  args.expect(y.numel() == m * n, ErrorCode::Shape, "out must hold M·N elements");
  args.expect(ids.numel() == m, ErrorCode::Shape, "adapterIds must hold one id per row of x");
  args.expect(scales.numel() == l && (!ranks.data || ranks.numel() == l), ErrorCode::Shape, "scales and ranks must be [L]");
  args.expect(!bias.data || bias.numel() == n, ErrorCode::Shape, "bias must be [N]");

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
  p.small_args_on_host = small_args_on_host;
  p.y = y.data; p.y_stride = n;
  const Device device = x.device;
  return args.run(device, [p, device] { lora_forward_multi(p, device); });
}

}  // namespace

void register_lora_multi(Napi::Env env, Napi::Object exports) { export_op(env, exports, "loraForwardMulti", forward_multi_entry); }

}  // namespace lk::binding
