// quant.matmul and its backward on CUDA (the math: csrc/ops/quant_matmul.h): a linear layer on a
// quantized base weight (NF4 / ternary) plus a gated low-rank correction, with one pass over the
// packed weight, which is never dequantized to memory — except on sm_90a, where the plain wgmma
// mainloop on a dequantized copy beats the dequantizing mma.sync one (prefill and gradInput;
// run_with_weight below).
//
// Forward, y = x·deq(W)ᵀ + bias + G·s·(x·Aᵀ)·Bᵀ (G: the scalar gate or the per-output gate):
//   * m ≤ 16 (decode): the GEMV family with a dequantizing W source (cuda/gemv.cuh): the shrink
//     T = s·G·x·Aᵀ, then one pass over the packed codes that adds T·(G ⊙ B)ᵀ in the same output pass.
//   * prefill: the GEMM engine (cuda/gemm.cuh), like lora.forward: the shrink T = s·x·Aᵀ (hi + lo for
//     16-bit dtypes), then one mainloop over [T | x]·[B | deq(W)]ᵀ in which W is a quantized B
//     operand (packed tiles through cp.async, dequantized into the tensor cores' tile), bias in the
//     epilogue. The gate of the low-rank term only: a scalar gate goes into T's alpha; a per-output
//     gate multiplies the accumulators per column when segment 0 (T·Bᵀ) is complete, before x·deq(W)
//     adds to them (Problem::acc_col_scale): exact (one float32 product per output, no rounded G·B
//     in the dtype, no second pass) and free (once per tile: 128·256 products against the tile's
//     128·256·K multiply-adds).
// Backward (frozen W; T = x·Aᵀ, g = grad_output, s = scale), five engine products and two small
// kernels:
//   1. T = x·Aᵀ [m, r] (hi + lo)
//   2. dT = s·(G ⊙ g)·B [m, r] (hi + lo): the per-output gate goes into B's rows (G ⊙ B, kept as
//      hi + lo for 16-bit dtypes: a second pass over g instead of G rounded into B); a scalar gate
//      into alpha.
//   3. U = s·gᵀ·T [n, r] in float32, then one thread per output n: gradB[n, ·] = G[n]·U[n, ·] and
//      gradGate[n] = Σ_j B[n, j]·U[n, j] (= Σ_i g[i, n]·s·(T·Bᵀ)[i, n]; summed over n in a fixed
//      order for a scalar gate): T·Bᵀ [m, n] is never formed.
//   4. gradA = dTᵀ·x [r, k] (split-K over m)
//   5. gradInput = dT·A + g·deq(W) [m, k]: one mainloop over [dT | g]·[A | deq(W)], W an MN-major
//      quantized B operand.
// A double-quantized absmax is expanded to float32 once per call for the engine (nblocks floats:
// 1 MiB for 4096² at block 64, ~1 µs of a prefill that takes ~0.2 ms); the decode GEMV decodes it
// inline, where that pass would cost as much as the GEMV itself.
//
// Napkin math (M = K = N = 4096, r = 16, bf16, H200): the prefill mainloop is 137 GFLOP like
// lora.forward's, reading 8 MiB of codes + 1 MiB of absmax instead of 32 MiB of bf16 W; its
// dequantization is hidden behind the mma.sync stream except for shared-memory bandwidth (see
// cuda/gemm_kernels.cuh: ~1.15× the plain tile), within the issue's 1.25× of lora.forward.
#include <climits>
#include <memory>
#include <string>

#include "common.cuh"
#include "gemm.cuh"
#include "gemv.cuh"
#include "lora_linear.cuh"
#include "quant_decode.cuh"
#include "quant_matmul.cuh"

