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

struct Reader {
  const Napi::Object& d;
  const char* op;
  KeepAlive& keep;
  DType dtype = DType::Float32;
  Device device;

  // `name` with exactly `numel` elements of `dt` on the op's device (an optional one may be absent).
  TensorArg part_of(const char* name, int64_t numel, DType dt, bool required = true) const {
    const TensorArg t = required ? tensor_arg(d, name, keep) : optional_tensor_arg(d, name, keep);
    if (t.data) expect_part(t, op, name, dt, numel, device);
    return t;
  }
  TensorArg part(const char* name, int64_t numel) const { return part_of(name, numel, dtype); }
};

// The forward's operands into p; returns q (for the backward's shapes).
void read_forward(const Reader& in, FlashLoraParams& p, TensorArg& q_out) {
  const char* op = in.op;
  const TensorArg q = tensor_arg(in.d, "q", in.keep);
  const TensorArg k = tensor_arg(in.d, "kBase", in.keep);
  expect(q.ndim() == 4 && k.ndim() == 4, ErrorCode::Shape, op, "q must be [B, Sq, Hq, D] and kBase [B, Sk, Hk, D]");
  p.dtype = q.dtype;
  p.batch = q.dim(0);
  p.seq_q = q.dim(1);
  p.heads_q = q.dim(2);
  p.head_dim = q.dim(3);
  p.seq_k = k.dim(1);
  p.heads_k = k.dim(2);
  expect(k.dim(0) == p.batch && k.dim(3) == p.head_dim, ErrorCode::Shape, op, "kBase must be [B, Sk, Hk, D] with B and D of q");
  expect(k.dtype == q.dtype && k.device.index == q.device.index, ErrorCode::DType, op, "kBase must have the dtype and device of q");
  Reader r = in;
  r.dtype = q.dtype;
  r.device = q.device;
  const int64_t kv_numel = p.batch * p.seq_k * p.heads_k * p.head_dim;
  const TensorArg v = r.part("vBase", kv_numel);
  p.q = view_of<AttnTensor>(q, p.seq_q, p.heads_q, p.head_dim);
  p.k_base = view_of<AttnTensor>(k, p.seq_k, p.heads_k, p.head_dim);
  p.v_base = view_of<AttnTensor>(v, p.seq_k, p.heads_k, p.head_dim);
  // A low-rank path (cache [B, Sk, r], factor [L, Hk, r, D]); returns its L, 0 when absent.
  auto low_rank = [&](const char* cache_name, const char* factor_name, int64_t& rank, AttnTensor& cache_view,
                      const void*& factor) -> int64_t {
    // Presence by the property, not the pointer: an empty batch's cache has no data.
    auto given = [&](const char* name) { return in.d.Has(name) && !in.d.Get(name).IsUndefined() && !in.d.Get(name).IsNull(); };
    expect(given(cache_name) == given(factor_name), ErrorCode::Argument, op, std::string(cache_name) + " and " + factor_name + " come together");
    if (!given(cache_name)) return 0;
    const TensorArg cache = tensor_arg(in.d, cache_name, in.keep);
    const TensorArg f = tensor_arg(in.d, factor_name, in.keep);
    expect(cache.ndim() == 3 && f.ndim() == 4 && f.dim(0) >= 1 && f.dim(1) == p.heads_k && f.dim(2) == cache.dim(2) &&
               f.dim(3) == p.head_dim,
           ErrorCode::Shape, op, std::string(cache_name) + " must be [B, Sk, r] and " + factor_name + " [L, Hk, r, D]");
    rank = cache.dim(2);
    expect_part(cache, op, cache_name, p.dtype, p.batch * p.seq_k * rank, q.device);
    expect_part(f, op, factor_name, p.dtype, f.numel(), q.device);
    cache_view = view_of<AttnTensor>(cache, p.seq_k, 1, rank);
    factor = f.data;
    return f.dim(0);
  };
  const int64_t adapters_v = low_rank("vLowRank", "vLoraB", p.v_rank, p.v_low_rank, p.v_lora_b);
  const int64_t adapters_k = low_rank("kLowRank", "kLoraB", p.k_rank, p.k_low_rank, p.k_lora_b);
  expect(!adapters_v || !adapters_k || adapters_v == adapters_k, ErrorCode::Shape, op, "kLoraB and vLoraB must have the same L");
  p.adapters = std::max<int64_t>({adapters_v, adapters_k, 1});
  const TensorArg ids = r.part_of("adapterIds", p.batch, DType::Int32, false);
  p.adapter_ids = static_cast<const int32_t*>(ids.data);
  p.causal = bool_arg(in.d, "causal", false);
  p.softmax_scale = static_cast<float>(number_arg(in.d, "softmaxScale", 0));
  p.out = view_of<AttnOutTensor>(r.part("out", q.numel()), p.seq_q, p.heads_q, p.head_dim);
  p.lse = static_cast<float*>(r.part_of("lse", p.batch * p.heads_q * p.seq_q, DType::Float32).data);
  q_out = q;
}

