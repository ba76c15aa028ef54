// Decoding packed quantized weights (NF4, ternary; csrc/formats) into float32 vectors, for the
// quantize / dequantize kernels (csrc/cpu/quant.cpp) and quant.matmul (csrc/cpu/quant_matmul.cpp).
//
// One trick serves both formats at every SIMD level: zero-extend kLanes packed bytes into the
// kLanes 32-bit lanes of an integer vector, shift, and look the codes up in a 16-entry float table
// by the lanes' low 4 bits (AVX-512: one vpermps; AVX2: two vpermps and a blend on bit 3; NEON: a
// 64-byte tbl). The table holds code values, so a shifted byte needs no masking:
//   NF4, 2 codes per byte:     high nibble  = table[byte >> 4], low nibble = table[byte] (low 4 bits)
//   ternary, 4 codes per byte: code s       = table[byte >> 2s] with table[i] = value(i & 3)
// The result is "planes": for NF4, kLanes even elements and kLanes odd ones; for ternary, four
// vectors of elements 4l + s. The matmul's decode GEMV consumes planes as they are (x permuted
// once to match); everything else interleaves them back to natural order (vzip).
//
// Include only from csrc/cpu/*.cpp (inside no namespace); everything lands in lk::cpu::LK_SIMD_NS.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "cpu/vec.h"
#include "formats/nf4.h"
#include "formats/ternary.h"
#include "ops/quant.h"

namespace lk::cpu::LK_SIMD_NS {

#if defined(LK_SIMD_AVX512)

using IVec = __m512i;
struct Table16 {
  __m512 values;
};
inline Table16 make_table16(const float* v) { return {_mm512_loadu_ps(v)}; }
inline IVec load_byte_lanes(const uint8_t* p) { return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
template <int S>
inline IVec shift_right(IVec v) { return _mm512_srli_epi32(v, S); }
inline Vec lookup16(const Table16& t, IVec idx) { return _mm512_permutexvar_ps(idx, t.values); }
inline IVec iset1(int32_t v) { return _mm512_set1_epi32(v); }
inline IVec iadd(IVec a, IVec b) { return _mm512_add_epi32(a, b); }
inline IVec select_greater(Vec v, Vec threshold, IVec if_greater, IVec otherwise) {
  return _mm512_mask_blend_epi32(_mm512_cmp_ps_mask(v, threshold, _CMP_GT_OQ), otherwise, if_greater);
}
inline void istore(int32_t* p, IVec v) { _mm512_storeu_si512(p, v); }
inline Vec vabs(Vec v) { return _mm512_abs_ps(v); }
inline Vec vdiv(Vec a, Vec b) { return _mm512_div_ps(a, b); }
// max(acc, candidate) that keeps acc when the candidate is NaN (MAXPS returns its second operand then).
inline Vec vmax_number(Vec acc, Vec candidate) { return _mm512_max_ps(candidate, acc); }
inline void vzip(Vec a, Vec b, Vec& lo, Vec& hi) {
  lo = _mm512_permutex2var_ps(a, _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23), b);
  hi = _mm512_permutex2var_ps(a, _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31), b);
}
// Lanes l < n take `below`, the others `rest` (any n).
inline Vec select_lanes_below(int64_t n, Vec below, Vec rest) {
  const __mmask16 mask = n >= kLanes ? 0xffff : n <= 0 ? 0 : static_cast<__mmask16>((1u << n) - 1);
  return _mm512_mask_blend_ps(mask, rest, below);
}

#elif defined(LK_SIMD_AVX2)

