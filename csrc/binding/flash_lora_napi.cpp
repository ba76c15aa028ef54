// attention.flashLora / flashLoraBackward (+ Async): JS descriptors → FlashLoraParams /
// FlashLoraBackwardParams. The TypeScript layer (lib/ops/flash_lora.ts) validates for the user;
// this re-checks what memory safety needs: every tensor's shape against the sizes read from q and
// kBase, dtypes, and one device. The tensors come contiguous: their strides follow from the shapes.
#include <algorithm>
#include <string>

#include "common.h"
#include "ops/flash_lora.h"

namespace lk::binding {
namespace {

// A contiguous [B, S, H, W] tensor as the params' strided view.
template <class View>
View view_of(const TensorArg& t, int64_t seq, int64_t heads, int64_t width) {
  View v;
  v.data = t.data;
  v.head_stride = width;
  v.seq_stride = heads * width;
  v.batch_stride = seq * heads * width;
  return v;
}

// `name`, exactly `numel` elements of `dtype` on the device of q.
TensorArg part(const OpArgs& args, const char* name, DType dtype, int64_t numel, const TensorArg& q) {
  const TensorArg t = args.tensor(name);
  args.expect_part(t, dtype, numel, q);
  return t;
}

// The forward's operands into p; returns q (for the backward's shapes).
TensorArg read_forward(const OpArgs& args, FlashLoraParams& p) {
  const TensorArg q = args.tensor("q"), k = args.tensor("kBase");
  args.expect(q.ndim() == 4 && k.ndim() == 4, ErrorCode::Shape, "q must be [B, Sq, Hq, D] and kBase [B, Sk, Hk, D]");
  p.dtype = q.dtype;
  p.batch = q.dim(0);
  p.seq_q = q.dim(1);
  p.heads_q = q.dim(2);
  p.head_dim = q.dim(3);
  p.seq_k = k.dim(1);
  p.heads_k = k.dim(2);
  args.expect(k.dim(0) == p.batch && k.dim(3) == p.head_dim, ErrorCode::Shape, "kBase must be [B, Sk, Hk, D] with B and D of q");
  args.expect(k.dtype == q.dtype && k.device.index == q.device.index, ErrorCode::DType, "kBase must have the dtype and device of q");
  const int64_t kv_numel = p.batch * p.seq_k * p.heads_k * p.head_dim;
  const TensorArg v = part(args, "vBase", p.dtype, kv_numel, q);
  p.q = view_of<AttnTensor>(q, p.seq_q, p.heads_q, p.head_dim);
  p.k_base = view_of<AttnTensor>(k, p.seq_k, p.heads_k, p.head_dim);
  p.v_base = view_of<AttnTensor>(v, p.seq_k, p.heads_k, p.head_dim);
  // A low-rank path (cache [B, Sk, r], factor [L, Hk, r, D]); returns its L, 0 when absent.
  auto low_rank = [&](const char* cache_name, const char* factor_name, int64_t& rank, AttnTensor& cache_view,
                      const void*& factor) -> int64_t {
    // Presence by the property, not the pointer: an empty batch's cache has no data.
    args.expect(args.given(cache_name) == args.given(factor_name), ErrorCode::Argument,
                std::string(cache_name) + " and " + factor_name + " come together");
    if (!args.given(cache_name)) return 0;
    const TensorArg cache = args.tensor(cache_name), f = args.tensor(factor_name);
    args.expect(cache.ndim() == 3 && f.ndim() == 4 && f.dim(0) >= 1 && f.dim(1) == p.heads_k && f.dim(2) == cache.dim(2) &&
                    f.dim(3) == p.head_dim,
                ErrorCode::Shape, std::string(cache_name) + " must be [B, Sk, r] and " + factor_name + " [L, Hk, r, D]");
    rank = cache.dim(2);
    args.expect_part(cache, p.dtype, p.batch * p.seq_k * rank, q);
    args.expect_part(f, p.dtype, f.numel(), q);
    cache_view = view_of<AttnTensor>(cache, p.seq_k, 1, rank);
    factor = f.data;
    return f.dim(0);
  };
  const int64_t adapters_v = low_rank("vLowRank", "vLoraB", p.v_rank, p.v_low_rank, p.v_lora_b);
  const int64_t adapters_k = low_rank("kLowRank", "kLoraB", p.k_rank, p.k_low_rank, p.k_lora_b);
  args.expect(!adapters_v || !adapters_k || adapters_v == adapters_k, ErrorCode::Shape, "kLoraB and vLoraB must have the same L");
  p.adapters = std::max<int64_t>({adapters_v, adapters_k, 1});
  const TensorArg ids = args.optional_tensor("adapterIds");
  if (ids.data) args.expect_part(ids, DType::Int32, p.batch, q);
  p.adapter_ids = static_cast<const int32_t*>(ids.data);
  p.causal = args.boolean("causal", false);
  p.softmax_scale = static_cast<float>(args.number("softmaxScale", 0));
  p.out = view_of<AttnOutTensor>(part(args, "out", p.dtype, q.numel(), q), p.seq_q, p.heads_q, p.head_dim);
  p.lse = static_cast<float*>(part(args, "lse", DType::Float32, p.batch * p.heads_q * p.seq_q, q).data);
  return q;
}

Napi::Value forward_entry(const Napi::CallbackInfo& info, bool async) {
  OpArgs args(info, "attention.flashLora", async);
  FlashLoraParams p;
  const Device device = read_forward(args, p).device;
  return args.run(device, [p, device] { flash_lora_forward(p, device); });
}

Napi::Value backward_entry(const Napi::CallbackInfo& info, bool async) {
  OpArgs args(info, "attention.flashLoraBackward", async);
  FlashLoraBackwardParams p;
  const TensorArg q = read_forward(args, p.fwd);
  const FlashLoraParams& f = p.fwd;
  const int64_t kv_numel = f.batch * f.seq_k * f.heads_k * f.head_dim;
  p.grad_out = view_of<AttnTensor>(part(args, "gradOut", f.dtype, q.numel(), q), f.seq_q, f.heads_q, f.head_dim);
  p.grad_q = view_of<AttnOutTensor>(part(args, "gradQ", f.dtype, q.numel(), q), f.seq_q, f.heads_q, f.head_dim);
  p.grad_k_base = view_of<AttnOutTensor>(part(args, "gradKBase", f.dtype, kv_numel, q), f.seq_k, f.heads_k, f.head_dim);
  p.grad_v_base = view_of<AttnOutTensor>(part(args, "gradVBase", f.dtype, kv_numel, q), f.seq_k, f.heads_k, f.head_dim);
  const int64_t factor_numel = f.adapters * f.heads_k * f.head_dim;
  if (f.v_rank > 0) {
    p.grad_v_low_rank = view_of<AttnOutTensor>(part(args, "gradVLowRank", f.dtype, f.batch * f.seq_k * f.v_rank, q), f.seq_k, 1, f.v_rank);
    p.grad_v_lora_b = part(args, "gradVLoraB", f.dtype, factor_numel * f.v_rank, q).data;
  }
  if (f.k_rank > 0) {
    p.grad_k_low_rank = view_of<AttnOutTensor>(part(args, "gradKLowRank", f.dtype, f.batch * f.seq_k * f.k_rank, q), f.seq_k, 1, f.k_rank);
    p.grad_k_lora_b = part(args, "gradKLoraB", f.dtype, factor_numel * f.k_rank, q).data;
  }
  const Device device = q.device;
  return args.run(device, [p, device] { flash_lora_backward(p, device); });
}

}  // namespace

void register_flash_lora(Napi::Env env, Napi::Object exports) {
  export_op(env, exports, "flashLora", forward_entry);
  export_op(env, exports, "flashLoraBackward", backward_entry);
}

}  // namespace lk::binding
