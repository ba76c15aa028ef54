/**
 * init.loftq: a quantized base weight and a LoRA pair initialised so that deq(Q) + scale·B·A
 * approximates W better than deq(quantize(W)) alone (LoftQ / LQ-LoRA, ../shared/FORMATS.md):
 *
 *   residual = W; T times: Q = quantize(residual); E = W − deq(Q); scale·B·A = SVD_r(E);
 *   residual = W − scale·B·A; errors[t] = ‖W − deq(Q) − scale·B·A‖_F / ‖W‖_F.
 *
 * Composed from native ops, so it runs wherever they do: quantize / dequantize on the weight's
 * device, the two big products of the truncated SVD through the native GEMM there, and the small
 * dense linear algebra in float64 on the host.
 *
 * The truncated SVD is randomized (Halko, Martinsson, Tropp 2011): l = r + 10 sample columns, four
 * power iterations, then the exact SVD of the small l × K projection. Ten products with E per
 * LoftQ step: Y = E·Ω, (Eᵀ·Q, E·Q) four times, Qᵀ·E. Napkin math for a 4096 × 4096 weight, r = 16,
 * l = 26: each product 2·4096²·26 ≈ 0.87 GFLOP, ~8.7 GFLOP per step (a few ms on a GPU), where a
 * dense SVD would cost ~10·n³ ≈ 700 GFLOP.
 *
 * Host work per step is O(N·K) float passes plus O(l²·(N + K)) for the small factorizations:
 * the ops have no elementwise subtraction, so E = W − deq(Q), the next residual and the error are
 * formed on the host from float32 copies (on CUDA: deq(Q) and B·A come down, E and the residual go
 * up, 4 × 64 MiB per step for 4096², ~10 ms at PCIe speeds). Measured on two shared CPU cores at
 * 4096², r = 16: ~1.1 s per step, of which the ten products ~0.3 s, the eleven Gram-Schmidt
 * passes over [4096, 26] ~0.18 s, and the elementwise passes, copies, quantize and dequantize the
 * rest; on a GPU the host part (~0.5 s of it) would dominate. The residual stays float32 whatever
 * the weight's dtype (as LoftQ quantizes the float32 weight); Q remembers the weight's dtype.
 * B and A are rounded to the weight's dtype in every step, so the reported error is that of the
 * parts returned, and the next residual is built from them.
 */
import { FLOAT_DTYPES, numbersToStorage, storageToFloat32 } from '../dtype.js';
import { argumentError, describeValue } from '../errors.js';
import { Tensor, type Device } from '../tensor.js';
import { Args, shapeText } from '../validate.js';
import { backward, forward } from './lora_linear.js';
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

/** A column is dependent on the ones before it when re-orthogonalization leaves less than this fraction of it. */
const DEPENDENT = 1e-13;

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

// ---- host linear algebra (float64) ------------------------------------------------------------------

/**
 * Orthonormalizes the l columns of an m × l matrix stored column after column (column j at
 * [j·m, (j + 1)·m)), in place, by classical Gram-Schmidt run twice (enough for orthogonality to
 * float64 precision while the columns are numerically independent). Returns R (l × l, row-major)
 * with input = Q·R. A column that is dependent on the ones before it becomes zero (its row of R
 * too), so Q·Qᵀ stays an orthogonal projector.
 */
function orthonormalize(cols: Float64Array, m: number, l: number): Float64Array {
  const r = new Float64Array(l * l);
  for (let j = 0; j < l; j++) {
    const v = cols.subarray(j * m, (j + 1) * m);
    const before = norm(v);
    for (let pass = 0; pass < 2; pass++) {
      for (let i = 0; i < j; i++) {
        const q = cols.subarray(i * m, (i + 1) * m);
        let h = 0;
        for (let p = 0; p < m; p++) h += q[p]! * v[p]!;
        for (let p = 0; p < m; p++) v[p]! -= h * q[p]!;
        r[i * l + j]! += h;
      }
    }
    const after = norm(v);
    if (after > DEPENDENT * before) {
      r[j * l + j] = after;
      for (let p = 0; p < m; p++) v[p]! /= after;
    } else {
      v.fill(0);
      for (let i = 0; i < j; i++) r[i * l + j] = 0;
    }
  }
  return r;
}

function norm(v: Float64Array): number {
  let s = 0;
  for (let p = 0; p < v.length; p++) s += v[p]! * v[p]!;
  return Math.sqrt(s);
}

/**
 * SVD of a small square matrix M (l × l, row-major) by one-sided Jacobi (Hestenes): plane
 * rotations V of M's columns until they are orthogonal, M·V = U·Σ. Returns σ descending with U's
 * and V's columns in that order (column-major, l × l each); U's column is zero where σ = 0.
 */
