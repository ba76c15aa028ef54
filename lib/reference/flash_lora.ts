/**
 * float64 references of attention.flashLora / flashLoraBackward: the obvious form, which expands
 * the low-rank caches (the kernels never do). Per sequence b, query head h and its KV head
 * g = h / (Hq / Hk), with ℓ = adapterIds[b] (−1: no adapter):
 *
 *   k = kBase[b, :, g] + kLowRank[b]·kLoraB[ℓ, g],  v = vBase[b, :, g] + vLowRank[b]·vLoraB[ℓ, g]
 *   S = softmaxScale·q[b, :, h]·kᵀ (causal: key j visible to query i iff j ≤ i + Sk − Sq)
 *   out = softmax(S)·v,  lse = log Σ_j exp(S_ij)  (a row that sees no key: out 0, lse −∞)
 *
 * Backward: dP = dO·vᵀ, dS = P ⊙ (dP − D) with D = rowsum(P ⊙ dP) = Σ dO·out (from the stored
 * out when given), dQ = scale·dS·k, dK = scale·dSᵀ·q,
 * dV = Pᵀ·dO; the base grads sum dK, dV over each KV head's group, the low-rank ones are the chain
 * rule through the expansion: gradVLowRank[b] = Σ_g dV_g·vLoraB[ℓ, g]ᵀ and
 * gradVLoraB[ℓ, g] = Σ_{b: ids = ℓ} vLowRank[b]ᵀ·dV_g (the key path likewise).
 */
import { Tensor } from '../tensor.js';
import type { RefInput } from './dora.js';
import type { RefTensor } from './tolerance.js';

export interface ReferenceFlashLoraArgs {
  q: RefInput;
  kBase: RefInput;
  vBase: RefInput;
  vLowRank?: RefInput;
  vLoraB?: RefInput;
  kLowRank?: RefInput;
  kLoraB?: RefInput;
  /** One adapter id per sequence (−1: none); default all 0. */
  adapterIds?: Tensor | ArrayLike<number>;
  causal?: boolean;
  softmaxScale?: number;
}

export interface ReferenceFlashLoraResult {
  out: RefTensor;
  lse: RefTensor;
}

export interface ReferenceFlashLoraBackwardArgs extends ReferenceFlashLoraArgs {
  gradOut: RefInput;
  /**
   * The forward's stored out, as the kernels take it: D_i = Σ_d dO·out (FlashAttention's and
   * torch's rule, so a float16 / bfloat16 out's rounding is part of the definition). Default: the
   * exact out, D_i = Σ_j P·dP.
   */
  out?: RefInput;
}

export interface ReferenceFlashLoraGradients {
  gradQ: RefTensor;
  gradKBase: RefTensor;
  gradVBase: RefTensor;
  gradVLowRank?: RefTensor;
  gradVLoraB?: RefTensor;
  gradKLowRank?: RefTensor;
  gradKLoraB?: RefTensor;
}

function values(t: RefInput): ArrayLike<number> {
  return t instanceof Tensor ? t.toFloat32() : t.data;
}

interface LowRank {
  cache: ArrayLike<number>; // [B, Sk, r]
  factor: ArrayLike<number>; // [L, Hk, r, D]
  r: number;
  adapters: number;
}

interface Problem {
  batch: number;
  sq: number;
  sk: number;
  hq: number;
  hk: number;
  d: number;
  q: ArrayLike<number>;
  kBase: ArrayLike<number>;
  vBase: ArrayLike<number>;
  kLow?: LowRank;
  vLow?: LowRank;
  ids: number[];
  causal: boolean;
  scale: number;
}

function lowRankOf(cache: RefInput | undefined, factor: RefInput | undefined): LowRank | undefined {
  if (!cache || !factor) return undefined;
  return { cache: values(cache), factor: values(factor), r: cache.shape[2]!, adapters: factor.shape[0]! };
}

function problem(args: ReferenceFlashLoraArgs): Problem {
  const [batch, sq, hq, d] = args.q.shape as [number, number, number, number];
  const [, sk, hk] = args.kBase.shape as [number, number, number, number];
  const ids = args.adapterIds === undefined ? new Array<number>(batch).fill(0)
    : Array.from(args.adapterIds instanceof Tensor ? args.adapterIds.toArray() as Int32Array : args.adapterIds, Number);
  return {
    batch, sq, sk, hq, hk, d,
    q: values(args.q), kBase: values(args.kBase), vBase: values(args.vBase),
    kLow: lowRankOf(args.kLowRank, args.kLoraB), vLow: lowRankOf(args.vLowRank, args.vLoraB),
    ids, causal: args.causal ?? false, scale: args.softmaxScale ?? 1 / Math.sqrt(d),
  };
}

