// A float32 SIMD vector for the level this translation unit is compiled for (LK_SIMD_AVX512,
// LK_SIMD_AVX2, LK_SIMD_NEON, otherwise LK_SIMD_SCALAR), with the handful of operations the CPU
// kernels need: loads that widen float16/bfloat16 to float32 (F16C / a 16-bit shift), stores that
// round back (nearest even, NaN stays NaN), fused multiply-add, a horizontal sum and an
// in-register kLanes×kLanes transpose used to pack weight panels. Next to it DVec, float64 at the
// native width (kDLanes doubles) for the SVD: the blocked GEMM kernels and linalg.cpp's D8.
//
// Include only from csrc/cpu/*.cpp (inside no namespace); everything lands in
// lk::cpu::LK_SIMD_NS, so each level gets its own copy.
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "core/dtype.h"
#include "core/half.h"

#if defined(LK_SIMD_AVX512) || defined(LK_SIMD_AVX2)
// GCC 12's AVX-512 headers build casts and shuffles from _mm512_undefined_ps(), which its
// -Wuninitialized flags at every inlined use (GCC bug 105593, fixed in GCC 13).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#else
#include <immintrin.h>
#endif
#elif defined(LK_SIMD_NEON)
#include <arm_neon.h>
#endif

namespace lk::cpu::LK_SIMD_NS {

#if defined(LK_SIMD_AVX512)

using Vec = __m512;
constexpr int kLanes = 16;

inline Vec vzero() { return _mm512_setzero_ps(); }
inline Vec vset1(float v) { return _mm512_set1_ps(v); }
inline Vec vload(const float* p) { return _mm512_loadu_ps(p); }
inline void vstore(float* p, Vec v) { _mm512_storeu_ps(p, v); }
inline Vec vfma(Vec a, Vec b, Vec acc) { return _mm512_fmadd_ps(a, b, acc); }
inline Vec vadd(Vec a, Vec b) { return _mm512_add_ps(a, b); }
inline Vec vmul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
inline float vsum(Vec v) {
  const __m256 half = _mm512_castps512_ps256(_mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0x4e)));
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(half), _mm256_extractf128_ps(half, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline Vec vload_fp16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline Vec vload_bf16(const uint16_t* p) {
  const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}
inline void vstore_fp16(uint16_t* p, Vec v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
inline void vstore_bf16(uint16_t* p, Vec v) {
  // Round to nearest even on the bit pattern; NaN keeps its sign and becomes a quiet NaN.
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
  const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, rounded, quiet)));
}

