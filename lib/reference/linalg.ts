/**
 * References of linalg.svd / linalg.qr (lib/ops/linalg.ts) and of the ops composed on them,
 * lora.compress and lora.merge (lib/ops/lora_merge.ts), in float64.
 *
 * SVD: one-sided Jacobi (Hestenes) on the columns of each matrix (of its transpose when m < n),
 * swept cyclically until every pair is orthogonal to 1e-15 relative (|a_iᵀa_j| ≤ 1e-15·‖a_i‖‖a_j‖,
 * a few ulps of float64): the singular values come out to high relative accuracy, small ones
 * included (no Gram matrix squares the condition number). σ are the column norms, sorted
 * descending; U's columns are the normalized columns, except where σ ≤ 1e-13·σ_1 (the noise left
 * of a zero singular value carries no direction): there they complete the basis by Gram-Schmidt on
 * unit vectors, so UᵀU = I always. O(sweeps·m·n²) per matrix: for test sizes.
 *
 * QR: Householder, reduced, diag(r) ≥ 0 (the unique factorization of a full-rank matrix).
 *
 * compress / merge: the product Σ w_i·b_i·a_i formed densely, its SVD truncated to the rank and
 * split evenly (b = U·sqrt(Σ), a = sqrt(Σ)·Vh), rounded to the adapters' dtype as the op's are.
 */
import { numbersToStorage, storageToFloat64 } from '../dtype.js';
import type { QuantDType } from '../ops/quant.js';
import type { Tensor } from '../tensor.js';
import type { RefTensor } from './tolerance.js';

/** Pairs are orthogonal when |a_iᵀa_j| ≤ ORTHOGONAL·‖a_i‖·‖a_j‖. */
const ORTHOGONAL = 1e-15;
/** Quadratic convergence: ~6-12 sweeps; the cap only guards a NaN input. */
const MAX_SWEEPS = 100;
/** σ_j ≤ NEGLIGIBLE·σ_1: column j of U completes the basis instead of normalizing noise. */
const NEGLIGIBLE = 1e-13;

export interface ReferenceSvd {
  /** [..., m, k] */
  u: RefTensor;
  /** [..., k], descending */
  s: RefTensor;
  /** [..., k, n] */
  vh: RefTensor;
}

export interface ReferenceQr {
  /** [..., m, k] */
  q: RefTensor;
  /** [..., k, n] */
  r: RefTensor;
}

function valuesOf(a: Tensor | RefTensor): Float64Array {
  return 'data' in a ? a.data : storageToFloat64(a.dtype, a.toArray());
}

function dot(x: Float64Array, y: Float64Array): number {
  let s = 0;
  for (let p = 0; p < x.length; p++) s += x[p]! * y[p]!;
  return s;
}

/**
 * The SVD of one tall matrix (m ≥ n) given as its n columns: σ descending, U's and V's columns
 * in that order (each an array of length m or n).
 */
function tallSvd(cols: Float64Array[], m: number, n: number): { sigma: number[]; u: Float64Array[]; v: Float64Array[] } {
  const v = Array.from({ length: n }, (_, j) => Float64Array.from({ length: n }, (_, i) => (i === j ? 1 : 0)));
  const rotate = (x: Float64Array[], i: number, j: number, c: number, s: number) => {
    const xi = x[i]!, xj = x[j]!;
    for (let p = 0; p < xi.length; p++) {
      const a = xi[p]!, b = xj[p]!;
      xi[p] = c * a - s * b;
      xj[p] = s * a + c * b;
    }
  };
  for (let sweep = 0; sweep < MAX_SWEEPS; sweep++) {
    let rotated = false;
    for (let i = 0; i < n - 1; i++) {
      for (let j = i + 1; j < n; j++) {
        const alpha = dot(cols[i]!, cols[i]!), beta = dot(cols[j]!, cols[j]!), gamma = dot(cols[i]!, cols[j]!);
        if (!(Math.abs(gamma) > ORTHOGONAL * Math.sqrt(alpha * beta))) continue;
        rotated = true;
        // Rutishauser: tan θ = t, the smaller root of t² + 2ζt − 1 = 0, zeroes the pair's inner product.
        const zeta = (beta - alpha) / (2 * gamma);
        const t = Math.sign(zeta || 1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t);
        rotate(cols, i, j, c, c * t);
        rotate(v, i, j, c, c * t);
      }
    }
    if (!rotated) break;
  }
  const norms = cols.map((x) => Math.sqrt(dot(x, x)));
  const order = norms.map((_, j) => j).sort((x, y) => norms[y]! - norms[x]!);
  const sigma = order.map((j) => norms[j]!);
  const u: Float64Array[] = [];
  order.forEach((j, rank) => {
    if (sigma[rank]! > NEGLIGIBLE * sigma[0]! && sigma[rank]! > 0) u.push(cols[j]!.map((x) => x / sigma[rank]!));
    else u.push(completion(u, m));
  });
  return { sigma, u, v: order.map((j) => v[j]!) };
}

