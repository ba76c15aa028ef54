/**
 * LoRA initialisations from the base weight's SVD (../shared/FORMATS.md), composed from native ops
 * so they run wherever those do:
 *
 * init.pissa (PiSSA): W = U·S·Vh; the adapter takes the principal part, b = U_r·sqrt(S_r/scale),
 * a = sqrt(S_r/scale)·Vh_r, and the base weight becomes the residual W − scale·b·a (PEFT's
 * semantics). The SVD is linalg.svd truncated to r (exact) or linalg.svdLowRank (randomized).
 *
 * init.loftq: a quantized base weight and a LoRA pair initialised so that deq(Q) + scale·B·A
 * approximates W better than deq(quantize(W)) alone (LoftQ / LQ-LoRA):
 *
 *   residual = W; T times: Q = quantize(residual); E = W − deq(Q); scale·B·A = SVD_r(E);
 *   residual = W − scale·B·A; errors[t] = ‖W − deq(Q) − scale·B·A‖_F / ‖W‖_F.
 *
 * quantize / dequantize run on the weight's device, and so does the truncated SVD: linalg.svdLowRank
 * (Halko, Martinsson, Tropp 2011) with l = r + 10 sample columns and four power iterations, then
 * the exact SVD of the small l × K projection. Ten products with E per LoftQ step: Y = E·Ω,
 * (Eᵀ·Q, E·Q) four times, Qᵀ·E; napkin math for a 4096 × 4096 weight, r = 16, l = 26: each
 * product 2·4096²·26 ≈ 0.87 GFLOP, ~8.7 GFLOP per step (a few ms on a GPU), where a dense SVD
 * would cost ~10·n³ ≈ 700 GFLOP. The QRs of the thin [4096, 26] factors (2·m·l² ≈ 5.5 MFLOP each)
 * and the small SVD are native too.
 *
 * Host work: the ops have no elementwise subtraction, so E = W − deq(Q), the next residual and the
 * error (loftq) and pissa's residual are formed on the host from float32 copies (on CUDA: deq(Q)
 * and B·A come down, E and the residual go up, 4 × 64 MiB per LoftQ step for 4096², ~10 ms at
 * PCIe speeds), as is the split of the singular values between B and A ((N + K)·r values).
 * LoftQ's residual stays float32 whatever the weight's dtype (as LoftQ quantizes the float32
 * weight); Q remembers the weight's dtype. B and A are rounded to the weight's dtype (in every
 * LoftQ step), so reported errors and residuals are those of the parts returned.
 */
import { FLOAT_DTYPES } from '../dtype.js';
import { argumentError, describeValue } from '../errors.js';
import { Tensor, type Device } from '../tensor.js';
import { Args, shapeText } from '../validate.js';
import { float32Of, release, roundTo, splitFactors, svdLowRank, tensorOf, truncatedSvd } from './linalg.js';
import { forward } from './lora_linear.js';
import {
  BLOCK_SIZE_TEXT, disposeQuantized, isBlockSize, nf4Dequantize, nf4Quantize, type Nf4Tensor, type QuantDType,
  type QuantizedTensor, ternaryDequantize, ternaryQuantize, type TernaryTensor,
} from './quant.js';

export type LoftqFormat = 'nf4' | 'ternary';

export interface LoftqOptions {
  /** The LoRA rank r: an integer from 1 to min(N, K). */
  rank: number;
  /** The base weight's format. */
  format: LoftqFormat;
  /** Alternation steps (≥ 1). Default 5. */
  iters?: number;
  /** NF4 elements per block (as quant.nf4.quantize takes). Default 64; not for ternary. */
  blockSize?: number;
  /** The LoRA multiplier the pair will be used with (PEFT: lora_alpha / r), > 0. Default 1. */
  scale?: number;
}

export interface LoftqResult {
  /** Q from the last step, on the weight's device; its dtype is the weight's. */
  quantized: Nf4Tensor | TernaryTensor;
  /** lora_A.weight [r, K] in the weight's dtype and device. */
  a: Tensor;
  /** lora_B.weight [N, r] in the weight's dtype and device. */
  b: Tensor;
  /** ‖W − deq(Q) − scale·B·A‖_F / ‖W‖_F after each step (the numerator alone when W is all zero). */
  errors: number[];
}

