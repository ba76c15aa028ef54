// The Flash-LoRA-Attention forward's kernel arguments and the per-CTA pieces its kernels share:
// the FA2-style mma.sync / FMA kernels (cuda/flash_lora.cu) and the Hopper one (TMA + wgmma,
// cuda/flash_lora_wgmma.cu). Which CTA does what (work_of), where a row's results go (row_dst).
#pragma once
#include <cstdint>

#include "common.cuh"

namespace lk::cuda_ops::flash_lora {

// Operand bits of FwdArgs::vec: rows 16-byte aligned, so tiles are staged with cp.async.
enum : unsigned { kVecQ = 1, kVecK = 2, kVecV = 4, kVecKr = 8, kVecVr = 16, kVecKlb = 32, kVecVlb = 64 };

struct FwdArgs {
  const void *q, *k, *v, *kr, *vr, *klb, *vlb;
  long long q_b, q_s, q_h, k_b, k_s, k_h, v_b, v_s, v_h, kr_b, kr_s, vr_b, vr_s;
  const int32_t* ids;
  void* out;
  long long o_b, o_s, o_h;
  float* lse;
  float* part_o;    // split-KV: [splits][B][Hq][Sq][D] normalized partial outputs, or null (direct)
  float* part_lse;  // split-KV: [splits][B][Hq][Sq]
  int batch, sq, sk, hq, group, adapters;
  int rk, rv, rkp, rvp;  // ranks (0: no such path) and their padded widths
  int splits, tiles_per_split;
  int head_dim;
  float scale_log2;      // softmax_scale·log2(e): scores live in the log2 domain
  bool causal, two_stage;
  unsigned vec;
  // Shared-memory plan (bytes): row pitches, region offsets, the stage size and its parts.
  int row_d, row_kr, row_vr, qr_pitch;  // qr_pitch: floats per row of the FMA kernel's Qr / O_r
  int off_qr, off_p, off_area, stage_bytes, st_v, st_kr, st_vr;
};

#if defined(SIMT_DEVICE_PATH)
__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int imax(int a, int b) { return a < b ? b : a; }
__device__ __forceinline__ long long lclamp(long long v, long long lo, long long hi) { return v < lo ? lo : v > hi ? hi : v; }

// What a CTA works on: sequence b, KV head g, split z, its rows and its key tiles.
struct Work {
  int b, g, z, row0, rows, adapter;  // adapter −1: base caches only
  int t_begin, t_end;                // key tiles [t_begin, t_end) of BN keys
  int full_end;                      // keys below it are visible to every row of the tile
};

template <int BM, int BN>
__device__ __forceinline__ Work work_of(const FwdArgs& a) {
  Work w;
  w.z = static_cast<int>(blockIdx.z) % a.splits;
  w.b = static_cast<int>(blockIdx.z) / a.splits;
  w.g = static_cast<int>(blockIdx.y);
  w.row0 = static_cast<int>(blockIdx.x) * BM;
  w.rows = a.sq * a.group;
  const int id = a.ids ? a.ids[w.b] : 0;
  w.adapter = (a.rk || a.rv) && id >= 0 && id < a.adapters ? id : -1;
  const long long shift = static_cast<long long>(a.sk) - a.sq;  // bottom-right aligned diagonal
  const long long i_lo = w.row0 / a.group, i_hi = imin(a.sq - 1, (w.row0 + BM - 1) / a.group);
  const long long end = a.causal ? lclamp(i_hi + shift + 1, 0, a.sk) : a.sk;
  w.full_end = a.causal ? static_cast<int>(lclamp(i_lo + shift + 1, 0, a.sk)) : a.sk;
  const int tiles = static_cast<int>((end + BN - 1) / BN);
  w.t_begin = imin(tiles, w.z * a.tiles_per_split);
  w.t_end = imin(tiles, w.t_begin + a.tiles_per_split);
  return w;
}

// The first key row ρ cannot see (Sk for rows past the tile's operand).
__device__ __forceinline__ int key_limit(const FwdArgs& a, const Work& w, int rho) {
  if (!a.causal || rho >= w.rows) return a.sk;
  return static_cast<int>(lclamp(static_cast<long long>(rho / a.group) + a.sk - a.sq + 1, 0, a.sk));
}

// Where row ρ's results go: out[b, i, h] and lse[b, h, i], or split z's float32 partial row.
struct RowDst {
  long long out;  // element offset of the row in out (direct)
  long long idx;  // (b·Hq + h)·Sq + i, plus z·B·Hq·Sq for a partial
};
__device__ __forceinline__ RowDst row_dst(const FwdArgs& a, const Work& w, int rho) {
  const int i = rho / a.group, h = w.g * a.group + rho % a.group;
  const long long idx = (static_cast<long long>(w.b) * a.hq + h) * a.sq + i;
  if (a.part_o) return {0, idx + static_cast<long long>(w.z) * a.batch * a.hq * a.sq};
  return {w.b * a.o_b + i * a.o_s + h * a.o_h, idx};
}
template <class E, int D>
__device__ __forceinline__ void store_out(const FwdArgs& a, const RowDst& d, int col, float v) {
  if (a.part_o) a.part_o[d.idx * D + col] = v;
  else static_cast<typename E::storage*>(a.out)[d.out + col] = E::from_float(v);
}
// m: the row's running max in the log2 domain; l: Σ 2^(x − m). No visible key: −∞.
__device__ __forceinline__ void store_lse(const FwdArgs& a, const RowDst& d, float m, float l) {
  const float v = l > 0.f ? (m + log2f(l)) * 0.693147180559945309f : -INFINITY;
  (a.part_o ? a.part_lse : a.lse)[d.idx] = v;
}

// Rows ρ0 and ρ0 + 8 of a thread's accumulator fragment (the mma.sync C / wgmma D layout: columns
// 8f + 2q and + 1 of fragment f from get(f, 2·half) and get(f, 2·half + 1)), and their lse from the
// quad's lane 0.
template <class E, int D, class Get>
__device__ __forceinline__ void store_rows(const FwdArgs& a, const Work& w, int rho0, int lane, const float (&m)[2], const float (&l)[2],
                                           Get get) {
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int rho = rho0 + 8 * half;
    if (rho >= w.rows) continue;
    const RowDst d = row_dst(a, w, rho);
#pragma unroll
    for (int f = 0; f < D / 8; ++f) {
      store_out<E, D>(a, d, 8 * f + 2 * (lane % 4), get(f, 2 * half));
      store_out<E, D>(a, d, 8 * f + 2 * (lane % 4) + 1, get(f, 2 * half + 1));
    }
    if (lane % 4 == 0) store_lse(a, d, m[half], l[half]);
  }
}