/**
 * A unit vector of length m orthogonal to `basis` (orthonormal, fewer than m vectors): e_k, e_k+1, …
 * (k = |basis|, cyclically) twice Gram-Schmidt, the first that keeps more than half its length,
 * else the longest. Starting at k, a zero matrix's completions succeed at the first try.
 */
function completion(basis: Float64Array[], m: number): Float64Array {
  let best = new Float64Array(m), bestNorm = -1;
  for (let t = 0; t < m && bestNorm <= 0.5; t++) {
    const e = (basis.length + t) % m;
    const x = new Float64Array(m);
    x[e] = 1;
    for (let pass = 0; pass < 2; pass++) {
      for (const q of basis) {
        const h = dot(q, x);
        for (let p = 0; p < m; p++) x[p]! -= h * q[p]!;
      }
    }
    const norm = Math.sqrt(dot(x, x));
    if (norm > bestNorm) {
      best = x;
      bestNorm = norm;
    }
  }
  return best.map((x) => x / bestNorm);
}

/** Batch, m, n of a [..., m, n]. */
function dims(shape: readonly number[]): { batchShape: number[]; batch: number; m: number; n: number } {
  const batchShape = shape.slice(0, -2);
  return { batchShape, batch: batchShape.reduce((x, y) => x * y, 1), m: shape[shape.length - 2]!, n: shape[shape.length - 1]! };
}

/** The economy SVD of each matrix of a [..., m, n], in float64 (see the top). */
export function svd(a: Tensor | RefTensor): ReferenceSvd {
  const values = valuesOf(a);
  const { batchShape, batch, m, n } = dims(a.shape);
  const k = Math.min(m, n);
  const u = new Float64Array(batch * m * k), s = new Float64Array(batch * k), vh = new Float64Array(batch * k * n);
  for (let b = 0; b < batch; b++) {
    const at = (i: number, j: number) => values[b * m * n + i * n + j]!;
    // The columns of A (m ≥ n) or of Aᵀ (m < n: then A = V·Σ·Uᵀ of the transpose's factors).
    const tall = m >= n;
    const [rows, cols] = tall ? [m, n] : [n, m];
    const columns = Array.from({ length: cols }, (_, j) => Float64Array.from({ length: rows }, (_, i) => (tall ? at(i, j) : at(j, i))));
    const f = tallSvd(columns, rows, cols);
    const [left, right] = tall ? [f.u, f.v] : [f.v, f.u];
    for (let j = 0; j < k; j++) {
      s[b * k + j] = f.sigma[j]!;
      for (let i = 0; i < m; i++) u[b * m * k + i * k + j] = left[j]![i]!;
      for (let p = 0; p < n; p++) vh[b * k * n + j * n + p] = right[j]![p]!;
    }
  }
  return { u: { data: u, shape: [...batchShape, m, k] }, s: { data: s, shape: [...batchShape, k] }, vh: { data: vh, shape: [...batchShape, k, n] } };
}