/** Sample columns beyond the rank: enough that the rank-r subspace is caught with high probability. */
const OVERSAMPLE = 10;
/**
 * Power iterations: each raises the weight of a direction by σ², sharpening the gap between σ_r
 * and σ_{r+1}. Quantization noise has a nearly flat spectrum, so a couple are not enough: on a
 * 67 × 93 weight (r = 3, 8; NF4 and ternary) the first step's error exceeded the exact truncated
 * SVD's by up to 0.5% with 2, 0.07% with 4, 0.006% with 6.
 */
const POWER_ITERS = 4;

const OP = 'init.loftq';

interface Validated {
  weight: Tensor;
  n: number;
  k: number;
  rank: number;
  format: LoftqFormat;
  iters: number;
  blockSize: number;
  scale: number;
}

function validate(weight: unknown, opts: unknown): Validated {
  const w = new Args(OP, { weight }).tensor('weight', { dtypes: FLOAT_DTYPES });
  if (w.shape.length !== 2 || w.shape[0]! < 1 || w.shape[1]! < 1) {
    throw argumentError('ERR_SHAPE', OP, 'weight.shape', '[N, K] with N, K ≥ 1', shapeText(w.shape));
  }
  const [n, k] = w.shape as [number, number];
  if (opts === null || typeof opts !== 'object' || Array.isArray(opts)) {
    throw argumentError('ERR_ARGUMENT', OP, 'opts', 'an object with rank and format', describeValue(opts));
  }
  const o = opts as Record<string, unknown>;
  const maxRank = Math.min(n, k);
  if (!Number.isSafeInteger(o['rank']) || (o['rank'] as number) < 1 || (o['rank'] as number) > maxRank) {
    throw argumentError('ERR_ARGUMENT', OP, 'opts.rank', `an integer from 1 to min(N, K) = ${maxRank}`, describeValue(o['rank']));
  }
  const format = o['format'];
  if (format !== 'nf4' && format !== 'ternary') {
    throw argumentError('ERR_ARGUMENT', OP, 'opts.format', `'nf4' or 'ternary'`, describeValue(format));
  }
  const iters = o['iters'] ?? 5;
  if (!Number.isSafeInteger(iters) || (iters as number) < 1) {
    throw argumentError('ERR_ARGUMENT', OP, 'opts.iters', 'an integer ≥ 1', describeValue(iters));
  }
  const blockSize = o['blockSize'];
  if (format === 'ternary' && blockSize !== undefined) {
    throw argumentError('ERR_ARGUMENT', OP, 'opts.blockSize', `undefined for format 'ternary' (one scale per tensor)`, describeValue(blockSize));
  }
  const block = blockSize ?? 64;
  if (!isBlockSize(block)) throw argumentError('ERR_ARGUMENT', OP, 'opts.blockSize', BLOCK_SIZE_TEXT, describeValue(blockSize));
  const scale = o['scale'] ?? 1;
  if (typeof scale !== 'number' || !Number.isFinite(scale) || scale <= 0) {
    throw argumentError('ERR_ARGUMENT', OP, 'opts.scale', 'a positive finite number', describeValue(scale));
  }
  return { weight: w, n, k, rank: o['rank'] as number, format, iters: iters as number, blockSize: block as number, scale };
}

// ---- shared by loftq and pissa ---------------------------------------------------------------------

function onDevice(t: Tensor, device: Device): Tensor {
  return device === 'cpu' ? t : t.to(device);
}

/** A float32 host array as a float32 tensor on `device` (a view of it on the CPU). */
function upload(values: Float32Array, shape: readonly number[], device: Device): Tensor {
  return onDevice(Tensor.from(values, shape), device);
}

/**
 * b·a [N, K] from host values of b [N, r] and a [r, K] through the native GEMM on `device`
 * (x·weightᵀ with x = b, weight = aᵀ, exact float32): N·K·r FMAs.
 */
function lowRankProduct(b: Float32Array, a: Float32Array, n: number, rank: number, k: number, device: Device): Float32Array {
  const aT = new Float32Array(k * rank);
  for (let j = 0; j < rank; j++) for (let p = 0; p < k; p++) aT[p * rank + j] = a[j * k + p]!;
  const bDev = upload(b, [n, rank], device), aTDev = upload(aT, [k, rank], device);
  const baDev = forward({ x: bDev, weight: aTDev, allowTf32: false });
  const ba = baDev.toFloat32();
  release(bDev, aTDev, baDev);
  return ba;
}

