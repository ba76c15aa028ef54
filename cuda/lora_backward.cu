// LoRA backward on CUDA for a frozen weight (see LoraBackwardParams in ops/lora_linear.h), as five
// products on the GEMM engine (cuda/gemm.cuh). With g = grad_output [m, n], xm = x ⊙ mask:
//   1. T  = xm·Aᵀ               [m, r]  skinny (n = r), A and B K-major
//   2. dT = scale·g·B           [m, r]  skinny; B [n, r] is read N-major (ldmatrix.trans)
//   3. gradB = scale·gᵀ·T       [n, r]  both operands MN-major; the reduction runs over the m rows,
//   4. gradA = dTᵀ·xm           [r, k]  so these two are split over K (split-K) with float32 partials
//                                        summed in split order: deterministic
//   5. gradInput = mask ⊙ (dT·A) + g·W   [m, k]: one mainloop over [dT | g]·[A | W] with both right
//      operands read N-major; the mask multiplies the accumulators between the two segments.
// T and dT live in scratch in the dtype (float32 for float32), rows padded to 16 bytes; for float16
// and bfloat16 as hi + lo pairs (cuda/gemm.cuh), so that gradA, gradB and the low-rank term of
// gradInput keep ~float32 accuracy (torch's autograd rounds them to the dtype); the products that
// read them run their segment twice, which costs one more pass over g (gradB) and xm (gradA).
//
// Napkin math (m = K = N = 4096, r = 16, bf16, H200): step 5 is 137 GFLOP (~0.2 ms at ~700
// TFLOP/s on wgmma, ~0.35 ms on mma.sync), steps 1–4 are 0.5 GFLOP each but each reads g or x once
// (32 MiB, ~8 µs at ~4 TB/s). torch's autograd runs the same five products (0.34 ms).
#include <climits>

#include "common.cuh"
#include "gemm.cuh"
#include "lora_backward.cuh"
#include "lora_linear.cuh"

namespace lk::cuda_ops {

void lora_backward(const LoraBackwardParams& p, int device) {
  const cudaStream_t st = begin_op(device, "lora.backward");
  check_engine_sizes("lora.backward", p.m, p.k, p.n, p.r);
  const int m = static_cast<int>(p.m), k = static_cast<int>(p.k), n = static_cast<int>(p.n), r = static_cast<int>(p.r);
  const size_t es = dtype_size(p.dtype);
  const long long lr_stride = low_rank_stride(p.dtype, r);
  const size_t lr_elems = static_cast<size_t>(m) * lr_stride;
  const int parts = split_low_rank(p.dtype) ? 2 : 1;  // hi (+ lo)
  DeviceScratch scratch(device, (2 * parts * lr_elems + (p.dropout_mask ? static_cast<size_t>(m) * k : 0)) * es);
  unsigned char* base = scratch.as<unsigned char>();
  void* t = base;
  void* dt = base + parts * lr_elems * es;
  void* t_lo = parts == 2 ? base + lr_elems * es : nullptr;
  void* dt_lo = parts == 2 ? base + 3 * lr_elems * es : nullptr;
  const void* xm = p.x;
  long long xm_stride = p.x_stride;
  if (p.dropout_mask && m > 0) {
    void* masked = base + 2 * parts * lr_elems * es;
    masked_copy(p.dtype, p.x, p.x_stride, p.dropout_mask, p.mask_stride, masked, m, k, st);
    xm = masked;
    xm_stride = k;
  }
  using gemm::Layout;
  auto problem = [&](Layout la, Layout lb, int rows, int cols) {
    gemm::Problem q;
    q.dtype = p.dtype;
    q.a_layout = la;
    q.b_layout = lb;
    q.m = rows;
    q.n = cols;
    q.num_segments = 1;
    q.what = "lora.backward";
    return q;
  };

  if (m > 0) {
    // 1. T = xm·Aᵀ
    gemm::Problem q = problem(Layout::KMajor, Layout::KMajor, m, r);
    q.seg[0] = {xm, p.a, xm_stride, p.a_stride, k, 0, m, INT_MAX, false};
    q.epi.out = t;
    q.epi.out_lo = t_lo;
    q.epi.out_stride = lr_stride;
    gemm::run(q, device, st);
    // 2. dT = scale·g·B: B(j = rank, k = output feature) is b[k·b_stride + j]: N-major
    q = problem(Layout::KMajor, Layout::MNMajor, m, r);
    q.seg[0] = {p.grad_output, p.b, p.grad_output_stride, p.b_stride, n, 0, m, INT_MAX, false};
    q.epi.alpha = p.scale;
    q.epi.out = dt;
    q.epi.out_lo = dt_lo;
    q.epi.out_stride = lr_stride;
    gemm::run(q, device, st);
  }
  // 3. gradB = scale·gᵀ·T over the m rows (zero when m = 0: the epilogue stores the empty sum)
  gemm::Problem q = problem(Layout::MNMajor, Layout::MNMajor, n, r);
  q.seg[0] = {p.grad_output, t, p.grad_output_stride, lr_stride, m, 0, n, INT_MAX, false, nullptr, t_lo};
  q.epi.alpha = p.scale;
  q.epi.out = p.grad_b;
  q.epi.out_stride = p.grad_b_stride;
  gemm::run(q, device, st);
  // 4. gradA = dTᵀ·xm over the m rows
  q = problem(Layout::MNMajor, Layout::MNMajor, r, k);
  q.seg[0] = {dt, xm, lr_stride, xm_stride, m, 0, r, INT_MAX, false, dt_lo};
  q.epi.out = p.grad_a;
  q.epi.out_stride = p.grad_a_stride;
  gemm::run(q, device, st);
  // 5. gradInput = mask ⊙ (dT·A) + g·W: A(c, j) = a[j·a_stride + c] and W(c, o) = w[o·w_stride + c], both N-major
  if (p.grad_input && m > 0) {
    q = problem(Layout::KMajor, Layout::MNMajor, m, k);
    q.seg[0] = {dt, p.a, lr_stride, p.a_stride, r, 0, m, INT_MAX, false, dt_lo};
    q.seg[1] = {p.grad_output, p.weight, p.grad_output_stride, p.weight_stride, n, 0, m, INT_MAX, false};
    q.num_segments = 2;
    q.acc_mask = p.dropout_mask;
    q.acc_mask_stride = p.mask_stride;
    q.epi.out = p.grad_input;
    q.epi.out_stride = p.grad_input_stride;
    gemm::run(q, device, st);
  }
}

}  // namespace lk::cuda_ops