Napi::Value forward_entry(const Napi::CallbackInfo& info, bool async) {
  const char* op = async ? "attention.flashLoraAsync" : "attention.flashLora";
  return guarded(info.Env(), [&]() -> Napi::Value {
    const Napi::Object d = descriptor(info, op);
    KeepAlive keep;
    FlashLoraParams p;
    TensorArg q;
    read_forward(Reader{d, op, keep, DType::Float32, Device{}}, p, q);
    const Device device = q.device;
    return run(info.Env(), async, device, std::move(keep), [p, device] { flash_lora_forward(p, device); });
  });
}

Napi::Value backward_entry(const Napi::CallbackInfo& info, bool async) {
  const char* op = async ? "attention.flashLoraBackwardAsync" : "attention.flashLoraBackward";
  return guarded(info.Env(), [&]() -> Napi::Value {
    const Napi::Object d = descriptor(info, op);
    KeepAlive keep;
    FlashLoraBackwardParams p;
    TensorArg q;
    read_forward(Reader{d, op, keep, DType::Float32, Device{}}, p.fwd, q);
    const FlashLoraParams& f = p.fwd;
    Reader r{d, op, keep, f.dtype, q.device};
    const int64_t kv_numel = f.batch * f.seq_k * f.heads_k * f.head_dim;
    p.grad_out = view_of<AttnTensor>(r.part("gradOut", q.numel()), f.seq_q, f.heads_q, f.head_dim);
    p.grad_q = view_of<AttnOutTensor>(r.part("gradQ", q.numel()), f.seq_q, f.heads_q, f.head_dim);
    p.grad_k_base = view_of<AttnOutTensor>(r.part("gradKBase", kv_numel), f.seq_k, f.heads_k, f.head_dim);
    p.grad_v_base = view_of<AttnOutTensor>(r.part("gradVBase", kv_numel), f.seq_k, f.heads_k, f.head_dim);
    const int64_t factor_numel = f.adapters * f.heads_k * f.head_dim;
    if (f.v_rank > 0) {
      p.grad_v_low_rank = view_of<AttnOutTensor>(r.part("gradVLowRank", f.batch * f.seq_k * f.v_rank), f.seq_k, 1, f.v_rank);
      p.grad_v_lora_b = r.part("gradVLoraB", factor_numel * f.v_rank).data;
    }
    if (f.k_rank > 0) {
      p.grad_k_low_rank = view_of<AttnOutTensor>(r.part("gradKLowRank", f.batch * f.seq_k * f.k_rank), f.seq_k, 1, f.k_rank);
      p.grad_k_lora_b = r.part("gradKLoraB", factor_numel * f.k_rank).data;
    }
    const Device device = q.device;
    return run(info.Env(), async, device, std::move(keep), [p, device] { flash_lora_backward(p, device); });
  });
}

}  // namespace

void register_flash_lora(Napi::Env env, Napi::Object exports) {
  exports.Set("flashLora", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return forward_entry(info, false); }));
  exports.Set("flashLoraAsync", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return forward_entry(info, true); }));
  exports.Set("flashLoraBackward", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return backward_entry(info, false); }));
  exports.Set("flashLoraBackwardAsync", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return backward_entry(info, true); }));
}

}  // namespace lk::binding