// ---- the alternation --------------------------------------------------------------------------------

function quantizeAs(v: Validated, residual: Tensor): QuantizedTensor {
  const dtype = v.weight.dtype as QuantDType;
  if (v.format === 'nf4') return { ...nf4Quantize(residual, { blockSize: v.blockSize }), dtype };
  return { ...ternaryQuantize(residual), dtype };
}

function dequantizeF32(q: QuantizedTensor): Tensor {
  return q.format === 'nf4' ? nf4Dequantize(q, { dtype: 'float32' }) : ternaryDequantize(q, { dtype: 'float32' });
}

/**
 * LoftQ initialisation of a quantized weight and its LoRA pair (see the top): returns Q from the
 * last step, a [r, K] and b [N, r] in the weight's dtype on its device, and the relative error
 * after each step. On CUDA it waits for the device every step (the host forms E and the residual).
 */
export function loftq(weight: Tensor, opts: LoftqOptions): LoftqResult {
  const v = validate(weight, opts);
  const { n, k, rank, scale } = v;
  const device = v.weight.device;
  const dtype = v.weight.dtype as QuantDType;
  const w = v.weight.toFloat32();
  let normSq = 0;
  for (let i = 0; i < w.length; i++) normSq += w[i]! * w[i]!;
  const normW = Math.sqrt(normSq);
  // The residual to quantize, then E = W − deq(Q) for the GEMMs, then the next residual: one
  // buffer (on the CPU the tensors over it are views, and each op is done before it is rewritten).
  const work = Float32Array.from(w);
  let quantized: QuantizedTensor | undefined;
  let bRounded: Float32Array = new Float32Array(0), aRounded: Float32Array = new Float32Array(0);
  const errors: number[] = [];
  for (let step = 0; step < v.iters; step++) {
    const residualDev = upload(work, [n, k], device);
    if (quantized) disposeQuantized(quantized);
    quantized = quantizeAs(v, residualDev);
    release(residualDev);
    const deq = dequantizeF32(quantized);
    const d = deq.toFloat32();
    release(deq);
    // E in float32 for the GEMMs; the error below is formed in float64 from w and d.
    for (let i = 0; i < work.length; i++) work[i] = w[i]! - d[i]!;
    const eDev = upload(work, [n, k], device);
    // Ω seeded by the step: the same weight gives the same result.
    const svd = svdLowRank(eDev, { rank, oversample: OVERSAMPLE, iters: POWER_ITERS, seed: step });
    ({ b: bRounded, a: aRounded } = splitFactors(svd, scale, dtype));
    release(eDev, svd.u, svd.s, svd.vh);
    const ba = lowRankProduct(bRounded, aRounded, n, rank, k, device);
    let errSq = 0;
    for (let i = 0; i < work.length; i++) {
      const low = scale * ba[i]!;
      const err = w[i]! - d[i]! - low;
      errSq += err * err;
      work[i] = w[i]! - low;
    }
    // An all-zero W has a zero error too: report the numerator rather than 0/0.
    errors.push(normW > 0 ? Math.sqrt(errSq) / normW : Math.sqrt(errSq));
  }
  return { quantized: quantized!, a: tensorOf(aRounded, [rank, k], dtype, device), b: tensorOf(bRounded, [n, rank], dtype, device), errors };
}

// ---- pissa -------------------------------------------------------------------------------------------

export type PissaMethod = 'exact' | 'randomized';

export interface PissaOptions {
  /** The LoRA rank r: an integer from 1 to min(N, K). */
  rank: number;
  /** The LoRA multiplier the pair will be used with (PEFT: lora_alpha / r), > 0. Default 1. */
  scale?: number;
  /** 'exact': linalg.svd (keeping r triplets); 'randomized': linalg.svdLowRank. Default 'exact'. */
  method?: PissaMethod;
  /** 'randomized' only: power iterations (linalg.svdLowRank's iters, default 2). */
  iters?: number;
  /** 'randomized' only: the sample's seed (default 0). */
  seed?: number;
}