function smallSvd(mIn: Float64Array, l: number): { sigma: Float64Array; u: Float64Array; v: Float64Array } {
  const w = new Float64Array(l * l);  // column-major copy of M, rotated into U·Σ
  for (let i = 0; i < l; i++) for (let j = 0; j < l; j++) w[j * l + i] = mIn[i * l + j]!;
  const v = new Float64Array(l * l);
  for (let j = 0; j < l; j++) v[j * l + j] = 1;
  const rotate = (x: Float64Array, a: number, b: number, c: number, s: number) => {
    for (let p = 0; p < l; p++) {
      const xa = x[a * l + p]!, xb = x[b * l + p]!;
      x[a * l + p] = c * xa - s * xb;
      x[b * l + p] = s * xa + c * xb;
    }
  };
  // Quadratic convergence: ~6-10 sweeps for l ≤ 64; the cap only guards against a NaN input.
  for (let sweep = 0; sweep < 60; sweep++) {
    let rotated = false;
    for (let a = 0; a < l - 1; a++) {
      for (let b = a + 1; b < l; b++) {
        let alpha = 0, beta = 0, gamma = 0;
        for (let p = 0; p < l; p++) {
          const xa = w[a * l + p]!, xb = w[b * l + p]!;
          alpha += xa * xa;
          beta += xb * xb;
          gamma += xa * xb;
        }
        if (Math.abs(gamma) <= 1e-15 * Math.sqrt(alpha * beta)) continue;
        rotated = true;
        const zeta = (beta - alpha) / (2 * gamma);
        const t = Math.sign(zeta || 1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t);
        rotate(w, a, b, c, c * t);
        rotate(v, a, b, c, c * t);
      }
    }
    if (!rotated) break;
  }
  const sigmaAll = Array.from({ length: l }, (_, j) => norm(w.subarray(j * l, (j + 1) * l)));
  const order = sigmaAll.map((_, j) => j).sort((x, y) => sigmaAll[y]! - sigmaAll[x]!);
  const sigma = new Float64Array(l), u = new Float64Array(l * l), vs = new Float64Array(l * l);
  order.forEach((j, rank) => {
    sigma[rank] = sigmaAll[j]!;
    for (let p = 0; p < l; p++) {
      u[rank * l + p] = sigmaAll[j]! > 0 ? w[j * l + p]! / sigmaAll[j]! : 0;
      vs[rank * l + p] = v[j * l + p]!;
    }
  });
  return { sigma, u, v: vs };
}

// ---- device products --------------------------------------------------------------------------------

function onDevice(t: Tensor, device: Device): Tensor {
  return device === 'cpu' ? t : t.to(device);
}

/** A float32 host array as a float32 tensor on `device` (a view of it on the CPU). */
function upload(values: Float32Array, shape: readonly number[], device: Device): Tensor {
  return onDevice(Tensor.from(values, shape), device);
}

/** Frees a device tensor now (host tensors are left to the garbage collector). */
function release(...tensors: Tensor[]): void {
  for (const t of tensors) if (t.device !== 'cpu') t.dispose();
}

/** The l columns of a column-major m × l matrix as the rows of a float32 [l, m] tensor. */
function rowsOf(cols: Float64Array, l: number, m: number, device: Device): Tensor {
  return upload(Float32Array.from(cols), [l, m], device);
}

/**
 * The products with E [N, K] (float32, on the device) the range finder needs, through the native
 * GEMM with E as the weight operand: (E·X)ᵀ = Xᵀ·Eᵀ via lora.forward (x·weightᵀ, with the l rows
 * of Xᵀ as x: a short-M product, ~3× faster on the CPU than E as x with 26 output columns, and it
 * lands column-major), and Gᵀ·E via lora.backward's gradInput (gradOutput·weight), the one
 * native product that takes E untransposed on the right. Its other outputs are made free: scale 0
 * and a rank-1 zero adapter cost O(l·(N + K)).
 */
class Products {
  readonly #zeroX: Tensor;
  readonly #zeroA: Tensor;
  readonly #zeroB: Tensor;

  constructor(readonly e: Tensor, readonly n: number, k: number, l: number) {
    this.#zeroX = Tensor.zeros([l, k], { device: e.device });
    this.#zeroA = Tensor.zeros([1, k], { device: e.device });
    this.#zeroB = Tensor.zeros([n, 1], { device: e.device });
  }

  /** E·X for X given as its l columns' rows [l, K] (released here): the result's columns, column-major N × l. */
  times(xRows: Tensor): Float64Array {
    const y = forward({ x: xRows, weight: this.e });
    const cols = Float64Array.from(y.toFloat32());
    release(y, xRows);
    return cols;
  }