/** The full-width cache [Sk, D] of (b, g): base + lowRank·factor[ℓ, g] when ℓ is an adapter. */
function expand(p: Problem, base: ArrayLike<number>, low: LowRank | undefined, b: number, g: number): Float64Array {
  const { sk, hk, d } = p;
  const out = new Float64Array(sk * d);
  const ell = p.ids[b]!;
  for (let j = 0; j < sk; j++) {
    for (let c = 0; c < d; c++) out[j * d + c] = base[((b * sk + j) * hk + g) * d + c]!;
    if (!low || ell < 0 || ell >= low.adapters) continue;
    for (let t = 0; t < low.r; t++) {
      const lv = low.cache[(b * sk + j) * low.r + t]!;
      const f = ((ell * hk + g) * low.r + t) * d;
      for (let c = 0; c < d; c++) out[j * d + c]! += lv * low.factor[f + c]!;
    }
  }
  return out;
}

/**
 * The expanded cache the kernels never form, [B, Sk, Hk, D]: base + lowRank[b]·factor[ids[b], g]
 * (ids[b] = −1: base only), e.g. to run a plain attention on it.
 */
export function expandCache(base: RefInput, lowRank: RefInput, factor: RefInput, adapterIds?: ArrayLike<number>): RefTensor {
  const [batch, sk, hk, d] = base.shape as [number, number, number, number];
  const p = problem({ q: { data: new Float64Array(0), shape: [batch, 0, hk, d] }, kBase: base, vBase: base, adapterIds });
  const low = lowRankOf(lowRank, factor)!;
  const data = new Float64Array(batch * sk * hk * d);
  for (let b = 0; b < batch; b++) {
    for (let g = 0; g < hk; g++) {
      const e = expand(p, p.kBase, low, b, g);
      for (let j = 0; j < sk; j++) data.set(e.subarray(j * d, (j + 1) * d), ((b * sk + j) * hk + g) * d);
    }
  }
  return { data, shape: [batch, sk, hk, d] };
}

function visible(p: Problem, i: number, j: number): boolean {
  return !p.causal || j <= i + p.sk - p.sq;
}

/** P [Sq, Sk] and lse [Sq] of query head h of sequence b against the expanded keys k. */
function probabilities(p: Problem, b: number, h: number, k: Float64Array): { prob: Float64Array; lse: Float64Array } {
  const { sq, sk, hq, d } = p;
  const prob = new Float64Array(sq * sk);
  const lse = new Float64Array(sq);
  for (let i = 0; i < sq; i++) {
    const qi = ((b * sq + i) * hq + h) * d;
    let max = -Infinity;
    for (let j = 0; j < sk; j++) {
      if (!visible(p, i, j)) continue;
      let s = 0;
      for (let c = 0; c < d; c++) s += p.q[qi + c]! * k[j * d + c]!;
      prob[i * sk + j] = s * p.scale;
      max = Math.max(max, s * p.scale);
    }
    if (max === -Infinity) {
      lse[i] = -Infinity;
      continue;
    }
    let sum = 0;
    for (let j = 0; j < sk; j++) {
      if (!visible(p, i, j)) continue;
      prob[i * sk + j] = Math.exp(prob[i * sk + j]! - max);
      sum += prob[i * sk + j]!;
    }
    for (let j = 0; j < sk; j++) prob[i * sk + j]! /= sum;
    lse[i] = max + Math.log(sum);
  }
  return { prob, lse };
}

export function flashLora(args: ReferenceFlashLoraArgs): ReferenceFlashLoraResult {
  const p = problem(args);
  const { batch, sq, sk, hq, hk, d } = p;
  const out = new Float64Array(batch * sq * hq * d);
  const lse = new Float64Array(batch * hq * sq);
  const group = hq / hk;
  for (let b = 0; b < batch; b++) {
    for (let g = 0; g < hk; g++) {
      const k = expand(p, p.kBase, p.kLow, b, g);
      const v = expand(p, p.vBase, p.vLow, b, g);
      for (let h = g * group; h < (g + 1) * group; h++) {
        const { prob, lse: rowLse } = probabilities(p, b, h, k);
        for (let i = 0; i < sq; i++) {
          lse[(b * hq + h) * sq + i] = rowLse[i]!;
          const o = ((b * sq + i) * hq + h) * d;
          for (let j = 0; j < sk; j++) {
            const pij = prob[i * sk + j]!;
            if (pij === 0) continue;
            for (let c = 0; c < d; c++) out[o + c]! += pij * v[j * d + c]!;
          }
        }
      }
    }
  }
  return { out: { data: out, shape: [batch, sq, hq, d] }, lse: { data: lse, shape: [batch, hq, sq] } };
}