// rows[i] holds row i of a 16×16 block; afterwards rows[c] holds column c.
inline void vtranspose(Vec rows[kLanes]) {
  Vec t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(rows[2 * i], rows[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(rows[2 * i], rows[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // lane L of rows[4i+q]: rows 4i..4i+3 of column 4L+q
    rows[4 * i + 0] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    rows[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    rows[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    rows[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int q = 0; q < 4; ++q) {  // then a 4×4 transpose of 128-bit lanes
    t[q] = _mm512_shuffle_f32x4(rows[q], rows[4 + q], 0x88);
    t[4 + q] = _mm512_shuffle_f32x4(rows[q], rows[4 + q], 0xdd);
    t[8 + q] = _mm512_shuffle_f32x4(rows[8 + q], rows[12 + q], 0x88);
    t[12 + q] = _mm512_shuffle_f32x4(rows[8 + q], rows[12 + q], 0xdd);
  }
  for (int q = 0; q < 4; ++q) {
    rows[q] = _mm512_shuffle_f32x4(t[q], t[8 + q], 0x88);
    rows[8 + q] = _mm512_shuffle_f32x4(t[q], t[8 + q], 0xdd);
    rows[4 + q] = _mm512_shuffle_f32x4(t[4 + q], t[12 + q], 0x88);
    rows[12 + q] = _mm512_shuffle_f32x4(t[4 + q], t[12 + q], 0xdd);
  }
}

// float64 at the native width (the SVD works in double).
using DVec = __m512d;
constexpr int kDLanes = 8;
inline DVec dzero() { return _mm512_setzero_pd(); }
inline DVec dset1(double v) { return _mm512_set1_pd(v); }
inline DVec dload(const double* p) { return _mm512_loadu_pd(p); }
inline void dstore(double* p, DVec v) { _mm512_storeu_pd(p, v); }
inline DVec dfma(DVec a, DVec b, DVec acc) { return _mm512_fmadd_pd(a, b, acc); }  // a·b + acc
inline double dsum(DVec v) { return _mm512_reduce_add_pd(v); }
// For the SVD's 8-double D8 (linalg.cpp); the scalar level keeps its own D8 there.
using DMask = __mmask8;
inline DVec dadd(DVec a, DVec b) { return _mm512_add_pd(a, b); }
inline DVec dsub(DVec a, DVec b) { return _mm512_sub_pd(a, b); }
inline DVec dmul(DVec a, DVec b) { return _mm512_mul_pd(a, b); }
inline DVec ddiv(DVec a, DVec b) { return _mm512_div_pd(a, b); }
inline DVec dfms(DVec a, DVec b, DVec c) { return _mm512_fmsub_pd(a, b, c); }      // a·b − c
inline DVec dsqrt(DVec a) { return _mm512_sqrt_pd(a); }
inline DVec dabs(DVec a) { return _mm512_abs_pd(a); }
inline DVec dsign(DVec a) { return _mm512_or_pd(_mm512_and_pd(a, _mm512_set1_pd(-0.0)), _mm512_set1_pd(1.0)); }  // ±1
inline DMask dgreater(DVec a, DVec b) { return _mm512_cmp_pd_mask(a, b, _CMP_GT_OQ); }
inline DVec dselect(DMask m, DVec yes, DVec no) { return _mm512_mask_blend_pd(m, no, yes); }
inline unsigned dmask_bits(DMask m) { return m; }  // bit k: lane k

#elif defined(LK_SIMD_AVX2)

using Vec = __m256;
constexpr int kLanes = 8;

inline Vec vzero() { return _mm256_setzero_ps(); }
inline Vec vset1(float v) { return _mm256_set1_ps(v); }
inline Vec vload(const float* p) { return _mm256_loadu_ps(p); }
inline void vstore(float* p, Vec v) { _mm256_storeu_ps(p, v); }
inline Vec vfma(Vec a, Vec b, Vec acc) { return _mm256_fmadd_ps(a, b, acc); }
inline Vec vadd(Vec a, Vec b) { return _mm256_add_ps(a, b); }
inline Vec vmul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
inline float vsum(Vec v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline Vec vload_fp16(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
inline Vec vload_bf16(const uint16_t* p) {
  const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}
inline void vstore_fp16(uint16_t* p, Vec v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
inline void vstore_bf16(uint16_t* p, Vec v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
  const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  const __m256i bits = _mm256_blendv_epi8(rounded, quiet, nan);  // 8 × 32-bit, high halves zero
  const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(bits), _mm256_extracti128_si256(bits, 1));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), packed);
}

inline void vtranspose(Vec rows[kLanes]) {
  Vec t[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(rows[2 * i], rows[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(rows[2 * i], rows[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {  // lane L of rows[4i+q]: rows 4i..4i+3 of column 4L+q
    rows[4 * i + 0] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    rows[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    rows[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    rows[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int q = 0; q < 4; ++q) {
    t[q] = _mm256_permute2f128_ps(rows[q], rows[4 + q], 0x20);
    t[4 + q] = _mm256_permute2f128_ps(rows[q], rows[4 + q], 0x31);
  }
  for (int i = 0; i < 8; ++i) rows[i] = t[i];
}

using DVec = __m256d;
constexpr int kDLanes = 4;
inline DVec dzero() { return _mm256_setzero_pd(); }
inline DVec dset1(double v) { return _mm256_set1_pd(v); }
inline DVec dload(const double* p) { return _mm256_loadu_pd(p); }
inline void dstore(double* p, DVec v) { _mm256_storeu_pd(p, v); }
inline DVec dfma(DVec a, DVec b, DVec acc) { return _mm256_fmadd_pd(a, b, acc); }
inline double dsum(DVec v) {
  const __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}
// For the SVD's 8-double D8 (linalg.cpp); the scalar level keeps its own D8 there.
using DMask = __m256d;  // all-ones lanes where true
inline DVec dadd(DVec a, DVec b) { return _mm256_add_pd(a, b); }
inline DVec dsub(DVec a, DVec b) { return _mm256_sub_pd(a, b); }
inline DVec dmul(DVec a, DVec b) { return _mm256_mul_pd(a, b); }
inline DVec ddiv(DVec a, DVec b) { return _mm256_div_pd(a, b); }
inline DVec dfms(DVec a, DVec b, DVec c) { return _mm256_fmsub_pd(a, b, c); }
inline DVec dsqrt(DVec a) { return _mm256_sqrt_pd(a); }
inline DVec dabs(DVec a) { return _mm256_andnot_pd(_mm256_set1_pd(-0.0), a); }
inline DVec dsign(DVec a) { return _mm256_or_pd(_mm256_and_pd(a, _mm256_set1_pd(-0.0)), _mm256_set1_pd(1.0)); }
inline DMask dgreater(DVec a, DVec b) { return _mm256_cmp_pd(a, b, _CMP_GT_OQ); }
inline DVec dselect(DMask m, DVec yes, DVec no) { return _mm256_blendv_pd(no, yes, m); }
inline unsigned dmask_bits(DMask m) { return static_cast<unsigned>(_mm256_movemask_pd(m)); }

#elif defined(LK_SIMD_NEON)

using Vec = float32x4_t;
constexpr int kLanes = 4;

inline Vec vzero() { return vdupq_n_f32(0.0f); }
inline Vec vset1(float v) { return vdupq_n_f32(v); }
inline Vec vload(const float* p) { return vld1q_f32(p); }
inline void vstore(float* p, Vec v) { vst1q_f32(p, v); }
inline Vec vfma(Vec a, Vec b, Vec acc) { return vfmaq_f32(acc, a, b); }
inline Vec vadd(Vec a, Vec b) { return vaddq_f32(a, b); }
inline Vec vmul(Vec a, Vec b) { return vmulq_f32(a, b); }
inline float vsum(Vec v) { return vaddvq_f32(v); }

inline Vec vload_fp16(const uint16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
inline Vec vload_bf16(const uint16_t* p) { return vreinterpretq_f32_u32(vshlq_n_u32(vmovl_u16(vld1_u16(p)), 16)); }
inline void vstore_fp16(uint16_t* p, Vec v) { vst1_u16(p, vreinterpret_u16_f16(vcvt_f16_f32(v))); }
inline void vstore_bf16(uint16_t* p, Vec v) {
  const uint32x4_t u = vreinterpretq_u32_f32(v);
  const uint32x4_t lsb = vandq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(1));
  const uint32x4_t rounded = vshrq_n_u32(vaddq_u32(u, vaddq_u32(lsb, vdupq_n_u32(0x7fff))), 16);
  const uint32x4_t quiet = vorrq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(0x40));
  const uint32x4_t is_number = vceqq_f32(v, v);
  vst1_u16(p, vmovn_u32(vbslq_u32(is_number, rounded, quiet)));
}

inline void vtranspose(Vec rows[kLanes]) {
  const float32x4x2_t ab = vtrnq_f32(rows[0], rows[1]);  // a0 b0 a2 b2 | a1 b1 a3 b3
  const float32x4x2_t cd = vtrnq_f32(rows[2], rows[3]);
  rows[0] = vcombine_f32(vget_low_f32(ab.val[0]), vget_low_f32(cd.val[0]));
  rows[1] = vcombine_f32(vget_low_f32(ab.val[1]), vget_low_f32(cd.val[1]));
  rows[2] = vcombine_f32(vget_high_f32(ab.val[0]), vget_high_f32(cd.val[0]));
  rows[3] = vcombine_f32(vget_high_f32(ab.val[1]), vget_high_f32(cd.val[1]));
}

using DVec = float64x2_t;
constexpr int kDLanes = 2;
inline DVec dzero() { return vdupq_n_f64(0.0); }
inline DVec dset1(double v) { return vdupq_n_f64(v); }
inline DVec dload(const double* p) { return vld1q_f64(p); }
inline void dstore(double* p, DVec v) { vst1q_f64(p, v); }
inline DVec dfma(DVec a, DVec b, DVec acc) { return vfmaq_f64(acc, a, b); }
inline double dsum(DVec v) { return vaddvq_f64(v); }
// For the SVD's 8-double D8 (linalg.cpp); the scalar level keeps its own D8 there.
using DMask = uint64x2_t;  // all-ones lanes where true
inline DVec dadd(DVec a, DVec b) { return vaddq_f64(a, b); }
inline DVec dsub(DVec a, DVec b) { return vsubq_f64(a, b); }
inline DVec dmul(DVec a, DVec b) { return vmulq_f64(a, b); }
inline DVec ddiv(DVec a, DVec b) { return vdivq_f64(a, b); }
inline DVec dfms(DVec a, DVec b, DVec c) { return vfmaq_f64(vnegq_f64(c), a, b); }
inline DVec dsqrt(DVec a) { return vsqrtq_f64(a); }
inline DVec dabs(DVec a) { return vabsq_f64(a); }
inline DVec dsign(DVec a) {
  const uint64x2_t sign = vandq_u64(vreinterpretq_u64_f64(a), vdupq_n_u64(0x8000000000000000ull));
  return vreinterpretq_f64_u64(vorrq_u64(sign, vreinterpretq_u64_f64(vdupq_n_f64(1.0))));
}
inline DMask dgreater(DVec a, DVec b) { return vcgtq_f64(a, b); }
inline DVec dselect(DMask m, DVec yes, DVec no) { return vbslq_f64(m, yes, no); }
inline unsigned dmask_bits(DMask m) {
  return static_cast<unsigned>((vgetq_lane_u64(m, 0) & 1) | (vgetq_lane_u64(m, 1) & 1) << 1);
}

#else  // LK_SIMD_SCALAR: four plain floats; the compiler may still use the baseline ISA's SIMD.

struct Vec {
  float v[4];
};
constexpr int kLanes = 4;

inline Vec vzero() { return Vec{{0.0f, 0.0f, 0.0f, 0.0f}}; }
inline Vec vset1(float s) { return Vec{{s, s, s, s}}; }
inline Vec vload(const float* p) { return Vec{{p[0], p[1], p[2], p[3]}}; }
inline void vstore(float* p, Vec v) {
  for (int i = 0; i < 4; ++i) p[i] = v.v[i];
}
inline Vec vfma(Vec a, Vec b, Vec acc) {
  for (int i = 0; i < 4; ++i) acc.v[i] += a.v[i] * b.v[i];
  return acc;
}
inline Vec vadd(Vec a, Vec b) {
  for (int i = 0; i < 4; ++i) a.v[i] += b.v[i];
  return a;
}
inline Vec vmul(Vec a, Vec b) {
  for (int i = 0; i < 4; ++i) a.v[i] *= b.v[i];
  return a;
}
inline float vsum(Vec v) { return (v.v[0] + v.v[1]) + (v.v[2] + v.v[3]); }

inline Vec vload_fp16(const uint16_t* p) { return Vec{{fp16_to_float(p[0]), fp16_to_float(p[1]), fp16_to_float(p[2]), fp16_to_float(p[3])}}; }
inline Vec vload_bf16(const uint16_t* p) { return Vec{{bf16_to_float(p[0]), bf16_to_float(p[1]), bf16_to_float(p[2]), bf16_to_float(p[3])}}; }
inline void vstore_fp16(uint16_t* p, Vec v) {
  for (int i = 0; i < 4; ++i) p[i] = float_to_fp16(v.v[i]);
}
inline void vstore_bf16(uint16_t* p, Vec v) {
  for (int i = 0; i < 4; ++i) p[i] = float_to_bf16(v.v[i]);
}

inline void vtranspose(Vec rows[kLanes]) {
  for (int i = 0; i < 4; ++i)
    for (int j = i + 1; j < 4; ++j) {
      const float t = rows[i].v[j];
      rows[i].v[j] = rows[j].v[i];
      rows[j].v[i] = t;
    }
}

struct DVec {
  double v[4];
};
constexpr int kDLanes = 4;
inline DVec dzero() { return DVec{{0.0, 0.0, 0.0, 0.0}}; }
inline DVec dset1(double s) { return DVec{{s, s, s, s}}; }
inline DVec dload(const double* p) { return DVec{{p[0], p[1], p[2], p[3]}}; }
inline void dstore(double* p, DVec v) {
  for (int k = 0; k < 4; ++k) p[k] = v.v[k];
}
inline DVec dfma(DVec a, DVec b, DVec acc) {
  for (int k = 0; k < 4; ++k) acc.v[k] += a.v[k] * b.v[k];
  return acc;
}
inline double dsum(DVec v) { return (v.v[0] + v.v[1]) + (v.v[2] + v.v[3]); }

#endif

// ---- subtraction, maximum and 2^x (the online softmax of csrc/cpu/flash_lora.cpp) ------------------
// vexp2: 2^x for x ≤ 127; x < −126 (and −∞) gives 0; NaN stays NaN. 2^x = 2^n·2^f, n = round(x),
// f ∈ [−½, ½], 2^f = 1 + f·P(f) with Cephes' exp2f polynomial (relative error ≤ 2·10⁻⁷).
constexpr float kExp2C0 = 1.535336188319500e-4f, kExp2C1 = 1.339887440266574e-3f, kExp2C2 = 9.618437357674640e-3f,
                kExp2C3 = 5.550332471162809e-2f, kExp2C4 = 2.402264791363012e-1f, kExp2C5 = 6.931472028550421e-1f;

inline Vec exp2_poly(Vec f) {
  Vec p = vfma(vset1(kExp2C0), f, vset1(kExp2C1));
  p = vfma(p, f, vset1(kExp2C2));
  p = vfma(p, f, vset1(kExp2C3));
  p = vfma(p, f, vset1(kExp2C4));
  p = vfma(p, f, vset1(kExp2C5));
  return vfma(p, f, vset1(1.0f));
}

#if defined(LK_SIMD_AVX512)
inline Vec vsub(Vec a, Vec b) { return _mm512_sub_ps(a, b); }
inline Vec vmax(Vec a, Vec b) { return _mm512_max_ps(a, b); }
inline Vec vexp2(Vec x) {
  const __mmask16 keep = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-126.0f), _CMP_NLT_UQ);  // NaN kept
  x = _mm512_min_ps(_mm512_set1_ps(127.0f), _mm512_max_ps(_mm512_set1_ps(-126.0f), x));
  const Vec n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return _mm512_maskz_scalef_ps(keep, exp2_poly(_mm512_sub_ps(x, n)), n);
}
#elif defined(LK_SIMD_AVX2)
inline Vec vsub(Vec a, Vec b) { return _mm256_sub_ps(a, b); }
inline Vec vmax(Vec a, Vec b) { return _mm256_max_ps(a, b); }
inline Vec vexp2(Vec x) {
  const __m256 keep = _mm256_cmp_ps(x, _mm256_set1_ps(-126.0f), _CMP_NLT_UQ);
  x = _mm256_min_ps(_mm256_set1_ps(127.0f), _mm256_max_ps(_mm256_set1_ps(-126.0f), x));
  const Vec n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_and_ps(keep, _mm256_mul_ps(exp2_poly(_mm256_sub_ps(x, n)), _mm256_castsi256_ps(e)));
}
#elif defined(LK_SIMD_NEON)
inline Vec vsub(Vec a, Vec b) { return vsubq_f32(a, b); }
inline Vec vmax(Vec a, Vec b) { return vmaxq_f32(a, b); }
inline Vec vexp2(Vec x) {
  const uint32x4_t zero = vcltq_f32(x, vdupq_n_f32(-126.0f));  // false for NaN
  x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-126.0f)), vdupq_n_f32(127.0f));
  const Vec n = vrndnq_f32(x);
  const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
  const Vec r = vmulq_f32(exp2_poly(vsubq_f32(x, n)), vreinterpretq_f32_s32(e));
  return vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(r), zero));
}
#else
inline Vec vsub(Vec a, Vec b) {
  for (int i = 0; i < kLanes; ++i) a.v[i] -= b.v[i];
  return a;
}
inline Vec vmax(Vec a, Vec b) {
  for (int i = 0; i < kLanes; ++i) a.v[i] = a.v[i] < b.v[i] ? b.v[i] : a.v[i];
  return a;
}
inline Vec vexp2(Vec x) {
  for (int i = 0; i < kLanes; ++i) x.v[i] = std::exp2(x.v[i]);
  return x;
}
#endif

// The largest lane (of lanes that hold no NaN).
inline float vmax_lanes(Vec v) {
  alignas(64) float lanes[kLanes];
  vstore(lanes, v);
  float m = lanes[0];
  for (int i = 1; i < kLanes; ++i) m = lanes[i] > m ? lanes[i] : m;
  return m;
}

// Cache hint (a no-op where the compiler has no builtin).
inline void prefetch_for_write(const void* p) {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_prefetch(p, 1, 3);
#else
  (void)p;
#endif
}

// Element and vector access to a float32/float16/bfloat16 array by element index, the dtype a
// template argument so that hot loops carry no switch. Scalar versions round like the vector ones.
template <DType T>
inline float load_as_float(const void* base, int64_t i) {
  if constexpr (T == DType::Float16) return fp16_to_float(static_cast<const uint16_t*>(base)[i]);
  else if constexpr (T == DType::BFloat16) return bf16_to_float(static_cast<const uint16_t*>(base)[i]);
  else return static_cast<const float*>(base)[i];
}
template <DType T>
inline void store_from_float(void* base, int64_t i, float v) {
  if constexpr (T == DType::Float16) static_cast<uint16_t*>(base)[i] = float_to_fp16(v);
  else if constexpr (T == DType::BFloat16) static_cast<uint16_t*>(base)[i] = float_to_bf16(v);
  else static_cast<float*>(base)[i] = v;
}
template <DType T>
inline Vec vload_as_float(const void* base, int64_t i) {
  if constexpr (T == DType::Float16) return vload_fp16(static_cast<const uint16_t*>(base) + i);
  else if constexpr (T == DType::BFloat16) return vload_bf16(static_cast<const uint16_t*>(base) + i);
  else return vload(static_cast<const float*>(base) + i);
}
template <DType T>
inline void vstore_from_float(void* base, int64_t i, Vec v) {
  if constexpr (T == DType::Float16) vstore_fp16(static_cast<uint16_t*>(base) + i, v);
  else if constexpr (T == DType::BFloat16) vstore_bf16(static_cast<uint16_t*>(base) + i, v);
  else vstore(static_cast<float*>(base) + i, v);
}

// Calls fn(std::integral_constant<DType, T>{}) for the run-time float dtype.
template <class Fn>
inline decltype(auto) with_float_dtype(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::Float16: return fn(std::integral_constant<DType, DType::Float16>{});
    case DType::BFloat16: return fn(std::integral_constant<DType, DType::BFloat16>{});
    default: return fn(std::integral_constant<DType, DType::Float32>{});
  }
}

// Widens n elements starting at base[i] into dst (float32): vector body, scalar tail.
template <DType T>
inline void widen_row(const void* base, int64_t i, int64_t n, float* dst) {
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes) vstore(dst + k, vload_as_float<T>(base, i + k));
  for (; k < n; ++k) dst[k] = load_as_float<T>(base, i + k);
}

}  // namespace lk::cpu::LK_SIMD_NS
