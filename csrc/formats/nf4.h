// NF4 (bitsandbytes / QLoRA 4-bit NormalFloat): the code table, once, for host and device code.
// Facts from ../shared/FORMATS.md (bitsandbytes' public sources); the code is ours.
//
// A weight [N, K] is flattened row-major and cut into blocks of `block_size` elements (32 … 4096,
// powers of two); element e of the flattened weight is the nibble of byte e / 2 — the HIGH nibble
// for even e — and its value is code[nibble] · absmax[e / block_size] (float32, then the dtype).
// absmax is float32 per block, or double-quantized: absmax[i] = fp32(nested_code[q[i]] ·
// nested_absmax[i / 256]) + offset, two separate float32 roundings (no fused multiply-add).
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define LK_HOST_DEVICE __host__ __device__
#else
#define LK_HOST_DEVICE
#endif

namespace lk::nf4 {

constexpr int kCodes = 16;
constexpr int kNestedBlock = 256;  // double quantization: absmax values per nested block
constexpr int kNestedCodes = 256;  // entries of the nested (dynamic) map
constexpr int kMinBlock = 32, kMaxBlock = 4096;

// The 16 code values, ascending; exact float32 values (the decimals are their shortest forms).
LK_HOST_DEVICE inline float code_value(int code) {
  constexpr float kValues[kCodes] = {
      -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
      -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
      0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
      0.7229568362236023f, 1.0f};
  return kValues[code & 15];
}

// The nibble of flattened element e in the packed bytes.
LK_HOST_DEVICE inline int nibble(const uint8_t* packed, int64_t e) {
  const uint8_t byte = packed[e >> 1];
  return (e & 1) ? (byte & 15) : (byte >> 4);
}

LK_HOST_DEVICE inline int64_t packed_bytes(int64_t elements) { return (elements + 1) / 2; }
LK_HOST_DEVICE inline int64_t blocks(int64_t elements, int64_t block_size) { return (elements + block_size - 1) / block_size; }

// ---- quantizing: the rules both backends follow, so that the CPU and CUDA kernels write the same
// bytes (and bitsandbytes' bytes for the same input).
//   * absmax[b] = max |x| over block b (a fmaxf fold: NaN inputs are ignored), float32; the tail
//     block has n·k mod block_size elements. An all-zero block stores absmax 0.
//   * code = encode(x · inverse_absmax(absmax)): the product with the reciprocal, never a division.
//     An all-zero block multiplies by 0 and gets code 7 (0.0) for every element: bytes 0x77.
//   * packing: element 2j in the high nibble of byte j; an odd element count leaves code 7 (0.0) in
//     the last low nibble: bitsandbytes pads the flattened weight with 0.0f before encoding.
//   * double quantization: offset = mean(absmax) summed in a fixed order, in double:
//       S_j = Σ absmax[i] for i in nested block j = [256·j, 256·j + 256), ascending, from 0.0
//       offset = float(Σ_j S_j (ascending j, from 0.0) / blocks)       (one rounding to float32)
//     then per nested block j: d_i = absmax[i] − offset (float32), nested_absmax[j] = max |d_i|
//     (fmaxf fold), absmax_code[i] = encode_nested(nested_code, d_i · inverse_absmax(nested_absmax[j])).
// 1/absmax as the encoder multiplies by it (IEEE division, no fast-math reciprocal); 0 for an
// all-zero block, so that 0·x stays 0 instead of 0·∞ = NaN.
LK_HOST_DEVICE inline float inverse_absmax(float absmax) { return absmax > 0.0f ? 1.0f / absmax : 0.0f; }

// The thresholds between neighbouring codes, as bitsandbytes' CUDA decision tree compares against
// them: FORMATS.md's decimals (-0.8480964004993439, …, 0.8614784181118011) written there as `f`
// literals, i.e. each decimal rounded straight to the nearest float32. Written here as exact hex
// floats, because four of them (i = 0, 8, 12, 14) are NOT float32((code[i] + code[i + 1]) / 2): the
// exact midpoint of two codes is a float32 tie, and its shortest decimal lies ~1e-17 to one side of
// it, so the literal rounds to the neighbour that ties-to-even would not pick (i = 0: 0xbf591cd9, not
// 0xbf591cd8). A value exactly on the rounded-to-even midpoint takes the upper code at i = 0, 12, 14.
LK_HOST_DEVICE inline float midpoint(int i) {
  constexpr float kThresholds[kCodes - 1] = {
      -0x1.b239b2p-1f, -0x1.38a4e0p-1f, -0x1.d70900p-2f, -0x1.5bd4ecp-2f, -0x1.e079d8p-3f,
      -0x1.1a7178p-3f, -0x1.74f0e2p-5f, 0x1.45f5fep-5f,  0x1.ec90c6p-4f,  0x1.a0cfc0p-3f,
      0x1.2b05a8p-2f,  0x1.8ea7f2p-2f,  0x1.00da06p-1f,  0x1.491b5ep-1f,  0x1.b913b2p-1f};
  return kThresholds[i];
}

// The nearest code of a scaled value: the number of midpoints strictly below it, so that a value
// exactly on a midpoint goes to the LOWER code (bitsandbytes compares with `>`); NaN gives 0.
LK_HOST_DEVICE inline int encode(float v) {
  int code = 0;
  for (int i = 0; i < kCodes - 1; ++i) code += v > midpoint(i) ? 1 : 0;
  return code;
}

// Double quantization's 8-bit encoder over a sorted map of 256 float32 values (bitsandbytes' signed
// dynamic map): the nearest code, with the midpoints (map[i] + map[i + 1])·0.5f in float32, and a
// value exactly on a midpoint going to the EVEN one of its two codes. That tie rule is what
// bitsandbytes' 8-bit quantizer does: its 7-step halving search from 127 always ends on an even
// index p, then compares with the midpoint on the side of v (v > map[p]: strict >, the tie stays on
// p; else strict <, the tie also stays on p). Checked against a transcription of that search over
// every midpoint of the map, ±1 ulp, and 200 000 random values. NaN gives 0.
LK_HOST_DEVICE inline int encode_nested(const float* map, float v) {
  int lo = 0, hi = kNestedCodes - 1;  // the answer is in [lo, hi]
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (v > (map[mid] + map[mid + 1]) * 0.5f) lo = mid + 1;
    else hi = mid;
  }
  const bool tie_above = lo < kNestedCodes - 1 && v == (map[lo] + map[lo + 1]) * 0.5f;
  return tie_above && (lo & 1) ? lo + 1 : lo;
}

}  // namespace lk::nf4
