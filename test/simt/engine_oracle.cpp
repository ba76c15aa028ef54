// Standalone oracle for the CUDA GEMM engine on the SIMT emulator (no node, no GPU).
//
// scripts/mutants.mjs compiles this file with g++ together with cuda/*.cu against csrc/simt, once
// with the real engine and once per mutant of it (cuda/gemm_kernels.cuh copied and changed), and
// runs it once per SIMT_EMU_SCHED. Every case goes through the ops' CUDA entries (lora_forward,
// lora_backward, dora_norms, flash_lora_forward) or gemm::run itself (per-tile segment lists, a quantized B), and is
// compared with a float64 reference on the same dtype-rounded inputs; outputs are poisoned with NaN
// first and row padding must stay untouched. Exit status: 0 all cases match, 1 a mismatch, 2 an lk::Error.
//
// With SIMT_EMU_WORKERS=2 (the emulated device then reports 2 SMs, which decides tiles and splits)
// the cases cover: the 128×256, 128×128, 64×64 and 128×32 mma.sync tiles, K-major and MN-major
// operands, split-K, the hi + lo low-rank activations, the mask between segments, TF32, the FMA
// mainloop, the row-norm epilogue, per-tile segment lists with gathered rows, K edges inside a
// k-tile, rows that are not 16-byte aligned, padded row strides, and an NF4 / ternary B (K-major and
// MN-major; codes staged by cp.async or read element by element; mma.sync and FMA).
// With SIMT_EMU_CC=9.0 it runs the Hopper cases instead: the wgmma mainloop (cuda/gemm_wgmma.cu) on
// both of its tiles (128×256, 4 stages; 128×128, 6 stages) with more k-tiles than stages (every
// stage is refilled), the hi + lo low-rank segment, and an MN-major B (gradInput, with and without
// the dropout mask between its segments); and Flash-LoRA-Attention's forward on its wgmma kernel
// (cuda/flash_lora_wgmma.cu: D 64 and 128, RB 16 and 64, causal, a sequence without adapter,
// partial last key tile, more key tiles than stages, one and two consumers' rows).
//
// Build by hand (scripts/mutants.mjs adds ASan + UBSan and -O1):
//   g++ -std=c++17 -Icsrc -Icuda -isystem /usr/local/cuda/include -Wno-unknown-pragmas
//       -x c++ cuda/*.cu -x none test/simt/engine_oracle.cpp -lboost_context -pthread
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "core/gpu.h"
#include "core/half.h"
#include "common.cuh"
#include "core/status.h"
#include "dora.cuh"
#include "flash_lora.cuh"
#include "formats/nf4.h"
#include "formats/ternary.h"
#include "gemm.cuh"
#include "lora_backward.cuh"
#include "lora_linear.cuh"
#include "ops/quant.h"
#include "simt/simt.h"

namespace {

using lk::DType;

uint64_t rng_state = 0x243F6A8885A308D3ull;
double uniform() {  // xorshift64*, in [-1, 1)
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return static_cast<double>((rng_state * 0x2545F4914F6CDD1Dull) >> 11) / 4503599627370496.0 - 1.0;
}
double dropout() { return uniform() < -0.5 ? 0.0 : 4.0 / 3.0; }

size_t elem_size(DType d) { return d == DType::Float32 ? 4 : 2; }

void store(DType d, unsigned char* p, float v) {
  if (d == DType::Float32) std::memcpy(p, &v, 4);
  else {
    const uint16_t h = d == DType::Float16 ? lk::float_to_fp16(v) : lk::float_to_bf16(v);
    std::memcpy(p, &h, 2);
  }
}
double load(DType d, const unsigned char* p) {
  if (d == DType::Float32) {
    float v;
    std::memcpy(&v, p, 4);
    return v;
  }
  uint16_t h;
  std::memcpy(&h, p, 2);
  return d == DType::Float16 ? lk::fp16_to_float(h) : lk::bf16_to_float(h);
}

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "oracle: %s failed: %s\n", what, cudaGetErrorString(e));
    std::exit(2);
  }
}

// A matrix on the device in the dtype's storage (row stride = cols + pad; the padding holds a huge
// value, so a kernel that reads it makes the result wrong) and the exact value of each element.
struct Mat {
  DType dtype = DType::Float32;
  long long rows = 0, cols = 0, stride = 0;
  std::vector<double> value;  // rows × cols, no padding
  void* dev = nullptr;
  size_t bytes = 0;
  double operator()(long long i, long long j) const { return value[static_cast<size_t>(i * cols + j)]; }
};

