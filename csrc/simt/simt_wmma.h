// simt_wmma.h — nvcuda::wmma on the CPU, at warp granularity (included by simt_emu.h).
//
// Shapes: 16×16×16 (half, __nv_bfloat16 → float accumulators) and 16×16×8 (precision::tf32 →
// float). CUDA leaves the mapping of fragment elements to lanes opaque, so any consistent mapping
// is legal; ours is deliberately unlike the hardware's (element i of lane L is logical index
// i·32 + L, row-major) so that kernels which assume a layout fail here instead of passing by luck.
// num_elements therefore also differs from the GPU's: loop over it, never hard-code it.
// load/store/mma are warp collectives: all 32 lanes must call them (a partial warp dies).
// Pointer (32-byte) and ldm (16-byte multiple) requirements of the CUDA guide are checked.
#pragma once
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };
namespace precision {
struct tf32 {};
}

// Round to TF32 (10 explicit mantissa bits), ties away from zero, as cvt.rna.tf32.f32 does.
inline float __float_to_tf32(float in) {
  uint32_t u;
  std::memcpy(&u, &in, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;
  float out;
  std::memcpy(&out, &u, 4);
  return out;
}

namespace detail {
template <class Use, int M, int N, int K> struct dims;
template <int M, int N, int K> struct dims<matrix_a, M, N, K> { static constexpr int rows = M, cols = K; };
template <int M, int N, int K> struct dims<matrix_b, M, N, K> { static constexpr int rows = K, cols = N; };
template <int M, int N, int K> struct dims<accumulator, M, N, K> { static constexpr int rows = M, cols = N; };
template <class T> struct storage { using type = T; };
template <> struct storage<precision::tf32> { using type = float; };
template <class T> inline float to_float(T v) { return static_cast<float>(v); }
template <class T> inline T from_float(float v) { return static_cast<T>(v); }
template <> inline __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> inline __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
inline float tf32_truncate(float v) {  // what the tensor core reads from an unconverted float
  uint32_t u;
  std::memcpy(&u, &v, 4);
  u &= 0xffffe000u;
  std::memcpy(&v, &u, 4);
  return v;
}
template <class T> constexpr bool shape_ok(int M, int N, int K) {
  if (std::is_same_v<T, precision::tf32>) return M == 16 && N == 16 && K == 8;
  return (M == 16 && N == 16 && K == 16) || (M == 16 && N == 16 && K == 8);
}
}  // namespace detail

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static_assert(detail::shape_ok<T>(M, N, K), "WMMA shape not emulated");
  using D = detail::dims<Use, M, N, K>;
  using element_type = typename detail::storage<T>::type;
  using storage_element_type = element_type;
  enum { num_elements = D::rows * D::cols / 32 };
  element_type x[num_elements];
  static int lane() { return simt::my_lane(); }
  static int row(int i) { return (i * 32 + lane()) / D::cols; }  // logical position of x[i] of this lane
  static int col(int i) { return (i * 32 + lane()) % D::cols; }
};

template <class Use, int M, int N, int K, class T, class L, class V>
inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, const V& v) {
  using E = typename fragment<Use, M, N, K, T, L>::element_type;
  for (int i = 0; i < f.num_elements; ++i) f.x[i] = static_cast<E>(v);
}

namespace detail {
template <class P>
inline void check_ptr(const P* p, unsigned ldm, const char* op) {
  if (reinterpret_cast<uintptr_t>(p) % 32) simt::die(op, ": pointer not 32-byte aligned, misaligned by", static_cast<long>(reinterpret_cast<uintptr_t>(p) % 32));
  if ((ldm * sizeof(P)) % 16) simt::die(op, ": ldm is not a multiple of 16 bytes, ldm =", static_cast<long>(ldm));
}
template <class F, class P>
inline void load(F& f, const P* p, unsigned ldm, bool row_major_mem) {
  simt::warp_collective(0xffffffffu, simt::op_nop);  // a warp-wide operation: every lane must arrive
  check_ptr(p, ldm, "wmma::load_matrix_sync");
  for (int i = 0; i < F::num_elements; ++i) {
    const int r = F::row(i), c = F::col(i);
    f.x[i] = p[row_major_mem ? static_cast<size_t>(r) * ldm + c : static_cast<size_t>(c) * ldm + r];
  }
}
}  // namespace detail

