// DoRA forward and backward: composed from the row-norm and column kernels (CPU or CUDA) and the
// fused LoRA ops, on the device where the operands live.
#include "dora.h"

#include <new>
#include <string>

#include "core/gpu.h"
#include "core/status.h"
#include "cpu/dispatch/kernels.h"
#if defined(LK_WITH_CUDA)
#include "cuda/dora.cuh"
#endif

namespace lk {
namespace {

void check_magnitude(const char* op, DType dtype, const void* magnitude, DType magnitude_dtype) {
  if (!magnitude) fail(op, ErrorCode::Argument, "magnitude must not be null");
  if (magnitude_dtype != DType::Float32 && magnitude_dtype != dtype)
    fail(op, ErrorCode::DType, std::string("magnitude must be float32 or ") + dtype_name(dtype) + ", got " +
                                   dtype_name(magnitude_dtype));
}

// Memory on the op's device for the duration of one call.
class Scratch {
 public:
  Scratch(Device device, size_t bytes) : device_(device) {
    bytes = bytes ? bytes : 1;
    ptr_ = device.is_cpu() ? ::operator new(bytes) : gpu::alloc(device.index, bytes);
  }
  ~Scratch() {
    if (device_.is_cpu()) ::operator delete(ptr_);
    else gpu::release(device_.index, ptr_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <class T>
  T* as() const { return static_cast<T*>(ptr_); }

 private:
  Device device_;
  void* ptr_ = nullptr;
};

void run_norms(const char* op, const DoraNormParams& p, Device device) {
  (void)op;  // names the op where CUDA is missing
  if (device.is_cpu()) return cpu::dora_norms(p);
#if defined(LK_WITH_CUDA)
  return cuda_ops::dora_norms(p, device.index);
#else
  fail(op, ErrorCode::Device, "CUDA support was not compiled into this binary");
#endif
}

void run_columns(const char* op, const DoraColumnParams& p, Device device) {
  (void)op;
  if (device.is_cpu()) return cpu::dora_columns(p);
#if defined(LK_WITH_CUDA)
  return cuda_ops::dora_columns(p, device.index);
#else
  fail(op, ErrorCode::Device, "CUDA support was not compiled into this binary");
#endif
}

// Params of type Dst holding the adapted layer of `s` (dtype, k, n, r, weight, a, b, scale).
template <class Dst, class Src>
Dst with_layer(const Src& s) {
  Dst d;
  d.dtype = s.dtype;
  d.k = s.k;
  d.n = s.n;
  d.r = s.r;
  d.weight = s.weight;
  d.weight_stride = s.weight_stride;
  d.a = s.a;
  d.a_stride = s.a_stride;
  d.b = s.b;
  d.b_stride = s.b_stride;
  d.scale = s.scale;
  return d;
}

// The norm pass shared by forward and backward: writes column_scale (and norm when non-null).
template <class P>
void norms_for(const char* op, const P& p, const void* magnitude, DType magnitude_dtype, float* norm, float* column_scale,
               Device device) {
  DoraNormParams n = with_layer<DoraNormParams>(p);
  n.magnitude = magnitude;
  n.magnitude_dtype = magnitude_dtype;
  n.norm = norm;
  n.column_scale = column_scale;
  run_norms(op, n, device);
}

}  // namespace

void dora_forward(const DoraForwardParams& p, Device device) {
  constexpr const char* op = "lora.doraForward";
  const LoraForwardParams& f = p.lora;
  if (f.r < 1 || !f.a || !f.b) fail(op, ErrorCode::Argument, "DoRA needs a and b (r ≥ 1)");
  if (f.column_scale) fail(op, ErrorCode::Argument, "column_scale is set by the op and must be null");
  check_magnitude(op, f.dtype, p.magnitude, p.magnitude_dtype);
  if (f.m == 0) return lora_forward(f, device);  // checks the rest; nothing to write
  Scratch column_scale(device, static_cast<size_t>(f.n) * sizeof(float));
  norms_for(op, f, p.magnitude, p.magnitude_dtype, nullptr, column_scale.as<float>(), device);
  LoraForwardParams scaled = f;
  scaled.column_scale = column_scale.as<float>();
  lora_forward(scaled, device);
}

void dora_backward(const DoraBackwardParams& p, Device device) {
  constexpr const char* op = "lora.doraBackward";
  const LoraBackwardParams& g = p.lora;
  if (g.r < 1 || !g.a || !g.b) fail(op, ErrorCode::Argument, "DoRA needs a and b (r ≥ 1)");
  if (g.dropout_mask) fail(op, ErrorCode::Argument, "dropoutMask is not supported by DoRA");
  if (!g.grad_a || !g.grad_b || !p.grad_magnitude) fail(op, ErrorCode::Argument, "gradA, gradB and gradMagnitude must not be null");
  check_magnitude(op, g.dtype, p.magnitude, p.magnitude_dtype);
  if (g.m > 0 && (!g.grad_output || !g.x)) fail(op, ErrorCode::Argument, "gradOutput and x must not be null");
  if (g.grad_output_stride < g.n) fail(op, ErrorCode::Argument, "gradOutput row stride must cover a row");

  Scratch per_column(device, 2 * static_cast<size_t>(g.n) * sizeof(float));
  float* norm = per_column.as<float>();
  float* column_scale = norm + g.n;
  norms_for(op, g, p.magnitude, p.magnitude_dtype, norm, column_scale, device);

  // z = x·Wᵀ + s·T·Bᵀ by the fused forward, and g' = g ⊙ (m / norm), both [m, n] in the dtype.
  const size_t plane = static_cast<size_t>(g.m) * static_cast<size_t>(g.n) * dtype_size(g.dtype);
  Scratch z_and_scaled(device, 2 * plane);
  void* z = z_and_scaled.as<unsigned char>();
  void* scaled = z_and_scaled.as<unsigned char>() + plane;
  LoraForwardParams f = with_layer<LoraForwardParams>(g);
  f.m = g.m;
  f.x = g.x;
  f.x_stride = g.x_stride;
  f.y = z;
  f.y_stride = g.n;
  lora_forward(f, device);

  DoraColumnParams c;
  c.dtype = g.dtype;
  c.m = g.m;
  c.n = g.n;
  c.grad_output = g.grad_output;
  c.grad_output_stride = g.grad_output_stride;
  c.z = z;
  c.z_stride = g.n;
  c.norm = norm;
  c.column_scale = column_scale;
  c.scaled_grad = scaled;
  c.scaled_grad_stride = g.n;
  c.grad_magnitude = p.grad_magnitude;
  c.magnitude_dtype = p.magnitude_dtype;
  run_columns(op, c, device);

  LoraBackwardParams lb = g;
  lb.grad_output = scaled;
  lb.grad_output_stride = g.n;
  lora_backward(lb, device);
}

}  // namespace lk