/** The reduced QR of each matrix of a [..., m, n] by Householder reflections, diag(r) ≥ 0, in float64. */
export function qr(a: Tensor | RefTensor): ReferenceQr {
  const values = valuesOf(a);
  const { batchShape, batch, m, n } = dims(a.shape);
  const k = Math.min(m, n);
  const q = new Float64Array(batch * m * k), r = new Float64Array(batch * k * n);
  for (let b = 0; b < batch; b++) {
    const w = values.slice(b * m * n, (b + 1) * m * n);  // row-major, reduced in place to R
    const reflectors: Float64Array[] = [];
    for (let j = 0; j < k; j++) {
      // v = x + sign(x_0)·‖x‖·e_0 over rows j…m−1 of column j; H = I − 2vvᵀ/vᵀv.
      const v = Float64Array.from({ length: m - j }, (_, i) => w[(j + i) * n + j]!);
      const norm = Math.sqrt(dot(v, v));
      v[0]! += (v[0]! >= 0 ? 1 : -1) * norm;
      const vv = dot(v, v);
      reflectors.push(vv > 0 ? v.map((x) => x * Math.sqrt(2 / vv)) : v.fill(0));
      const h = reflectors[j]!;
      for (let c = j; c < n; c++) {
        let t = 0;
        for (let i = 0; i < m - j; i++) t += h[i]! * w[(j + i) * n + c]!;
        for (let i = 0; i < m - j; i++) w[(j + i) * n + c]! -= t * h[i]!;
      }
    }
    // Q = H_0·…·H_{k−1} applied to the first k unit vectors, back to front.
    const qb = new Float64Array(m * k);
    for (let j = 0; j < k; j++) qb[j * k + j] = 1;
    for (let j = k - 1; j >= 0; j--) {
      const h = reflectors[j]!;
      for (let c = 0; c < k; c++) {
        let t = 0;
        for (let i = 0; i < m - j; i++) t += h[i]! * qb[(j + i) * k + c]!;
        for (let i = 0; i < m - j; i++) qb[(j + i) * k + c]! -= t * h[i]!;
      }
    }
    // diag(r) ≥ 0: flip row j of R and column j of Q together.
    for (let j = 0; j < k; j++) {
      const sign = w[j * n + j]! < 0 ? -1 : 1;
      for (let c = 0; c < n; c++) r[b * k * n + j * n + c] = c >= j ? sign * w[j * n + c]! : 0;
      for (let i = 0; i < m; i++) q[b * m * k + i * k + j] = sign * qb[i * k + j]!;
    }
  }
  return { q: { data: q, shape: [...batchShape, m, k] }, r: { data: r, shape: [...batchShape, k, n] } };
}

/** The factors b [N, rank], a [rank, K] of the best rank-`rank` approximation of p [N, K] split evenly by sqrt(σ/scale), rounded to `dtype`. */
export function splitTruncated(p: RefTensor, rank: number, scale: number, dtype: QuantDType): { a: RefTensor; b: RefTensor } {
  const [n, k] = p.shape as [number, number];
  const f = svd(p);
  const kk = Math.min(n, k);
  const b = new Float64Array(n * rank), a = new Float64Array(rank * k);
  for (let j = 0; j < rank; j++) {
    const root = Math.sqrt(f.s.data[j]! / scale);
    for (let i = 0; i < n; i++) b[i * rank + j] = f.u.data[i * kk + j]! * root;
    for (let c = 0; c < k; c++) a[j * k + c] = f.vh.data[j * k + c]! * root;
  }
  const round = (x: Float64Array) => storageToFloat64(dtype, numbersToStorage(dtype, x));
  return { a: { data: round(a), shape: [rank, k] }, b: { data: round(b), shape: [n, rank] } };
}

/** lora.merge in float64: the best rank-`rank` factors of Σ weights[i]·b_i·a_i (see the top). */
export function merge(adapters: { a: Tensor; b: Tensor }[], weights: number[], rank: number): { a: RefTensor; b: RefTensor } {
  const n = adapters[0]!.b.shape[0]!, k = adapters[0]!.a.shape[1]!;
  const sum = new Float64Array(n * k);
  adapters.forEach(({ a, b }, idx) => {
    const r = a.shape[0]!, av = valuesOf(a), bv = valuesOf(b), w = weights[idx]!;
    for (let i = 0; i < n; i++) for (let j = 0; j < r; j++) for (let c = 0; c < k; c++) sum[i * k + c]! += w * bv[i * r + j]! * av[j * k + c]!;
  });
  return splitTruncated({ data: sum, shape: [n, k] }, rank, 1, adapters[0]!.a.dtype as QuantDType);
}

/** lora.compress in float64: merge of the one adapter with weight 1. */
export function compress(adapter: { a: Tensor; b: Tensor }, rank: number): { a: RefTensor; b: RefTensor } {
  return merge([adapter], [1], rank);
}