export interface PissaResult {
  /** lora_A.weight [r, K] = sqrt(S_r/scale)·Vh_r in the weight's dtype and device. */
  a: Tensor;
  /** lora_B.weight [N, r] = U_r·sqrt(S_r/scale) in the weight's dtype and device. */
  b: Tensor;
  /** The new base weight W − scale·b·a [N, K] (from the rounded a and b), in the weight's dtype and device. */
  residual: Tensor;
}

const PISSA = 'init.pissa';

function validatePissa(weight: unknown, opts: unknown): { w: Tensor; n: number; k: number; rank: number; scale: number; method: PissaMethod; lowRank: { iters?: number; seed?: number } } {
  const w = new Args(PISSA, { weight }).tensor('weight', { dtypes: FLOAT_DTYPES });
  if (w.shape.length !== 2 || w.shape[0]! < 1 || w.shape[1]! < 1) {
    throw argumentError('ERR_SHAPE', PISSA, 'weight.shape', '[N, K] with N, K ≥ 1', shapeText(w.shape));
  }
  const [n, k] = w.shape as [number, number];
  if (opts === null || typeof opts !== 'object' || Array.isArray(opts)) {
    throw argumentError('ERR_ARGUMENT', PISSA, 'opts', 'an object with rank', describeValue(opts));
  }
  const o = opts as Record<string, unknown>;
  const maxRank = Math.min(n, k);
  if (!Number.isSafeInteger(o['rank']) || (o['rank'] as number) < 1 || (o['rank'] as number) > maxRank) {
    throw argumentError('ERR_ARGUMENT', PISSA, 'opts.rank', `an integer from 1 to min(N, K) = ${maxRank}`, describeValue(o['rank']));
  }
  const scale = o['scale'] ?? 1;
  if (typeof scale !== 'number' || !Number.isFinite(scale) || scale <= 0) {
    throw argumentError('ERR_ARGUMENT', PISSA, 'opts.scale', 'a positive finite number', describeValue(scale));
  }
  const method = o['method'] ?? 'exact';
  if (method !== 'exact' && method !== 'randomized') {
    throw argumentError('ERR_ARGUMENT', PISSA, 'opts.method', `'exact' or 'randomized'`, describeValue(method));
  }
  const lowRank: { iters?: number; seed?: number } = {};
  for (const [name, min] of [['iters', 0], ['seed', Number.MIN_SAFE_INTEGER]] as const) {
    const value = o[name];
    if (value === undefined) continue;
    if (method === 'exact') throw argumentError('ERR_ARGUMENT', PISSA, `opts.${name}`, `undefined for method 'exact'`, describeValue(value));
    if (!Number.isSafeInteger(value) || (value as number) < min) {
      throw argumentError('ERR_ARGUMENT', PISSA, `opts.${name}`, name === 'iters' ? 'an integer ≥ 0' : 'a safe integer', describeValue(value));
    }
    lowRank[name] = value as number;
  }
  return { w, n, k, rank: o['rank'] as number, scale, method, lowRank };
}

/**
 * PiSSA initialisation (see the top): the rank-r principal part of the weight [N, K] (float32,
 * float16 or bfloat16) as a LoRA pair, and the residual base weight, all in the weight's dtype and
 * device; residual + scale·b·a = W up to the residual's rounding to the dtype. Half weights are
 * factored in float32 (converted through the host).
 */
export function pissa(weight: Tensor, opts: PissaOptions): PissaResult {
  const { w, n, k, rank, scale, method, lowRank } = validatePissa(weight, opts);
  const device = w.device, dtype = w.dtype as QuantDType;
  const w32 = float32Of(w);
  const svd = method === 'exact' ? truncatedSvd(PISSA, w32, rank) : svdLowRank(w32, { rank, ...lowRank });
  const { b, a } = splitFactors(svd, scale, dtype);
  release(svd.u, svd.s, svd.vh);
  if (w32 !== w) release(w32);
  const ba = lowRankProduct(b, a, n, rank, k, device);
  const wv = w.toFloat32();
  const residual = roundTo(dtype, Float64Array.from(wv, (x, e) => x - scale * ba[e]!));
  return { a: tensorOf(a, [rank, k], dtype, device), b: tensorOf(b, [n, rank], dtype, device), residual: tensorOf(residual, [n, k], dtype, device) };
}