// The online softmax's step for a thread's two rows, each held by a quad (lanes 4g … 4g + 3: the
// mma.sync C layout, which wgmma's D fragment shares): mx (this tile's max per row, the running max
// folded in) is reduced over the quad and becomes m; base is what p = 2^(x − base) uses (0 for a
// row with no visible key yet: every p is then 0, not NaN); alpha = 2^(m_old − base) rescales the
// row's O and l.
__device__ __forceinline__ void softmax_rescale(float (&m)[2], float (&mx)[2], float (&base)[2], float (&alpha)[2]) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(kFullMask, mx[r], 1));
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(kFullMask, mx[r], 2));
    base[r] = mx[r] == -INFINITY ? 0.f : mx[r];
    alpha[r] = exp2f(m[r] - base[r]);
    m[r] = mx[r];
  }
}

// The finish: l summed over the quad; inv = 1/l (0 for a row that saw no key).
__device__ __forceinline__ void softmax_finish(float (&l)[2], float (&inv)[2]) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(kFullMask, l[r], 1);
    l[r] += __shfl_xor_sync(kFullMask, l[r], 2);
    inv[r] = l[r] > 0.f ? __fdividef(1.f, l[r]) : 0.f;  // l ≥ 1: no IEEE-division call
  }
}
#endif  // SIMT_DEVICE_PATH

// The Hopper forward (cuda/flash_lora_wgmma.cu): whether it takes these arguments on a device of
// compute capability cc (sm_90a binary, 16-bit, D 64 or 128, ranks ≤ 64 and multiples of 8,
// TMA-aligned caches), and its launch (every key tile per CTA: no split-KV; notes its plan).
bool wgmma_covers(const FwdArgs& a, DType dtype, int cc);
void run_wgmma(const FwdArgs& a, DType dtype, int device, cudaStream_t st);

}  // namespace lk::cuda_ops::flash_lora