  /** Gᵀ·E for G column-major N × l: [l, K] row-major, i.e. Eᵀ·G column-major K × l. */
  transposeTimes(g: Float64Array, l: number): Float64Array {
    const gRows = rowsOf(g, l, this.n, this.e.device);
    const { gradInput, gradA, gradB } = backward({
      gradOutput: gRows, x: this.#zeroX, weight: this.e, a: this.#zeroA, b: this.#zeroB, scale: 0,
    });
    const out = Float64Array.from(gradInput!.toFloat32());
    release(gRows, gradInput!, gradA, gradB);
    return out;
  }

  dispose(): void {
    release(this.#zeroX, this.#zeroA, this.#zeroB);
  }
}

/**
 * The rank-r truncated SVD of E (randomized, see the top) as B [N, r] and A [r, K] (row-major,
 * float64) with scale·B·A = U_r·Σ_r·V_rᵀ, the singular values split evenly: B = U·sqrt(Σ/scale),
 * A = sqrt(Σ/scale)·Vᵀ.
 */
function truncatedSvd(e: Tensor, n: number, k: number, rank: number, scale: number, seed: number): { b: Float64Array; a: Float64Array } {
  const device = e.device;
  const l = Math.min(rank + OVERSAMPLE, n, k);
  const products = new Products(e, n, k, l);
  // Ω [K, l] as its rows, seeded by the step: the same weight gives the same result.
  let qy = products.times(Tensor.randn([l, k], { device, seed }));  // columns of Y = E·Ω
  orthonormalize(qy, n, l);
  for (let it = 0; it < POWER_ITERS; it++) {
    const z = products.transposeTimes(qy, l);  // columns of Eᵀ·Q_y
    orthonormalize(z, k, l);
    qy = products.times(rowsOf(z, l, k, device));
    orthonormalize(qy, n, l);
  }
  // Bs = Q_yᵀ·E [l, K]; with Bsᵀ = Q_k·R_k, Bs = R_kᵀ·Q_kᵀ = U·Σ·(Q_k·V)ᵀ for R_kᵀ = U·Σ·Vᵀ.
  const qk = products.transposeTimes(qy, l);
  products.dispose();
  const rk = orthonormalize(qk, k, l);
  const rkT = new Float64Array(l * l);
  for (let i = 0; i < l; i++) for (let j = 0; j < l; j++) rkT[i * l + j] = rk[j * l + i]!;
  const { sigma, u, v } = smallSvd(rkT, l);
  return splitFactors(qy, qk, sigma, u, v, n, k, l, rank, scale);
}

/** B = Q_y·U_r·sqrt(Σ_r/scale) [N, r] and A = sqrt(Σ_r/scale)·(Q_k·V_r)ᵀ [r, K], row-major. */
function splitFactors(
  qy: Float64Array, qk: Float64Array, sigma: Float64Array, u: Float64Array, v: Float64Array,
  n: number, k: number, l: number, rank: number, scale: number,
): { b: Float64Array; a: Float64Array } {
  const b = new Float64Array(n * rank), a = new Float64Array(rank * k);
  for (let j = 0; j < rank; j++) {
    const root = Math.sqrt(sigma[j]! / scale);
    for (let c = 0; c < l; c++) {
      const uc = u[j * l + c]! * root, vc = v[j * l + c]! * root;
      if (uc !== 0) for (let i = 0; i < n; i++) b[i * rank + j]! += qy[c * n + i]! * uc;
      if (vc !== 0) for (let p = 0; p < k; p++) a[j * k + p]! += qk[c * k + p]! * vc;
    }
  }
  return { b, a };
}

// ---- the alternation --------------------------------------------------------------------------------

/** values rounded once to `dtype` (float16 / bfloat16 through float32, as Tensor.from does). */
function roundTo(dtype: QuantDType, values: Float64Array): Float32Array {
  return dtype === 'float32' ? Float32Array.from(values) : storageToFloat32(dtype, numbersToStorage(dtype, values));
}

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
 * after each step. On CUDA it waits for the device every step (the host does the small algebra).
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
    const factors = truncatedSvd(eDev, n, k, rank, scale, step);
    release(eDev);
    bRounded = roundTo(dtype, factors.b);
    aRounded = roundTo(dtype, factors.a);
    // B·A [N, K] through the native GEMM (x·weightᵀ with x = B, weight = Aᵀ): N·K·r FMAs.
    const aT = new Float32Array(k * rank);
    for (let j = 0; j < rank; j++) for (let p = 0; p < k; p++) aT[p * rank + j] = aRounded[j * k + p]!;
    const bDev = upload(bRounded, [n, rank], device), aTDev = upload(aT, [k, rank], device);
    const baDev = forward({ x: bDev, weight: aTDev });
    const ba = baDev.toFloat32();
    release(bDev, aTDev, baDev);
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
  const toDtype = (values: Float32Array, shape: number[]) => onDevice(Tensor.from(numbersToStorage(dtype, values), shape, { dtype }), device);
  return { quantized: quantized!, a: toDtype(aRounded, [rank, k]), b: toDtype(bRounded, [n, rank]), errors };
}