namespace lk::cuda_ops {
namespace {

constexpr int kThreads = 256;

// absmax[i] of a double-quantized NF4 weight as float32 (the engine reads float32 absmax).
__global__ void __launch_bounds__(kThreads) expand_absmax_kernel(QuantWeight q, long long blocks, float* out) {
#if defined(SIMT_DEVICE_PATH)
  const long long i = static_cast<long long>(blockIdx.x) * kThreads + threadIdx.x;
  if (i < blocks) out[i] = quant::block_absmax(q, i);
#endif
}

// b_hi (+ b_lo) = gate[n]·B[n, ·], rounded to the dtype (lo: the residual, rounded).
template <class E>
__global__ void __launch_bounds__(kThreads) gate_rows_kernel(const void* b, long long b_stride, const float* gate, long long n,
                                                             long long r, void* out_hi, void* out_lo, long long out_stride) {
#if defined(SIMT_DEVICE_PATH)
  using S = typename E::storage;
  const long long e = static_cast<long long>(blockIdx.x) * kThreads + threadIdx.x;
  if (e >= n * r) return;
  const long long row = e / r, j = e % r;
  const float v = gate[row] * E::to_float(static_cast<const S*>(b)[row * b_stride + j]);
  const S hi = E::from_float(v);
  static_cast<S*>(out_hi)[row * out_stride + j] = hi;
  if (out_lo) static_cast<S*>(out_lo)[row * out_stride + j] = E::from_float(v - E::to_float(hi));
#endif
}

// One thread per output n: gradB[n, j] = G[n]·U[n, j] (the dtype) and Σ_j B[n, j]·U[n, j], j
// ascending, into gate_sums[n] (gradGate itself for a per-output gate).
template <class E>
__global__ void __launch_bounds__(kThreads) low_rank_grads_kernel(const float* u, long long n, long long r, const void* b,
                                                                  long long b_stride, float gate, const float* gate_per_output,
                                                                  void* grad_b, long long grad_b_stride, float* gate_sums) {
#if defined(SIMT_DEVICE_PATH)
  using S = typename E::storage;
  const long long row = static_cast<long long>(blockIdx.x) * kThreads + threadIdx.x;
  if (row >= n) return;
  const float g = gate_per_output ? gate_per_output[row] : gate;
  float sum = 0.f;
  for (long long j = 0; j < r; ++j) {
    const float uj = u[row * r + j];
    static_cast<S*>(grad_b)[row * grad_b_stride + j] = E::from_float(g * uj);
    sum = fmaf(E::to_float(static_cast<const S*>(b)[row * b_stride + j]), uj, sum);
  }
  if (gate_sums) gate_sums[row] = sum;
#endif
}

// The scalar gate's gradient: Σ_n sums[n] in a fixed order (thread t adds n ≡ t mod 256
// ascending, then a tree over the 256 partial sums): deterministic, one block.
__global__ void __launch_bounds__(kThreads) sum_kernel(const float* sums, long long n, float* out) {
#if defined(SIMT_DEVICE_PATH)
  __shared__ float part[kThreads];
  float s = 0.f;
  for (long long i = threadIdx.x; i < n; i += kThreads) s += sums[i];
  part[threadIdx.x] = s;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (static_cast<int>(threadIdx.x) < half) part[threadIdx.x] += part[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) *out = part[0];
#endif
}


// The weight as the engine reads it: a double-quantized absmax expanded into `scratch`.
QuantWeight engine_weight(const QuantWeight& w, int device, std::unique_ptr<DeviceScratch>& scratch, cudaStream_t st) {
  if (w.format != QuantFormat::Nf4 || w.absmax) return w;
  const long long blocks = nf4::blocks(w.n * w.k, w.block_size);
  scratch = std::make_unique<DeviceScratch>(device, static_cast<size_t>(blocks) * sizeof(float));
  simt_launch(expand_absmax_kernel, grid_for(blocks, kThreads, "quant.matmul"), dim3(kThreads), 0, st, w, blocks, scratch->as<float>());
  LK_CUDA_CHECK_LAUNCH("expand_absmax_kernel launch");
  QuantWeight e = w;
  e.absmax = scratch->as<float>();
  note_plan("expand nested absmax");
  return e;
}

// q plus a last segment act·deq(W)ᵀ (K-major B: the forward, k_len = W's k) or act·deq(W)
// (MN-major B: gradInput, k_len = W's n), act [q.m, k_len] with rows act_stride apart.
// Where wgmma would take the plain product (sm_90a), W is dequantized once into a [n, k] scratch
// in the dtype (rows padded to 8 elements, TMA's 16 bytes) and the product runs on the wgmma
// mainloop: the same values (each weight rounded once to the dtype), through TMA, which cannot
// decode. Napkin math (K = N = 4096, bf16, H200): the scratch is written once and read at least
// once, ~2·32 MiB ≈ 15 µs at ~4.5 TB/s, against 2·M·16.8 MFLOP ≈ 48 µs per 1000 rows at ~700
// TFLOP/s: +30% at M = 512, +4% at M = 4096, where the dequantizing mma.sync mainloop runs at
// roughly 0.6 of wgmma's rate. Elsewhere W is the engine's dequantizing B operand (packed tiles).
void run_with_weight(gemm::Problem q, const QuantWeight& w, const void* act, long long act_stride, int k_len, int device, cudaStream_t st) {
  const long long deq_stride = (w.k + 7) / 8 * 8;
  gemm::Segment& weight = q.seg[q.num_segments++];
  weight = {act, nullptr, act_stride, deq_stride, k_len, 0, q.m, INT_MAX, false};
  if (gemm::runs_on_wgmma(q, device)) {
    DeviceScratch deq(device, static_cast<size_t>(w.n * deq_stride) * dtype_size(q.dtype));
    quant::enqueue_dequantize(w, q.dtype, deq.as<void>(), deq_stride, st);
    note_plan(std::string("dequantize ") + (w.format == QuantFormat::Nf4 ? "nf4" : "ternary"));
    weight.b = deq.as<void>();
    return gemm::run(q, device, st);
  }
  std::unique_ptr<DeviceScratch> absmax;
  q.quant = engine_weight(w, device, absmax, st);
  weight.b_stride = 0;
  weight.quant_b = true;
  gemm::run(q, device, st);
}

// m ≤ 16: the shrink T = s·G·x·Aᵀ (a scalar gate folded into its scale), then one GEMV pass over
// the packed codes that adds T·(G ⊙ B)ᵀ (a per-output gate) and the bias as it stores y.
void quant_matmul_decode(const QuantMatmulParams& p, int device, cudaStream_t st) {
  const bool per_output = p.r > 0 && p.gate_per_output;
  GemvParams g;
  g.dtype = p.dtype;
  g.m = p.m;
  g.k = p.weight.k;
  g.n = p.weight.n;
  g.x = p.x;
  g.x_stride = p.x_stride;
  g.w_quant = &p.weight;
  g.bias = p.bias;
  g.bias_f32 = p.bias_f32;
  g.y = p.y;
  g.y_stride = p.y_stride;
  g.b = p.b;
  g.b_stride = p.b_stride;
  g.low_rank_scale = per_output ? p.gate_per_output : nullptr;
  GemvShrinkParams s;
  s.r_max = p.r;
  s.a = p.a;
  s.a_stride = p.a_stride;
  s.scale = per_output ? p.scale : p.scale * p.gate;
  gemv_low_rank(g, s, device, st);
}

}  // namespace

void quant_matmul(const QuantMatmulParams& p, int device) {
  if (p.m == 0) return;
  const cudaStream_t st = begin_op(device, "quant.matmul");
  if (p.m <= kGemvMaxRows) return quant_matmul_decode(p, device, st);
  const QuantWeight& w = p.weight;
  check_engine_sizes("quant.matmul", p.m, w.k, w.n, p.r);
  const bool per_output = p.r > 0 && p.gate_per_output;
  const int m = static_cast<int>(p.m), k = static_cast<int>(w.k), n = static_cast<int>(w.n), r = static_cast<int>(p.r);

  gemm::Problem main;
  main.dtype = p.dtype;
  main.m = m;
  main.n = n;
  main.what = "quant.matmul";
  const long long t_stride = low_rank_stride(p.dtype, r);
  const size_t t_elems = static_cast<size_t>(m) * t_stride, es = dtype_size(p.dtype);
  const int t_parts = split_low_rank(p.dtype) ? 2 : 1;
  DeviceScratch scratch(device, r > 0 ? t_parts * t_elems * es : 0);
  if (r > 0) {
    void* t = scratch.as<void>();
    void* t_lo = t_parts == 2 ? scratch.as<unsigned char>() + t_elems * es : nullptr;
    gemm::Problem shrink;
    shrink.dtype = p.dtype;
    shrink.m = m;
    shrink.n = r;
    shrink.seg[0] = {p.x, p.a, p.x_stride, p.a_stride, k, 0, m, INT_MAX, false};
    shrink.num_segments = 1;
    shrink.epi.alpha = per_output ? p.scale : p.scale * p.gate;
    shrink.epi.out = t;
    shrink.epi.out_lo = t_lo;
    shrink.epi.out_stride = t_stride;
    shrink.what = "quant.matmul";
    gemm::run(shrink, device, st);
    main.seg[main.num_segments++] = {t, p.b, t_stride, p.b_stride, r, 0, m, INT_MAX, false, t_lo};
    main.acc_col_scale = per_output ? p.gate_per_output : nullptr;
  }
  main.epi.bias = p.bias;
  main.epi.bias_f32 = p.bias_f32;
  main.epi.out = p.y;
  main.epi.out_stride = p.y_stride;
  run_with_weight(main, w, p.x, p.x_stride, k, device, st);
}

void quant_matmul_backward(const QuantMatmulBackwardParams& p, int device) {
  const cudaStream_t st = begin_op(device, "quant.matmulBackward");
  const QuantWeight& w = p.weight;
  check_engine_sizes("quant.matmulBackward", p.m, w.k, w.n, p.r);
  const int m = static_cast<int>(p.m), k = static_cast<int>(w.k), n = static_cast<int>(w.n), r = static_cast<int>(p.r);
  const bool per_output = p.gate_per_output != nullptr;
  const size_t es = dtype_size(p.dtype);
  const long long lr_stride = low_rank_stride(p.dtype, r);
  const size_t lr_elems = static_cast<size_t>(m) * lr_stride, gb_elems = per_output ? static_cast<size_t>(n) * lr_stride : 0;
  const int parts = split_low_rank(p.dtype) ? 2 : 1;  // hi (+ lo)
  // T, dT and G ⊙ B in the dtype (hi, lo), then U and the per-output gate sums in float32.
  const size_t dtype_bytes = (2 * lr_elems + gb_elems) * parts * es;
  const size_t u_floats = static_cast<size_t>(n) * r, sums_floats = per_output ? 0 : static_cast<size_t>(n);
  DeviceScratch scratch(device, ceil_div<size_t>(dtype_bytes, 16) * 16 + (u_floats + sums_floats) * sizeof(float));
  unsigned char* base = scratch.as<unsigned char>();
  void* t = base;
  void* t_lo = parts == 2 ? base + lr_elems * es : nullptr;
  void* dt = base + parts * lr_elems * es;
  void* dt_lo = parts == 2 ? base + 3 * lr_elems * es : nullptr;
  void* gb = base + 2 * parts * lr_elems * es;
  void* gb_lo = parts == 2 ? base + (4 * lr_elems + gb_elems) * es : nullptr;
  float* u = reinterpret_cast<float*>(base + ceil_div<size_t>(dtype_bytes, 16) * 16);
  float* gate_sums = per_output ? p.grad_gate : u + u_floats;

  using gemm::Layout;
  auto problem = [&](Layout la, Layout lb, int rows, int cols) {
    gemm::Problem q;
    q.dtype = p.dtype;
    q.a_layout = la;
    q.b_layout = lb;
    q.m = rows;
    q.n = cols;
    q.num_segments = 1;
    q.what = "quant.matmulBackward";
    return q;
  };
  if (r > 0 && m > 0) {
    // 1. T = x·Aᵀ
    gemm::Problem q = problem(Layout::KMajor, Layout::KMajor, m, r);
    q.seg[0] = {p.x, p.a, p.x_stride, p.a_stride, k, 0, m, INT_MAX, false};
    q.epi.out = t;
    q.epi.out_lo = t_lo;
    q.epi.out_stride = lr_stride;
    gemm::run(q, device, st);
    // 2. dT = s·(G ⊙ g)·B: B(j = rank, kk = output) = b[kk·b_stride + j], N-major
    const void* b = p.b;
    long long b_stride = p.b_stride;
    if (per_output) {
      with_element(p.dtype, "quant.matmulBackward", [&](auto e) {
        using E = decltype(e);
        simt_launch(gate_rows_kernel<E>, grid_for(static_cast<long long>(n) * r, kThreads, "quant.matmulBackward"), dim3(kThreads), 0, st, p.b, p.b_stride,
                    p.gate_per_output, static_cast<long long>(n), static_cast<long long>(r), gb, gb_lo, lr_stride);
        LK_CUDA_CHECK_LAUNCH("gate_rows_kernel launch");
      });
      b = gb;
      b_stride = lr_stride;
    }
    q = problem(Layout::KMajor, Layout::MNMajor, m, r);
    q.seg[0] = {p.grad_output, b, p.grad_output_stride, b_stride, n, 0, m, INT_MAX, false, nullptr, per_output ? gb_lo : nullptr};
    q.epi.alpha = per_output ? p.scale : p.scale * p.gate;
    q.epi.out = dt;
    q.epi.out_lo = dt_lo;
    q.epi.out_stride = lr_stride;
    gemm::run(q, device, st);
  }
  if (r > 0) {
    // 3. U = s·gᵀ·T over the m rows (zero for m = 0), then gradB and the gate's gradient
    gemm::Problem q = problem(Layout::MNMajor, Layout::MNMajor, n, r);
    q.seg[0] = {p.grad_output, t, p.grad_output_stride, lr_stride, m, 0, n, INT_MAX, false, nullptr, t_lo};
    q.epi.alpha = p.scale;
    q.epi.out = u;
    q.epi.out_f32 = true;
    q.epi.out_stride = r;
    gemm::run(q, device, st);
    with_element(p.dtype, "quant.matmulBackward", [&](auto e) {
      using E = decltype(e);
      simt_launch(low_rank_grads_kernel<E>, grid_for(n, kThreads, "quant.matmulBackward"), dim3(kThreads), 0, st, static_cast<const float*>(u), static_cast<long long>(n),
                  static_cast<long long>(r), p.b, p.b_stride, p.gate, p.gate_per_output, p.grad_b, p.grad_b_stride,
                  p.grad_gate ? gate_sums : nullptr);
      LK_CUDA_CHECK_LAUNCH("low_rank_grads_kernel launch");
    });
    if (p.grad_gate && !per_output) {
      simt_launch(sum_kernel, dim3(1), dim3(kThreads), 0, st, static_cast<const float*>(gate_sums), static_cast<long long>(n), p.grad_gate);
      LK_CUDA_CHECK_LAUNCH("sum_kernel launch");
    }
    // 4. gradA = dTᵀ·x over the m rows
    q = problem(Layout::MNMajor, Layout::MNMajor, r, k);
    q.seg[0] = {dt, p.x, lr_stride, p.x_stride, m, 0, r, INT_MAX, false, dt_lo};
    q.epi.out = p.grad_a;
    q.epi.out_stride = p.grad_a_stride;
    gemm::run(q, device, st);
  } else if (p.grad_gate) {
    LK_CUDA_CHECK(cudaMemsetAsync(p.grad_gate, 0, (per_output ? n : 1) * sizeof(float), st));
  }
  // 5. gradInput = dT·A + g·deq(W): A(c, j) = a[j·a_stride + c] and W(c, o) = w[o, c], both N-major
  if (p.grad_input && m > 0) {
    gemm::Problem q = problem(Layout::KMajor, Layout::MNMajor, m, k);
    q.num_segments = 0;
    if (r > 0) q.seg[q.num_segments++] = {dt, p.a, lr_stride, p.a_stride, r, 0, m, INT_MAX, false, dt_lo};
    q.epi.out = p.grad_input;
    q.epi.out_stride = p.grad_input_stride;
    run_with_weight(q, w, p.grad_output, p.grad_output_stride, n, device, st);
  }
}

}  // namespace lk::cuda_ops