using IVec = __m256i;
struct Table16 {
  __m256 lo, hi;
};
inline Table16 make_table16(const float* v) { return {_mm256_loadu_ps(v), _mm256_loadu_ps(v + 8)}; }
inline IVec load_byte_lanes(const uint8_t* p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))); }
template <int S>
inline IVec shift_right(IVec v) { return _mm256_srli_epi32(v, S); }
// vpermps reads the index's low 3 bits; bit 3 (moved to the sign by << 28) picks the table half.
inline Vec lookup16(const Table16& t, IVec idx) {
  return _mm256_blendv_ps(_mm256_permutevar8x32_ps(t.lo, idx), _mm256_permutevar8x32_ps(t.hi, idx),
                          _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}
inline IVec iset1(int32_t v) { return _mm256_set1_epi32(v); }
inline IVec iadd(IVec a, IVec b) { return _mm256_add_epi32(a, b); }
inline IVec select_greater(Vec v, Vec threshold, IVec if_greater, IVec otherwise) {
  return _mm256_blendv_epi8(otherwise, if_greater, _mm256_castps_si256(_mm256_cmp_ps(v, threshold, _CMP_GT_OQ)));
}
inline void istore(int32_t* p, IVec v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
inline Vec vabs(Vec v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }
inline Vec vdiv(Vec a, Vec b) { return _mm256_div_ps(a, b); }
inline Vec vmax_number(Vec acc, Vec candidate) { return _mm256_max_ps(candidate, acc); }
inline void vzip(Vec a, Vec b, Vec& lo, Vec& hi) {
  const __m256 low = _mm256_unpacklo_ps(a, b), high = _mm256_unpackhi_ps(a, b);  // per 128-bit half
  lo = _mm256_permute2f128_ps(low, high, 0x20);
  hi = _mm256_permute2f128_ps(low, high, 0x31);
}
inline Vec select_lanes_below(int64_t n, Vec below, Vec rest) {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i limit = _mm256_set1_epi32(static_cast<int32_t>(std::clamp<int64_t>(n, 0, kLanes)));
  return _mm256_blendv_ps(rest, below, _mm256_castsi256_ps(_mm256_cmpgt_epi32(limit, lanes)));
}

#elif defined(LK_SIMD_NEON)

using IVec = uint32x4_t;
struct Table16 {
  uint8x16x4_t bytes;
};
inline Table16 make_table16(const float* v) {
  const uint8_t* b = reinterpret_cast<const uint8_t*>(v);
  return {{vld1q_u8(b), vld1q_u8(b + 16), vld1q_u8(b + 32), vld1q_u8(b + 48)}};
}
inline IVec load_byte_lanes(const uint8_t* p) {
  uint32_t word;
  std::memcpy(&word, p, 4);
  return vmovl_u16(vget_low_u16(vmovl_u8(vcreate_u8(word))));
}
template <int S>
inline IVec shift_right(IVec v) { return vshrq_n_u32(v, S); }
// Byte j of lane l reads table byte 4·(idx_l & 15) + j: the index times 0x01010101 plus 0x03020100.
inline Vec lookup16(const Table16& t, IVec idx) {
  const uint32x4_t base = vshlq_n_u32(vandq_u32(idx, vdupq_n_u32(15)), 2);
  const uint32x4_t bytes = vmlaq_u32(vdupq_n_u32(0x03020100u), base, vdupq_n_u32(0x01010101u));
  return vreinterpretq_f32_u8(vqtbl4q_u8(t.bytes, vreinterpretq_u8_u32(bytes)));
}
inline IVec iset1(int32_t v) { return vdupq_n_u32(static_cast<uint32_t>(v)); }
inline IVec iadd(IVec a, IVec b) { return vaddq_u32(a, b); }
inline IVec select_greater(Vec v, Vec threshold, IVec if_greater, IVec otherwise) {
  return vbslq_u32(vcgtq_f32(v, threshold), if_greater, otherwise);
}
inline void istore(int32_t* p, IVec v) { vst1q_u32(reinterpret_cast<uint32_t*>(p), v); }
inline Vec vabs(Vec v) { return vabsq_f32(v); }
inline Vec vdiv(Vec a, Vec b) { return vdivq_f32(a, b); }
inline Vec vmax_number(Vec acc, Vec candidate) { return vmaxnmq_f32(acc, candidate); }
inline void vzip(Vec a, Vec b, Vec& lo, Vec& hi) {
  lo = vzip1q_f32(a, b);
  hi = vzip2q_f32(a, b);
}
inline Vec select_lanes_below(int64_t n, Vec below, Vec rest) {
  const int32_t lane_index[4] = {0, 1, 2, 3};
  const int32x4_t limit = vdupq_n_s32(static_cast<int32_t>(std::clamp<int64_t>(n, 0, kLanes)));
  return vbslq_f32(vcltq_s32(vld1q_s32(lane_index), limit), below, rest);
}

#else  // LK_SIMD_SCALAR

struct IVec {
  int32_t v[4];
};
struct Table16 {
  float v[16];
};
inline Table16 make_table16(const float* v) {
  Table16 t;
  std::memcpy(t.v, v, sizeof(t.v));
  return t;
}
inline IVec load_byte_lanes(const uint8_t* p) { return IVec{{p[0], p[1], p[2], p[3]}}; }
template <int S>
inline IVec shift_right(IVec v) {
  for (int i = 0; i < 4; ++i) v.v[i] >>= S;
  return v;
}
inline Vec lookup16(const Table16& t, IVec idx) {
  return Vec{{t.v[idx.v[0] & 15], t.v[idx.v[1] & 15], t.v[idx.v[2] & 15], t.v[idx.v[3] & 15]}};
}
inline IVec iset1(int32_t v) { return IVec{{v, v, v, v}}; }
inline IVec iadd(IVec a, IVec b) {
  for (int i = 0; i < 4; ++i) a.v[i] += b.v[i];
  return a;
}
inline IVec select_greater(Vec v, Vec threshold, IVec if_greater, IVec otherwise) {
  for (int i = 0; i < 4; ++i)
    if (v.v[i] > threshold.v[i]) otherwise.v[i] = if_greater.v[i];
  return otherwise;
}
inline void istore(int32_t* p, IVec v) { std::memcpy(p, v.v, sizeof(v.v)); }
inline Vec vabs(Vec v) {
  for (float& x : v.v) x = x < 0.0f ? -x : x == 0.0f ? 0.0f : x;  // -0 → +0, NaN stays NaN
  return v;
}
inline Vec vdiv(Vec a, Vec b) {
  for (int i = 0; i < 4; ++i) a.v[i] /= b.v[i];
  return a;
}
inline Vec vmax_number(Vec acc, Vec candidate) {
  for (int i = 0; i < 4; ++i)
    if (candidate.v[i] > acc.v[i]) acc.v[i] = candidate.v[i];
  return acc;
}
inline void vzip(Vec a, Vec b, Vec& lo, Vec& hi) {
  lo = Vec{{a.v[0], b.v[0], a.v[1], b.v[1]}};
  hi = Vec{{a.v[2], b.v[2], a.v[3], b.v[3]}};
}
inline Vec select_lanes_below(int64_t n, Vec below, Vec rest) {
  for (int i = 0; i < 4; ++i)
    if (i < n) rest.v[i] = below.v[i];
  return rest;
}

#endif

// Cache hint (a no-op where the compiler has neither). On x86 an asm statement: GCC 12 deletes a
// loop whose body is only __builtin_prefetch calls, keeping the first one.
inline void prefetch_for_read(const void* p) {
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
  __asm__ volatile("prefetcht0 %0" : : "m"(*static_cast<const char*>(p)));
#elif defined(__GNUC__) || defined(__clang__)
  __builtin_prefetch(p, 0, 3);
#else
  (void)p;
#endif
}

// Makes `v` the float32 value it holds, so that the next operation rounds separately: GCC's
// default -ffp-contract=fast fuses a·b + c into one FMA even across statements, which would skip
// the product's rounding that NF4's double quantization prescribes. The empty asm hides v.
inline void keep_rounded(float& v) {
#if defined(__GNUC__) || defined(__clang__)
  __asm__("" : "+m"(v));
#endif
}

// The float32 absmax of NF4 block `block`: stored, or double-quantized,
// fp32(nested_code[q]·nested_absmax[block / 256]) + offset with two separate roundings.
inline float nf4_absmax(const QuantWeight& w, int64_t block) {
  if (w.absmax) return w.absmax[block];
  float nested = w.nested_code[w.absmax_code[block]] * w.nested_absmax[block / nf4::kNestedBlock];
  keep_rounded(nested);
  return nested + w.offset;
}

// The 16-entry tables: NF4's code values, and ternary's −1, 0, +1 (code 3: 0) repeated for the
// index's upper two bits.
inline Table16 code_table(QuantFormat format) {
  float values[16];
  for (int i = 0; i < 16; ++i)
    values[i] = format == QuantFormat::Nf4 ? nf4::code_value(i) : static_cast<float>(ternary::code_value(i & 3));
  return make_table16(values);
}

// Planes of kLanes packed bytes (see the top): NF4 gives 2 (even, odd elements), ternary 4.
template <QuantFormat F>
constexpr int kPlanes = F == QuantFormat::Nf4 ? 2 : 4;

template <QuantFormat F>
inline void decode_planes(const Table16& table, const uint8_t* bytes, Vec (&planes)[kPlanes<F>]) {
  const IVec lanes = load_byte_lanes(bytes);
  if constexpr (F == QuantFormat::Nf4) {
    planes[0] = lookup16(table, shift_right<4>(lanes));
    planes[1] = lookup16(table, lanes);
  } else {
    planes[0] = lookup16(table, lanes);
    planes[1] = lookup16(table, shift_right<2>(lanes));
    planes[2] = lookup16(table, shift_right<4>(lanes));
    planes[3] = lookup16(table, shift_right<6>(lanes));
  }
}

// Row segments of a quantized [n, k] weight as float32 values (code·absmax for NF4, code·scale
// for ternary: exact products, as dequantize defines them), in natural order: the dequantize op,
// and the panel packers of quant.matmul's prefill and backward. Whole vector chunks (NF4: 2·kLanes
// elements from an even one; ternary: 4·kLanes from a multiple of 4), wherever the segment starts
// and ends: the packers ask for K blocks of 257 columns, and with chunks only between block
// boundaries and scalar elements elsewhere, 12% (NF4) / 14% (ternary) of the elements went one by
// one, ~3 cycles per element on average: 15 ms of a 170 ms single-thread prefill at M=512,
// K=N=4096. An NF4 chunk that straddles two absmax blocks scales its lanes by either; the last
// chunk of a segment goes through a local buffer. Single elements remain at an odd (NF4) or
// unaligned (ternary) start and where a chunk would read past the packed bytes.
class QuantRows {
 public:
  explicit QuantRows(const QuantWeight& w) : w_(w), table_(code_table(w.format)) {
    while ((int64_t{1} << block_shift_) < w.block_size) ++block_shift_;  // a power of two: no idiv per chunk
  }

  // dst[0, len) = row `row`, columns [c0, c0 + len).
  void decode(int64_t row, int64_t c0, int64_t len, float* dst) const {
    if (w_.format == QuantFormat::Nf4) nf4(row * w_.k + c0, len, dst);
    else ternary(row, c0, len, dst);
  }

  // Asks for the packed bytes (and NF4's absmax) of the same segment ahead of its decode(). The
  // packers decode the rows of a panel one after another, each segment a line or two of a
  // different DRAM page (rows K/2 bytes apart) plus a line of absmax, which the hardware
  // prefetchers do not run ahead on: measured single-threaded at M=512, K=N=4096, the NF4 panel
  // decode took ~15 ms of a ~185 ms prefill, mostly waiting on those loads; ~6 ms with codes and
  // absmax prefetched 8 rows ahead (lora.forward's packing of float32 W: ~10 ms).
  void prefetch(int64_t row, int64_t c0, int64_t len) const {
    const uint8_t *first, *last;
    if (w_.format == QuantFormat::Nf4) {
      const int64_t e = row * w_.k + c0, block = e >> block_shift_;
      first = w_.packed + e / 2;
      last = w_.packed + (e + len - 1) / 2;
      if (w_.absmax) prefetch_for_read(w_.absmax + block);
      else prefetch_for_read(w_.absmax_code + block);
    } else {
      const uint8_t* bytes = w_.packed + row * ternary::row_bytes(w_.k);
      first = bytes + c0 / 4;
      last = bytes + (c0 + len - 1) / 4;
    }
    for (const uint8_t* line = first; line <= last; line += 64) prefetch_for_read(line);
    prefetch_for_read(last);
  }

 private:
  static constexpr int64_t kNf4Chunk = 2 * kLanes;
  static constexpr int64_t kTernaryChunk = 4 * kLanes;

  void nf4(int64_t e, int64_t len, float* dst) const {
    const int64_t end = e + len, elements = w_.n * w_.k;
    auto one = [&] {
      *dst++ = nf4::code_value(nf4::nibble(w_.packed, e)) * nf4_absmax(w_, e >> block_shift_);
      ++e;
    };
    if (e < end && (e & 1)) one();  // blocks start even: only the first element asked for can be odd
    // A chunk decodes 2·kLanes elements from an even one: its last byte must exist.
    for (; e < end && e + kNf4Chunk <= elements + (elements & 1); e += kNf4Chunk) {
      Vec planes[2], v[2];
      decode_planes<QuantFormat::Nf4>(table_, w_.packed + e / 2, planes);
      vzip(planes[0], planes[1], v[0], v[1]);
      // Blocks are ≥ 2·kLanes elements: a chunk lies in one block or straddles two.
      const int64_t block = e >> block_shift_, inside = ((block + 1) << block_shift_) - e;
      const Vec first = vset1(nf4_absmax(w_, block));
      const Vec next = inside < kNf4Chunk ? vset1(nf4_absmax(w_, block + 1)) : first;
      for (int h = 0; h < 2; ++h) v[h] = vmul(v[h], select_lanes_below(inside - h * kLanes, first, next));
      if (e + kNf4Chunk <= end) {
        vstore(dst, v[0]);
        vstore(dst + kLanes, v[1]);
        dst += kNf4Chunk;
      } else {
        store_partial(v, end - e, dst);
        return;
      }
    }
    while (e < end) one();
  }

  void ternary(int64_t row, int64_t k, int64_t len, float* dst) const {
    const int64_t end = k + len, row_bytes = ternary::row_bytes(w_.k);
    const uint8_t* bytes = w_.packed + row * row_bytes;
    // Bytes a chunk may read: to the end of the packed tensor.
    const int64_t readable = (w_.n - row) * row_bytes;
    const float scale = w_.scale;
    auto one = [&] { *dst++ = static_cast<float>(ternary::code_value(ternary::code_at(bytes, k++))) * scale; };
    while (k < end && (k & 3)) one();
    const Vec s = vset1(scale);
    for (; k < end && k / 4 + kTernaryChunk / 4 <= readable; k += kTernaryChunk) {
      Vec p[4], a0, a1, b0, b1, n[4];
      decode_planes<QuantFormat::Ternary>(table_, bytes + k / 4, p);
      vzip(p[0], p[2], a0, a1);  // elements 0, 2, 4, 6, …
      vzip(p[1], p[3], b0, b1);  // elements 1, 3, 5, 7, …
      vzip(a0, b0, n[0], n[1]);
      vzip(a1, b1, n[2], n[3]);
      for (Vec& v : n) v = vmul(v, s);
      if (k + kTernaryChunk <= end) {
        for (int v = 0; v < 4; ++v) vstore(dst + v * kLanes, n[v]);
        dst += kTernaryChunk;
      } else {
        store_partial(n, end - k, dst);
        return;
      }
    }
    while (k < end) one();
  }

  // The first `count` elements of consecutive vectors v[0], v[1], … (count < the vectors' lanes).
  template <int V>
  static void store_partial(const Vec (&v)[V], int64_t count, float* dst) {
    alignas(64) float buffer[V * kLanes];
    for (int i = 0; i < V; ++i) vstore(buffer + i * kLanes, v[i]);
    std::memcpy(dst, buffer, static_cast<size_t>(count) * sizeof(float));
  }

  const QuantWeight& w_;
  Table16 table_;
  int block_shift_ = 0;  // NF4: log2(block_size)
};

}  // namespace lk::cpu::LK_SIMD_NS