/** Adds the chain rule through base + cache·factor[ℓ, g] for the full-width gradient dX [Sk, D] of (b, g). */
function lowRankGrads(p: Problem, low: LowRank, b: number, g: number, dx: Float64Array, gradCache: Float64Array, gradFactor: Float64Array): void {
  const ell = p.ids[b]!;
  if (ell < 0 || ell >= low.adapters) return;
  const { sk, d } = p;
  for (let j = 0; j < sk; j++) {
    for (let t = 0; t < low.r; t++) {
      const f = ((ell * p.hk + g) * low.r + t) * d;
      const lv = low.cache[(b * sk + j) * low.r + t]!;
      let acc = 0;
      for (let c = 0; c < d; c++) {
        acc += dx[j * d + c]! * low.factor[f + c]!;
        gradFactor[f + c]! += lv * dx[j * d + c]!;
      }
      gradCache[(b * sk + j) * low.r + t]! += acc;
    }
  }
}

export function flashLoraBackward(args: ReferenceFlashLoraBackwardArgs): ReferenceFlashLoraGradients {
  const p = problem(args);
  const { batch, sq, sk, hq, hk, d } = p;
  const dout = values(args.gradOut);
  const storedOut = args.out ? values(args.out) : undefined;
  const group = hq / hk;
  const gradQ = new Float64Array(batch * sq * hq * d);
  const gradKBase = new Float64Array(batch * sk * hk * d);
  const gradVBase = new Float64Array(batch * sk * hk * d);
  const lowGrads = (low: LowRank | undefined) =>
    low ? { cache: new Float64Array(batch * sk * low.r), factor: new Float64Array(low.factor.length) } : undefined;
  const kGrads = lowGrads(p.kLow);
  const vGrads = lowGrads(p.vLow);
  for (let b = 0; b < batch; b++) {
    for (let g = 0; g < hk; g++) {
      const k = expand(p, p.kBase, p.kLow, b, g);
      const v = expand(p, p.vBase, p.vLow, b, g);
      const dk = new Float64Array(sk * d);
      const dv = new Float64Array(sk * d);
      for (let h = g * group; h < (g + 1) * group; h++) {
        const { prob } = probabilities(p, b, h, k);
        for (let i = 0; i < sq; i++) {
          const row = ((b * sq + i) * hq + h) * d;
          const dp = new Float64Array(sk);
          let rowDot = 0;
          for (let j = 0; j < sk; j++) {
            const pij = prob[i * sk + j]!;
            if (pij === 0) continue;
            let s = 0;
            for (let c = 0; c < d; c++) {
              s += dout[row + c]! * v[j * d + c]!;
              dv[j * d + c]! += pij * dout[row + c]!;
            }
            dp[j] = s;
            rowDot += pij * s;
          }
          if (storedOut) {
            rowDot = 0;
            for (let c = 0; c < d; c++) rowDot += dout[row + c]! * storedOut[row + c]!;
          }
          for (let j = 0; j < sk; j++) {
            const pij = prob[i * sk + j]!;
            if (pij === 0) continue;
            const ds = pij * (dp[j]! - rowDot) * p.scale;
            for (let c = 0; c < d; c++) {
              gradQ[row + c]! += ds * k[j * d + c]!;
              dk[j * d + c]! += ds * p.q[row + c]!;
            }
          }
        }
      }
      for (let j = 0; j < sk; j++) {
        for (let c = 0; c < d; c++) {
          gradKBase[((b * sk + j) * hk + g) * d + c] = dk[j * d + c]!;
          gradVBase[((b * sk + j) * hk + g) * d + c] = dv[j * d + c]!;
        }
      }
      if (p.kLow) lowRankGrads(p, p.kLow, b, g, dk, kGrads!.cache, kGrads!.factor);
      if (p.vLow) lowRankGrads(p, p.vLow, b, g, dv, vGrads!.cache, vGrads!.factor);
    }
  }
  const result: ReferenceFlashLoraGradients = {
    gradQ: { data: gradQ, shape: [batch, sq, hq, d] },
    gradKBase: { data: gradKBase, shape: [batch, sk, hk, d] },
    gradVBase: { data: gradVBase, shape: [batch, sk, hk, d] },
  };
  if (p.vLow) {
    result.gradVLowRank = { data: vGrads!.cache, shape: [batch, sk, p.vLow.r] };
    result.gradVLoraB = { data: vGrads!.factor, shape: [p.vLow.adapters, hk, p.vLow.r, d] };
  }
  if (p.kLow) {
    result.gradKLowRank = { data: kGrads!.cache, shape: [batch, sk, p.kLow.r] };
    result.gradKLoraB = { data: kGrads!.factor, shape: [p.kLow.adapters, hk, p.kLow.r, d] };
  }
  return result;
}