Mat make(DType d, long long rows, long long cols, long long pad, const std::function<double()>& gen) {
  Mat h;
  h.dtype = d;
  h.rows = rows;
  h.cols = cols;
  h.stride = cols + pad;
  const size_t es = elem_size(d);
  // Exact size: the last row has no padding, so reading past it leaves the allocation (ASan).
  const long long elems = rows ? (rows - 1) * h.stride + cols : 0;
  std::vector<unsigned char> bytes(static_cast<size_t>(elems) * es, 0);
  h.value.assign(static_cast<size_t>(rows * cols), 0.0);
  for (long long e = 0; e < elems; ++e) {
    const long long i = e / h.stride, j = e % h.stride;
    unsigned char* p = bytes.data() + static_cast<size_t>(e) * es;
    if (j >= cols) {
      store(d, p, 1.0e4f);
      continue;
    }
    store(d, p, static_cast<float>(gen()));
    h.value[static_cast<size_t>(i * cols + j)] = load(d, p);
  }
  h.bytes = bytes.size();
  check(cudaMalloc(&h.dev, h.bytes ? h.bytes : 1), "cudaMalloc");
  check(cudaMemcpy(h.dev, bytes.data(), h.bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
  return h;
}
Mat random_mat(DType d, long long rows, long long cols, long long pad = 0) { return make(d, rows, cols, pad, uniform); }

// An output: every byte 0xff (NaN in every float dtype), padding included.
Mat poisoned(DType d, long long rows, long long cols, long long pad = 0) {
  Mat h;
  h.dtype = d;
  h.rows = rows;
  h.cols = cols;
  h.stride = cols + pad;
  h.bytes = static_cast<size_t>(rows ? (rows - 1) * h.stride + cols : 0) * elem_size(d);
  check(cudaMalloc(&h.dev, h.bytes ? h.bytes : 1), "cudaMalloc");
  check(cudaMemset(h.dev, 0xff, h.bytes), "cudaMemset");
  return h;
}

// Compares out with ref (row-major rows × cols) element by element: |got − ref| ≤ tol(i, j), and
// the padding of out must still be 0xff. Returns the number of wrong elements.
long long compare(const char* what, const Mat& out, const std::vector<double>& ref, const std::function<double(long long, long long)>& tol) {
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  std::vector<unsigned char> bytes(out.bytes);
  check(cudaMemcpy(bytes.data(), out.dev, out.bytes, cudaMemcpyDeviceToHost), "cudaMemcpy");
  const size_t es = elem_size(out.dtype);
  long long bad = 0;
  for (long long i = 0; i < out.rows; ++i)
    for (long long j = 0; j < out.stride && static_cast<size_t>((i * out.stride + j + 1) * es) <= bytes.size(); ++j) {
      const unsigned char* p = bytes.data() + static_cast<size_t>(i * out.stride + j) * es;
      if (j >= out.cols) {
        bool touched = false;
        for (size_t b = 0; b < es; ++b) touched |= p[b] != 0xff;
        if (touched && bad++ < 5) std::fprintf(stderr, "oracle: %s: padding [%lld, %lld] was written\n", what, i, j);
        continue;
      }
      const double got = load(out.dtype, p), want = ref[static_cast<size_t>(i * out.cols + j)], t = tol(i, j);
      if (!(std::fabs(got - want) <= t)) {
        if (bad < 5)
          std::fprintf(stderr, "oracle: %s[%lld, %lld] = %.9g, expected %.9g (|diff| %.3g > tol %.3g)\n", what, i, j, got, want,
                       std::fabs(got - want), t);
        ++bad;
      }
    }
  return bad;
}

// Tolerance of a float32-accumulated sum whose terms have absolute sum `mag` and value `ref`:
// accumulation (TF32: 10-bit mantissa inputs) plus the rounding of the output to the dtype; 16-bit
// low-rank activations add their hi + lo residual (2^-16 relative for bf16, 2^-22 for fp16).
double tolerance(DType d, bool tf32, long long terms, double mag, double ref) {
  const double acc = tf32 ? 3e-3 : 1e-5 * std::sqrt(static_cast<double>(terms) + 1.0) + (d == DType::BFloat16 ? 4e-5 : 0.0);
  const double out = d == DType::Float32 ? 0.0 : d == DType::Float16 ? 1.0 / 1024 : 1.0 / 128;
  return acc * mag + out * std::fabs(ref) + 1e-30;
}

[[noreturn]] void lk_error(const char* what, const lk::Error& e) {
  std::fprintf(stderr, "oracle: %s: lk::Error %s: %s\n", what, lk::error_code_name(e.code()), e.what());
  std::exit(2);
}

// ---- lora.forward ---------------------------------------------------------------------------------
struct ForwardCase {
  const char* name;
  DType dtype;
  long long m, k, n, r;
  bool bias, mask, tf32;
  long long pad;  // extra elements per row of x, the mask and y
};

long long forward_case(const ForwardCase& c) {
  const DType d = c.dtype;
  Mat x = random_mat(d, c.m, c.k, c.pad), w = random_mat(d, c.n, c.k), bias = random_mat(d, c.bias ? 1 : 0, c.n);
  Mat mask = make(d, c.mask ? c.m : 0, c.k, c.pad, dropout), a = random_mat(d, c.r, c.k), b = random_mat(d, c.r ? c.n : 0, c.r);
  Mat y = poisoned(d, c.m, c.n, c.pad);
  lk::LoraForwardParams p;
  p.dtype = d;
  p.m = c.m;
  p.k = c.k;
  p.n = c.n;
  p.r = c.r;
  p.x = x.dev;
  p.x_stride = x.stride;
  p.weight = w.dev;
  p.weight_stride = w.stride;
  p.bias = c.bias ? bias.dev : nullptr;
  p.a = c.r ? a.dev : nullptr;
  p.a_stride = a.stride;
  p.b = c.r ? b.dev : nullptr;
  p.b_stride = b.stride;
  p.dropout_mask = c.mask ? mask.dev : nullptr;
  p.mask_stride = mask.stride;
  p.scale = 0.75f;
  p.y = y.dev;
  p.y_stride = y.stride;
  p.allow_tf32 = c.tf32;
  try {
    lk::cuda_ops::lora_forward(p, 0);
  } catch (const lk::Error& e) {
    lk_error(c.name, e);
  }
  std::vector<double> ref(static_cast<size_t>(c.m * c.n)), mag(ref.size()), t(static_cast<size_t>(c.r)), t_abs(t.size());
  for (long long i = 0; i < c.m; ++i) {
    for (long long q = 0; q < c.r; ++q) {
      double s = 0, s_abs = 0;
      for (long long kk = 0; kk < c.k; ++kk) {
        const double v = x(i, kk) * (c.mask ? mask(i, kk) : 1.0) * a(q, kk);
        s += v;
        s_abs += std::fabs(v);
      }
      t[q] = p.scale * s;
      t_abs[q] = std::fabs(p.scale) * s_abs;
    }
    for (long long j = 0; j < c.n; ++j) {
      double s = c.bias ? bias(0, j) : 0, s_abs = c.bias ? std::fabs(bias(0, j)) : 0;
      for (long long kk = 0; kk < c.k; ++kk) {
        s += x(i, kk) * w(j, kk);
        s_abs += std::fabs(x(i, kk) * w(j, kk));
      }
      for (long long q = 0; q < c.r; ++q) {
        s += t[q] * b(j, q);
        s_abs += t_abs[q] * std::fabs(b(j, q));
      }
      ref[static_cast<size_t>(i * c.n + j)] = s;
      mag[static_cast<size_t>(i * c.n + j)] = s_abs;
    }
  }
  return compare("y", y, ref, [&](long long i, long long j) {
    const size_t e = static_cast<size_t>(i * c.n + j);
    return tolerance(d, c.tf32, c.k + c.r, mag[e], ref[e]);
  });
}

// ---- lora.backward ----------------------------------------------------------------------------------
struct BackwardCase {
  const char* name;
  DType dtype;
  long long m, k, n, r;
  bool mask;
};

long long backward_case(const BackwardCase& c) {
  const DType d = c.dtype;
  Mat g = random_mat(d, c.m, c.n), x = random_mat(d, c.m, c.k), w = random_mat(d, c.n, c.k);
  Mat a = random_mat(d, c.r, c.k), b = random_mat(d, c.n, c.r), mask = make(d, c.mask ? c.m : 0, c.k, 0, dropout);
  Mat gi = poisoned(d, c.m, c.k), ga = poisoned(d, c.r, c.k), gb = poisoned(d, c.n, c.r);
  lk::LoraBackwardParams p;
  p.dtype = d;
  p.m = c.m;
  p.k = c.k;
  p.n = c.n;
  p.r = c.r;
  p.grad_output = g.dev;
  p.grad_output_stride = g.stride;
  p.x = x.dev;
  p.x_stride = x.stride;
  p.weight = w.dev;
  p.weight_stride = w.stride;
  p.a = a.dev;
  p.a_stride = a.stride;
  p.b = b.dev;
  p.b_stride = b.stride;
  p.dropout_mask = c.mask ? mask.dev : nullptr;
  p.mask_stride = mask.stride;
  p.scale = 1.5f;
  p.grad_input = gi.dev;
  p.grad_input_stride = gi.stride;
  p.grad_a = ga.dev;
  p.grad_a_stride = ga.stride;
  p.grad_b = gb.dev;
  p.grad_b_stride = gb.stride;
  try {
    lk::cuda_ops::lora_backward(p, 0);
  } catch (const lk::Error& e) {
    lk_error(c.name, e);
  }
  const double s = p.scale;
  auto xm = [&](long long i, long long kk) { return x(i, kk) * (c.mask ? mask(i, kk) : 1.0); };
  // T = xm·Aᵀ, dT = s·g·B with their absolute sums.
  std::vector<double> t(static_cast<size_t>(c.m * c.r)), t_abs(t.size()), dt(t.size()), dt_abs(t.size());
  for (long long i = 0; i < c.m; ++i)
    for (long long q = 0; q < c.r; ++q) {
      double v = 0, va = 0, u = 0, ua = 0;
      for (long long kk = 0; kk < c.k; ++kk) {
        v += xm(i, kk) * a(q, kk);
        va += std::fabs(xm(i, kk) * a(q, kk));
      }
      for (long long o = 0; o < c.n; ++o) {
        u += s * g(i, o) * b(o, q);
        ua += std::fabs(s * g(i, o) * b(o, q));
      }
      const size_t e = static_cast<size_t>(i * c.r + q);
      t[e] = v;
      t_abs[e] = va;
      dt[e] = u;
      dt_abs[e] = ua;
    }
  std::vector<double> ref_b(static_cast<size_t>(c.n * c.r)), mag_b(ref_b.size());
  for (long long o = 0; o < c.n; ++o)
    for (long long q = 0; q < c.r; ++q) {
      double v = 0, va = 0;
      for (long long i = 0; i < c.m; ++i) {
        v += s * g(i, o) * t[static_cast<size_t>(i * c.r + q)];
        va += std::fabs(s * g(i, o)) * t_abs[static_cast<size_t>(i * c.r + q)];
      }
      ref_b[static_cast<size_t>(o * c.r + q)] = v;
      mag_b[static_cast<size_t>(o * c.r + q)] = va;
    }
  std::vector<double> ref_a(static_cast<size_t>(c.r * c.k)), mag_a(ref_a.size());
  for (long long q = 0; q < c.r; ++q)
    for (long long kk = 0; kk < c.k; ++kk) {
      double v = 0, va = 0;
      for (long long i = 0; i < c.m; ++i) {
        v += dt[static_cast<size_t>(i * c.r + q)] * xm(i, kk);
        va += dt_abs[static_cast<size_t>(i * c.r + q)] * std::fabs(xm(i, kk));
      }
      ref_a[static_cast<size_t>(q * c.k + kk)] = v;
      mag_a[static_cast<size_t>(q * c.k + kk)] = va;
    }
  std::vector<double> ref_i(static_cast<size_t>(c.m * c.k)), mag_i(ref_i.size());
  for (long long i = 0; i < c.m; ++i)
    for (long long kk = 0; kk < c.k; ++kk) {
      double v = 0, va = 0, low = 0, low_a = 0;
      for (long long o = 0; o < c.n; ++o) {
        v += g(i, o) * w(o, kk);
        va += std::fabs(g(i, o) * w(o, kk));
      }
      for (long long q = 0; q < c.r; ++q) {
        low += dt[static_cast<size_t>(i * c.r + q)] * a(q, kk);
        low_a += dt_abs[static_cast<size_t>(i * c.r + q)] * std::fabs(a(q, kk));
      }
      const double mk = c.mask ? mask(i, kk) : 1.0;
      ref_i[static_cast<size_t>(i * c.k + kk)] = v + mk * low;
      mag_i[static_cast<size_t>(i * c.k + kk)] = va + mk * low_a;
    }
  auto tol = [&](const std::vector<double>& ref, const std::vector<double>& mag, long long cols, long long terms) {
    return [&, cols, terms](long long i, long long j) {
      const size_t e = static_cast<size_t>(i * cols + j);
      return tolerance(d, false, terms, mag[e], ref[e]);
    };
  };
  return compare("gradB", gb, ref_b, tol(ref_b, mag_b, c.r, c.m + c.k)) + compare("gradA", ga, ref_a, tol(ref_a, mag_a, c.k, c.m + c.n)) +
         compare("gradInput", gi, ref_i, tol(ref_i, mag_i, c.k, c.n + c.r));
}

// ---- DoRA's norms: the row-norm epilogue --------------------------------------------------------------
long long dora_case(DType d, long long k, long long n, long long r) {
  Mat w = random_mat(d, n, k), a = random_mat(d, r, k), b = random_mat(d, n, r);
  Mat ones = make(DType::Float32, 1, n, 0, [] { return 1.0; });
  Mat norm = poisoned(DType::Float32, 1, n), column_scale = poisoned(DType::Float32, 1, n);
  lk::DoraNormParams p;
  p.dtype = d;
  p.k = k;
  p.n = n;
  p.r = r;
  p.weight = w.dev;
  p.weight_stride = w.stride;
  p.a = a.dev;
  p.a_stride = a.stride;
  p.b = b.dev;
  p.b_stride = b.stride;
  p.scale = 0.5f;
  p.magnitude = ones.dev;
  p.norm = static_cast<float*>(norm.dev);
  p.column_scale = static_cast<float*>(column_scale.dev);
  try {
    lk::cuda_ops::dora_norms(p, 0);
  } catch (const lk::Error& e) {
    lk_error("dora", e);
  }
  std::vector<double> ref(static_cast<size_t>(n)), inverse(ref.size());
  for (long long o = 0; o < n; ++o) {
    double ss = 0;
    for (long long c = 0; c < k; ++c) {
      double v = w(o, c);
      for (long long q = 0; q < r; ++q) v += p.scale * b(o, q) * a(q, c);
      ss += v * v;
    }
    ref[static_cast<size_t>(o)] = std::sqrt(ss);
    inverse[static_cast<size_t>(o)] = 1.0 / std::sqrt(ss);
  }
  // A sum of squares of float32-exact terms: relative error ~ε·√k.
  return compare("norm", norm, ref, [&](long long, long long j) { return 1e-5 * ref[static_cast<size_t>(j)]; }) +
         compare("column_scale", column_scale, inverse, [&](long long, long long j) { return 1e-5 * inverse[static_cast<size_t>(j)]; });
}

// ---- per-tile segment lists (forwardMulti's shape of problem) ------------------------------------------
// y[order[i]] = Σ_{l in tile(i)} [i in rows_l]·T[i]·B_lᵀ + x[order[i]]·Wᵀ, with the rows grouped in
// runs of one group (three groups of uneven length, one run of "no group"), two row tiles of 128.
long long tile_list_case(DType d) {
  namespace gemm = lk::cuda_ops::gemm;
  const int m = 200, k = 70, n = 90, r = 12;
  const int runs[][3] = {{0, 50, -1}, {50, 140, 0}, {140, 170, 1}, {170, 200, 2}};  // [lo, hi) and group
  const int ranks[] = {12, 5, 9};
  Mat x = random_mat(d, m, k), w = random_mat(d, n, k), t = random_mat(d, m, r);
  std::vector<Mat> b;
  for (int l = 0; l < 3; ++l) b.push_back(random_mat(d, n, r));
  std::vector<int> order(m);
  for (int i = 0; i < m; ++i) order[i] = (i * 37 + 11) % m;  // 37 is prime to 200: a permutation
  std::vector<gemm::Segment> segments;
  std::vector<int> begin{0};
  for (int tile = 0; tile * gemm::kTileListRows < m; ++tile) {
    const int lo = tile * gemm::kTileListRows, hi = std::min(m, lo + gemm::kTileListRows);
    for (const auto& run : runs) {
      const int s_lo = std::max(run[0], lo), s_hi = std::min(run[1], hi), l = run[2];
      if (l < 0 || s_lo >= s_hi) continue;
      segments.push_back({t.dev, b[l].dev, t.stride, b[l].stride, ranks[l], s_lo, s_hi, INT_MAX, false});
    }
    segments.push_back({x.dev, w.dev, x.stride, w.stride, k, 0, m, INT_MAX, true});
    begin.push_back(static_cast<int>(segments.size()));
  }
  void *dev_segments, *dev_begin, *dev_order;
  check(cudaMalloc(&dev_segments, segments.size() * sizeof(gemm::Segment)), "cudaMalloc");
  check(cudaMalloc(&dev_begin, begin.size() * sizeof(int)), "cudaMalloc");
  check(cudaMalloc(&dev_order, order.size() * sizeof(int)), "cudaMalloc");
  check(cudaMemcpy(dev_segments, segments.data(), segments.size() * sizeof(gemm::Segment), cudaMemcpyHostToDevice), "cudaMemcpy");
  check(cudaMemcpy(dev_begin, begin.data(), begin.size() * sizeof(int), cudaMemcpyHostToDevice), "cudaMemcpy");
  check(cudaMemcpy(dev_order, order.data(), order.size() * sizeof(int), cudaMemcpyHostToDevice), "cudaMemcpy");
  Mat y = poisoned(d, m, n);
  gemm::Problem q;
  q.dtype = d;
  q.m = m;
  q.n = n;
  q.tile_segments = static_cast<const gemm::Segment*>(dev_segments);
  q.tile_segment_begin = static_cast<const int*>(dev_begin);
  q.row_index = static_cast<const int*>(dev_order);
  q.epi.row_index = static_cast<const int*>(dev_order);
  q.epi.out = y.dev;
  q.epi.out_stride = y.stride;
  try {
    gemm::run(q, 0, lk::cuda_ops::begin_op(0, "oracle.tileLists"));
  } catch (const lk::Error& e) {
    lk_error("tile lists", e);
  }
  std::vector<double> ref(static_cast<size_t>(m * n)), mag(ref.size());
  for (int i = 0; i < m; ++i) {
    int l = -1;
    for (const auto& run : runs)
      if (i >= run[0] && i < run[1]) l = run[2];
    for (int j = 0; j < n; ++j) {
      double v = 0, va = 0;
      for (int kk = 0; kk < k; ++kk) {
        v += x(order[i], kk) * w(j, kk);
        va += std::fabs(x(order[i], kk) * w(j, kk));
      }
      for (int c = 0; l >= 0 && c < ranks[l]; ++c) {
        v += t(i, c) * b[l](j, c);
        va += std::fabs(t(i, c) * b[l](j, c));
      }
      ref[static_cast<size_t>(order[i] * n + j)] = v;
      mag[static_cast<size_t>(order[i] * n + j)] = va;
    }
  }
  return compare("y", y, ref, [&](long long i, long long j) {
    const size_t e = static_cast<size_t>(i * n + j);
    return tolerance(d, false, k + r, mag[e], ref[e]);
  });
}

// ---- a quantized B: the dequantizing operand loaders --------------------------------------------------
// W [wn, wk] in NF4 (float32 absmax, blocks of 64 over the flattened weight, so blocks straddle rows
// when wk is not a multiple of 64) or ternary, random codes (every byte value) and positive absmax /
// scale. K-major: y = x·deq(W)ᵀ [m, wn] (quant.matmul); MN-major: y = g·deq(W) [m, wk]
// (quant.matmulBackward's gradInput). deq(W) is float32 code·absmax rounded once to the dtype, as
// gemm.cuh defines it.
struct QuantCase {
  const char* name;
  DType dtype;
  lk::QuantFormat format;
  bool mn_major;
  long long m, wn, wk;
};

void* device_copy(const void* host, size_t bytes) {
  void* dev;
  check(cudaMalloc(&dev, bytes ? bytes : 1), "cudaMalloc");
  check(cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
  return dev;
}

long long quant_case(const QuantCase& c) {
  namespace gemm = lk::cuda_ops::gemm;
  const DType d = c.dtype;
  const bool nf4 = c.format == lk::QuantFormat::Nf4;
  const long long block = 64, elems = c.wn * c.wk;
  const long long code_bytes = nf4 ? lk::nf4::packed_bytes(elems) : c.wn * lk::ternary::row_bytes(c.wk);
  const long long blocks = nf4 ? lk::nf4::blocks(elems, block) : 0;
  std::vector<uint8_t> packed(static_cast<size_t>(code_bytes));
  for (auto& b : packed) b = static_cast<uint8_t>((uniform() + 1.0) * 128.0);
  std::vector<float> absmax(static_cast<size_t>(blocks));
  for (auto& a : absmax) a = static_cast<float>(0.25 + 0.5 * (uniform() + 1.0));
  const float scale = 0.625f;
  // The dequantized weight in the dtype, exactly as the kernels must see it.
  std::vector<double> w(static_cast<size_t>(elems));
  for (long long j = 0; j < c.wn; ++j)
    for (long long kk = 0; kk < c.wk; ++kk) {
      const long long e = j * c.wk + kk;
      const uint8_t* row = packed.data() + j * lk::ternary::row_bytes(c.wk);
      const float v = nf4 ? lk::nf4::code_value(lk::nf4::nibble(packed.data(), e)) * absmax[static_cast<size_t>(e / block)]
                          : static_cast<float>(lk::ternary::code_value(lk::ternary::code_at(row, kk))) * scale;
      unsigned char bytes[4];
      store(d, bytes, v);
      w[static_cast<size_t>(e)] = load(d, bytes);
    }
  const long long k = c.mn_major ? c.wn : c.wk, n = c.mn_major ? c.wk : c.wn;
  Mat a = random_mat(d, c.m, k), y = poisoned(d, c.m, n);
  lk::QuantWeight q;
  q.format = c.format;
  q.n = c.wn;
  q.k = c.wk;
  q.packed = static_cast<const uint8_t*>(device_copy(packed.data(), packed.size()));
  q.block_size = block;
  q.absmax = nf4 ? static_cast<const float*>(device_copy(absmax.data(), absmax.size() * sizeof(float))) : nullptr;
  q.scale = scale;
  gemm::Problem p;
  p.dtype = d;
  p.b_layout = c.mn_major ? gemm::Layout::MNMajor : gemm::Layout::KMajor;
  p.m = static_cast<int>(c.m);
  p.n = static_cast<int>(n);
  p.quant = q;
  p.seg[0] = {a.dev, nullptr, a.stride, 0, static_cast<int>(k), 0, static_cast<int>(c.m), INT_MAX, false};
  p.seg[0].quant_b = true;
  p.num_segments = 1;
  p.epi.out = y.dev;
  p.epi.out_stride = y.stride;
  try {
    gemm::run(p, 0, lk::cuda_ops::begin_op(0, "oracle.quant"));
  } catch (const lk::Error& e) {
    lk_error(c.name, e);
  }
  auto b = [&](long long j, long long kk) {  // B(j, kk): W[j, kk] K-major, W[kk, j] MN-major
    return w[static_cast<size_t>(c.mn_major ? kk * c.wk + j : j * c.wk + kk)];
  };
  std::vector<double> ref(static_cast<size_t>(c.m * n)), mag(ref.size());
  for (long long i = 0; i < c.m; ++i)
    for (long long j = 0; j < n; ++j) {
      double v = 0, va = 0;
      for (long long kk = 0; kk < k; ++kk) {
        v += a(i, kk) * b(j, kk);
        va += std::fabs(a(i, kk) * b(j, kk));
      }
      ref[static_cast<size_t>(i * n + j)] = v;
      mag[static_cast<size_t>(i * n + j)] = va;
    }
  return compare("y", y, ref, [&](long long i, long long j) {
    const size_t e = static_cast<size_t>(i * n + j);
    return tolerance(d, false, k, mag[e], ref[e]);
  });
}


// ---- Flash-LoRA-Attention forward, the Hopper kernel -------------------------------------------------
// q [B, Sq, Hq, D], caches [B, Sk, Hk, D], low-rank caches [B, Sk, r] and B factors [L = 1, Hk, r, D],
// all contiguous; sequence 1 has no adapter (id −1). out and lse against the float64 definition of
// csrc/ops/flash_lora.h: P and the low-rank products run in the dtype, so the tolerance is a few
// 16-bit roundings of Σ P·|v| (out) and float32 accumulation (lse).
struct FlashCase {
  const char* name;
  DType dtype;
  long long batch, sq, sk, hq, hk, d, rk, rv;
  bool causal;
};

long long flash_case(const FlashCase& c) {
  const DType d = c.dtype;
  const long long G = c.hq / c.hk, D = c.d;
  const auto small = [] { return 0.25 * uniform(); };
  Mat q = random_mat(d, c.batch * c.sq * c.hq, D), kb = random_mat(d, c.batch * c.sk * c.hk, D), vb = random_mat(d, c.batch * c.sk * c.hk, D);
  Mat kr = make(d, c.batch * c.sk, c.rk, 0, small), vr = make(d, c.batch * c.sk, c.rv, 0, small);
  Mat klb = make(d, c.hk * c.rk, D, 0, small), vlb = make(d, c.hk * c.rv, D, 0, small);
  Mat out = poisoned(d, c.batch * c.sq * c.hq, D), lse = poisoned(DType::Float32, c.batch * c.hq, c.sq);
  std::vector<int32_t> ids(static_cast<size_t>(c.batch));
  for (long long b = 0; b < c.batch; ++b) ids[static_cast<size_t>(b)] = b % 2 ? -1 : 0;
  void* ids_dev = device_copy(ids.data(), ids.size() * sizeof(int32_t));
  lk::FlashLoraParams p;
  p.dtype = d;
  p.batch = c.batch, p.seq_q = c.sq, p.seq_k = c.sk, p.heads_q = c.hq, p.heads_k = c.hk, p.head_dim = D;
  p.causal = c.causal;
  p.softmax_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  p.q = {q.dev, c.sq * c.hq * D, c.hq * D, D};
  p.k_base = {kb.dev, c.sk * c.hk * D, c.hk * D, D};
  p.v_base = {vb.dev, c.sk * c.hk * D, c.hk * D, D};
  p.k_rank = c.rk, p.k_low_rank = {kr.dev, c.sk * c.rk, c.rk, 0}, p.k_lora_b = c.rk ? klb.dev : nullptr;
  p.v_rank = c.rv, p.v_low_rank = {vr.dev, c.sk * c.rv, c.rv, 0}, p.v_lora_b = c.rv ? vlb.dev : nullptr;
  p.adapter_ids = static_cast<const int32_t*>(ids_dev);
  p.out = {out.dev, c.sq * c.hq * D, c.hq * D, D};
  p.lse = static_cast<float*>(lse.dev);
  try {
    lk::cuda_ops::flash_lora_forward(p, 0);
  } catch (const lk::Error& e) {
    lk_error(c.name, e);
  }
  std::vector<double> ref(static_cast<size_t>(out.rows * D)), mag(ref.size()), ref_lse(static_cast<size_t>(lse.rows * c.sq));
  std::vector<double> key(static_cast<size_t>(c.sk * D)), value(key.size()), score(static_cast<size_t>(c.sk));
  for (long long b = 0; b < c.batch; ++b)
    for (long long g = 0; g < c.hk; ++g) {
      const bool adapter = ids[static_cast<size_t>(b)] == 0;
      for (long long j = 0; j < c.sk; ++j)
        for (long long e = 0; e < D; ++e) {
          double k = kb((b * c.sk + j) * c.hk + g, e), v = vb((b * c.sk + j) * c.hk + g, e);
          for (long long t = 0; adapter && t < c.rk; ++t) k += kr(b * c.sk + j, t) * klb(g * c.rk + t, e);
          for (long long t = 0; adapter && t < c.rv; ++t) v += vr(b * c.sk + j, t) * vlb(g * c.rv + t, e);
          key[static_cast<size_t>(j * D + e)] = k;
          value[static_cast<size_t>(j * D + e)] = v;
        }
      for (long long h = g * G; h < (g + 1) * G; ++h)
        for (long long i = 0; i < c.sq; ++i) {
          const long long row = (b * c.sq + i) * c.hq + h, keys = c.causal ? std::min(c.sk, i + c.sk - c.sq + 1) : c.sk;
          double mx = -INFINITY, sum = 0;
          for (long long j = 0; j < keys; ++j) {
            double dot = 0;
            for (long long e = 0; e < D; ++e) dot += q(row, e) * key[static_cast<size_t>(j * D + e)];
            score[static_cast<size_t>(j)] = p.softmax_scale * dot;
            mx = std::max(mx, score[static_cast<size_t>(j)]);
          }
          for (long long j = 0; j < keys; ++j) sum += std::exp(score[static_cast<size_t>(j)] - mx);
          ref_lse[static_cast<size_t>((b * c.hq + h) * c.sq + i)] = mx + std::log(sum);
          for (long long e = 0; e < D; ++e) {
            double o = 0, o_abs = 0;
            for (long long j = 0; j < keys; ++j) {
              const double pj = std::exp(score[static_cast<size_t>(j)] - mx) / sum, v = value[static_cast<size_t>(j * D + e)];
              o += pj * v;
              o_abs += pj * std::fabs(v);
            }
            ref[static_cast<size_t>(row * D + e)] = o;
            mag[static_cast<size_t>(row * D + e)] = o_abs;
          }
        }
    }
  const double unit = d == DType::Float16 ? 1.0 / 1024 : 1.0 / 128;
  const long long bad = compare("out", out, ref, [&](long long i, long long e) {
    const size_t at = static_cast<size_t>(i * D + e);
    return 2 * unit * mag[at] + unit * std::fabs(ref[at]) + 1e-6;
  });
  check(cudaFree(ids_dev), "cudaFree");
  return bad + compare("lse", lse, ref_lse, [&](long long, long long) { return 1e-4; });
}
}  // namespace

int main() {
  const char* sched = std::getenv("SIMT_EMU_SCHED");
  const ForwardCase forwards[] = {
      // name                                           dtype             m     k     n    r   bias   mask   tf32  pad
      {"forward mma 128x256 KK, T hi + lo", DType::BFloat16, 300, 200, 300, 16, true, false, false, 0},
      {"forward mma 128x128 KK, mask, padded rows", DType::Float16, 150, 77, 90, 5, true, true, false, 3},
      {"forward mma 64x64 split-K", DType::BFloat16, 33, 1000, 40, 4, false, false, false, 0},
      {"forward TF32 mma", DType::Float32, 100, 40, 70, 3, true, false, true, 0},
      {"forward FMA 128x128, unaligned rows", DType::Float32, 130, 45, 140, 7, true, true, false, 0},
      {"forward decode (GEMV)", DType::BFloat16, 3, 600, 45, 16, true, false, false, 0},
  };
  const BackwardCase backwards[] = {
      {"backward mma KN + 128x32 + NN, mask", DType::BFloat16, 150, 170, 90, 20, true},
      {"backward mma NN split-K", DType::Float16, 700, 60, 50, 8, false},
      {"backward FMA", DType::Float32, 100, 60, 50, 6, true},
  };
  constexpr lk::QuantFormat kNf4 = lk::QuantFormat::Nf4, kTernary = lk::QuantFormat::Ternary;
  const QuantCase quants[] = {
      // name                                            dtype              format    MN-major  m    wn   wk
      {"quant nf4 KK staged (cp.async)", DType::BFloat16, kNf4, false, 70, 75, 96},
      {"quant nf4 KN staged (cp.async), gradInput", DType::BFloat16, kNf4, true, 70, 75, 96},
      {"quant nf4 KK element loads (k % 32 != 0)", DType::BFloat16, kNf4, false, 40, 46, 77},
      {"quant ternary KK staged (cp.async)", DType::BFloat16, kTernary, false, 66, 70, 128},
      {"quant ternary KN element loads, gradInput", DType::BFloat16, kTernary, true, 50, 80, 70},
      {"quant nf4 KK float32 (FMA)", DType::Float32, kNf4, false, 70, 75, 77},
      {"quant nf4 KN float32 (FMA), gradInput", DType::Float32, kNf4, true, 50, 75, 96},
      {"quant ternary KK float32 (FMA)", DType::Float32, kTernary, false, 66, 70, 70},
  };
  const ForwardCase hopper_forwards[] = {
      {"forward wgmma 128x256 KK, T hi + lo", DType::BFloat16, 300, 200, 300, 16, true, false, false, 0},
      {"forward wgmma 128x128 KK, 9 k-tiles", DType::Float16, 120, 520, 200, 8, true, false, false, 8},
  };
  const BackwardCase hopper_backwards[] = {
      {"backward wgmma KN gradInput (transposed B)", DType::BFloat16, 150, 168, 96, 16, false},
      {"backward wgmma 128x128 KN gradInput, mask between segments", DType::Float16, 150, 168, 96, 16, true},
  };
  const FlashCase hopper_flash[] = {
      // name                                                       dtype            B   Sq   Sk  Hq Hk    D  rk  rv causal
      {"flashLora wgmma D=64 RB=16, causal, adapter + none", DType::BFloat16, 2, 70, 150, 4, 2, 64, 16, 8, true},
      {"flashLora wgmma D=128 RB=64, value path, 4 key tiles", DType::Float16, 1, 40, 200, 2, 1, 128, 0, 40, false},
  };
  const char* cc = std::getenv("SIMT_EMU_CC");
  const bool hopper = cc && std::string(cc) == "9.0";
  long long failed = 0;
  auto report = [&](const std::string& name, long long bad) {
    std::printf("oracle [%s] %-52s %-8s %s\n", sched ? sched : "forward", name.c_str(), bad ? "MISMATCH" : "ok",
                lk::gpu::take_op_plans().c_str());
    if (bad) {
      std::printf("oracle:   %lld elements wrong\n", bad);
      ++failed;
    }
  };
  if (hopper) {
    for (const ForwardCase& c : hopper_forwards) report(c.name, forward_case(c));
    for (const BackwardCase& c : hopper_backwards) report(c.name, backward_case(c));
    for (const FlashCase& c : hopper_flash) report(c.name, flash_case(c));
    std::fflush(stdout);
    return failed ? 1 : 0;
  }
  for (const ForwardCase& c : forwards) report(c.name, forward_case(c));
  for (const BackwardCase& c : backwards) report(c.name, backward_case(c));
  report("dora norms: row-norm epilogue bf16", dora_case(DType::BFloat16, 260, 300, 8));
  report("dora norms: row-norm epilogue float32 (FMA)", dora_case(DType::Float32, 130, 150, 3));
  report("per-tile segment lists, gathered rows bf16", tile_list_case(DType::BFloat16));
  report("per-tile segment lists, gathered rows float32 (FMA)", tile_list_case(DType::Float32));
  for (const QuantCase& c : quants) report(c.name, quant_case(c));
  std::fflush(stdout);
  return failed ? 1 : 0;
}
