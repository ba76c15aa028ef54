// attention.flashLora / flashLoraBackward: flash attention over a shared base KV cache plus
// low-rank adapter caches that are never expanded to full width (LRAgent's split). Per sequence b,
// query head h and its KV head g = h / (Hq / Hk), with ℓ = adapter_ids[b]:
//
//   k = k_base[b, :, g] + k_low_rank[b]·k_lora_b[ℓ, g]       [Sk, D]   (the key path is optional)
//   v = v_base[b, :, g] + v_low_rank[b]·v_lora_b[ℓ, g]       [Sk, D]
//   S = softmax_scale · q[b, :, h]·kᵀ, causal: key j visible to query i iff j ≤ i + Sk − Sq
//   out[b, :, h] = softmax(S)·v,  lse[b, h, i] = log Σ_j exp(S_ij)  (natural log, float32)
//
// computed as S = scale·(q·k_baseᵀ + (q·k_lora_bᵀ)·k_low_rankᵀ) and
// out = (P·v_base + (P·v_low_rank)·v_lora_b) / l, the two accumulators rescaled by the same online
// softmax: the r-wide products cost r/D of the base ones and the caches stay [Sk, r].
// A query row that sees no key (causal with Sq > Sk) gets out = 0 and lse = −∞.
// An adapter id outside [0, L) means "no adapter" for that sequence (base caches only); the
// TypeScript layer accepts −1 and rejects ids ≥ L.
//
// Backward (P recomputed from lse; D_i = Σ_d dO_id·out_id from the stored, rounded out as in
// FlashAttention; dS = P ⊙ (dO·vᵀ − D)):
//   grad_q = scale·(dS·k_base + (dS·k_low_rank)·k_lora_b)
//   dK_h = scale·dSᵀ·q,  dV_h = Pᵀ·dO          per query head, summed over a KV head's group:
//   grad_k_base[b, :, g] = Σ dK_h,  grad_v_base[b, :, g] = Σ dV_h
//   grad_v_low_rank[b] = Σ_g dV_g·v_lora_b[ℓ, g]ᵀ,  grad_v_lora_b[ℓ, g] = Σ_{b: ids = ℓ} v_low_rankᵀ·dV_g
//   (the key path likewise), accumulated in float32 and rounded once to the dtype.
#pragma once
#include <cstdint>

#include "../core/device.h"
#include "../core/dtype.h"

namespace lk {

// A [B, S, H, W] operand (W = D, or the rank r with H = 1 for a low-rank cache); the last dim is
// contiguous, the others through explicit element strides.
struct AttnTensor {
  const void* data = nullptr;
  int64_t batch_stride = 0, seq_stride = 0, head_stride = 0;
};

struct AttnOutTensor {
  void* data = nullptr;
  int64_t batch_stride = 0, seq_stride = 0, head_stride = 0;
};

struct FlashLoraParams {
  DType dtype = DType::Float32;  // of q, the caches, the B factors, out (and every gradient)
  int64_t batch = 0, seq_q = 0, seq_k = 0, heads_q = 0, heads_k = 0, head_dim = 0;
  int64_t adapters = 1;          // L, the leading dim of the B factors
  bool causal = false;
  float softmax_scale = 0.0f;    // the TypeScript layer passes 1/√D when the user gives none
  AttnTensor q, k_base, v_base;  // q [B, Sq, Hq, D], caches [B, Sk, Hk, D]
  // Value path: v_rank = 0 for none. v_low_rank [B, Sk, r] (head stride unused),
  // v_lora_b [L, Hk, r, D] contiguous.
  int64_t v_rank = 0;
  AttnTensor v_low_rank;
  const void* v_lora_b = nullptr;
  // Key path, the same shapes with k_rank.
  int64_t k_rank = 0;
  AttnTensor k_low_rank;
  const void* k_lora_b = nullptr;
  const int32_t* adapter_ids = nullptr;  // [B] on the op's device; null: adapter 0 for all
  AttnOutTensor out;                     // [B, Sq, Hq, D]
  float* lse = nullptr;                  // [B, Hq, Sq] contiguous
};

struct FlashLoraBackwardParams {
  FlashLoraParams fwd;  // the forward's inputs (seq_q ≥ 1); fwd.out and fwd.lse hold its results (read only)
  AttnTensor grad_out;  // [B, Sq, Hq, D]
  AttnOutTensor grad_q, grad_k_base, grad_v_base;
  AttnOutTensor grad_v_low_rank, grad_k_low_rank;  // [B, Sk, r], when the path is present
  void* grad_v_lora_b = nullptr;                   // [L, Hk, r, D] contiguous, when present
  void* grad_k_lora_b = nullptr;
};

// The head dims the kernels are compiled for, and the largest rank.
constexpr int64_t kFlashLoraHeadDims[] = {32, 64, 80, 96, 128, 256};
constexpr int64_t kFlashLoraMaxRank = 128;

// Check what memory safety needs and run on `device`. Throw lk::Error.
void flash_lora_forward(const FlashLoraParams& params, Device device);
void flash_lora_backward(const FlashLoraBackwardParams& params, Device device);

}  // namespace lk