template <class Use, int M, int N, int K, class T, class L, class P>
inline void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const P* p, unsigned ldm) {
  static_assert(!std::is_same_v<Use, accumulator>, "accumulator loads need a layout_t argument");
  detail::load(f, p, ldm, std::is_same_v<L, row_major>);
}
template <int M, int N, int K, class T, class P>
inline void load_matrix_sync(fragment<accumulator, M, N, K, T>& f, const P* p, unsigned ldm, layout_t l) {
  detail::load(f, p, ldm, l == mem_row_major);
}
template <int M, int N, int K, class T, class P>
inline void store_matrix_sync(P* p, const fragment<accumulator, M, N, K, T>& f, unsigned ldm, layout_t l) {
  using F = fragment<accumulator, M, N, K, T>;
  simt::warp_collective(0xffffffffu, simt::op_nop);
  detail::check_ptr(p, ldm, "wmma::store_matrix_sync");
  for (int i = 0; i < F::num_elements; ++i) {
    const int r = F::row(i), c = F::col(i);
    p[l == mem_row_major ? static_cast<size_t>(r) * ldm + c : static_cast<size_t>(c) * ldm + r] = f.x[i];
  }
}

namespace detail {
// D = A·B + C over the operands the lanes deposited in WarpState::mat; float accumulation
// (products of fp16 / bf16 / tf32 values are exact in float).
template <int M, int N, int K>
inline void op_mma(simt::WarpState& W, uint32_t lanes) {
  if (lanes != 0xffffffffu) simt::die("mma needs all 32 lanes of the warp; lanes present mask", "", static_cast<long>(lanes));
  const float *A = W.mat[0], *B = W.mat[1], *C = W.mat[2];
  float* D = W.mat[3];
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      float acc = C[m * N + n];
      for (int k = 0; k < K; ++k) acc = std::fma(A[m * K + k], B[k * N + n], acc);
      D[m * N + n] = acc;
    }
}
}  // namespace detail

template <int M, int N, int K, class TA, class LA, class TB, class LB, class TC, class TD>
inline void mma_sync(fragment<accumulator, M, N, K, TD>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
                     const fragment<matrix_b, M, N, K, TB, LB>& b, const fragment<accumulator, M, N, K, TC>& c) {
  using FA = fragment<matrix_a, M, N, K, TA, LA>;
  using FB = fragment<matrix_b, M, N, K, TB, LB>;
  using FC = fragment<accumulator, M, N, K, TC>;
  using FD = fragment<accumulator, M, N, K, TD>;
  static_assert(std::is_same_v<TA, TB>, "wmma::mma_sync: A and B element types differ");
  constexpr bool tf32 = std::is_same_v<TA, precision::tf32>;
  simt::WarpState& W = simt::my_warp();
  for (int i = 0; i < FA::num_elements; ++i) {
    float v = detail::to_float(a.x[i]);
    W.mat[0][FA::row(i) * K + FA::col(i)] = tf32 ? detail::tf32_truncate(v) : v;
  }
  for (int i = 0; i < FB::num_elements; ++i) {
    float v = detail::to_float(b.x[i]);
    W.mat[1][FB::row(i) * N + FB::col(i)] = tf32 ? detail::tf32_truncate(v) : v;
  }
  for (int i = 0; i < FC::num_elements; ++i) W.mat[2][FC::row(i) * N + FC::col(i)] = detail::to_float(c.x[i]);
  simt::warp_collective(0xffffffffu, detail::op_mma<M, N, K>);
  for (int i = 0; i < FD::num_elements; ++i)
    d.x[i] = detail::from_float<typename FD::element_type>(W.mat[3][FD::row(i) * N + FD::col(i)]);
}
}  // namespace wmma
}  // namespace nvcuda
