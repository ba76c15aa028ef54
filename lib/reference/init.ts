/**
 * References of init.pissa and init.loftq (lib/ops/init.ts).
 *
 * pissa: the exact SVD of W in float64 (reference.linalg.svd), b = U_r·sqrt(S_r/scale) and
 * a = sqrt(S_r/scale)·Vh_r rounded to the weight's dtype, residual = W − scale·b·a from the
 * rounded parts, rounded to the dtype.
 *
 * loftq: the same alternation with the byte-exact reference
 * quantizers and an EXACT truncated SVD of E = W − deq(Q) in float64, from the eigenvectors of
 * the smaller Gram matrix (E·Eᵀ or Eᵀ·E) by cyclic Jacobi rotations. The Gram matrix squares the
 * condition number, which costs accuracy only in the small singular values; the rank-r part is
 * E·V_r·V_rᵀ (or U_r·U_rᵀ·E), a projection that does not divide by them. O(min(N, K)³ + N·K·min):
 * for test sizes.
 *
 * As in the op, the residual is float32, B and A are rounded to the weight's dtype every step and
 * the error is that of the rounded parts; Q remembers the weight's dtype.
 */
import { numbersToStorage, storageToFloat64 } from '../dtype.js';
import type { LoftqOptions, PissaOptions } from '../ops/init.js';
import type { QuantDType, QuantizedTensor } from '../ops/quant.js';
import { Tensor } from '../tensor.js';
import { splitTruncated } from './linalg.js';
import { dequantize, nf4Quantize, ternaryQuantize } from './quant.js';
import type { RefTensor } from './tolerance.js';

export interface ReferenceLoftqResult {
  /** Q from the last step (host tensors). */
  quantized: QuantizedTensor;
  /** A [r, K]: values of the weight's dtype, as float64. */
  a: RefTensor;
  /** B [N, r]: values of the weight's dtype, as float64. */
  b: RefTensor;
  errors: number[];
}

export interface ReferencePissaResult {
  /** A [r, K]: values of the weight's dtype, as float64. */
  a: RefTensor;
  /** B [N, r]: values of the weight's dtype, as float64. */
  b: RefTensor;
  /** W − scale·B·A [N, K]: values of the weight's dtype, as float64. */
  residual: RefTensor;
}

/** init.pissa in float64 with the exact SVD (see the top); options as the op's, assumed valid (method and its options ignored). */
export function pissa(weight: Tensor, opts: PissaOptions): ReferencePissaResult {
  const [n, k] = weight.shape as [number, number];
  const { rank } = opts;
  const scale = opts.scale ?? 1;
  const dtype = weight.dtype as QuantDType;
  const w = storageToFloat64(weight.dtype, weight.toArray());
  const { a, b } = splitTruncated({ data: w, shape: [n, k] }, rank, scale, dtype);
  const residual = Float64Array.from(w);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < rank; j++) {
      const bij = scale * b.data[i * rank + j]!;
      for (let p = 0; p < k; p++) residual[i * k + p]! -= bij * a.data[j * k + p]!;
    }
  }
  return { a, b, residual: { data: roundTo(dtype, residual), shape: [n, k] } };
}

/** Eigen-decomposition of a symmetric n × n matrix (row-major, destroyed): eigenvalues and eigenvectors as columns of v. */
function symmetricEigen(g: Float64Array, n: number): { values: Float64Array; v: Float64Array } {
  const v = new Float64Array(n * n);
  for (let i = 0; i < n; i++) v[i * n + i] = 1;
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0, diag = 0;
    for (let i = 0; i < n; i++) {
      diag += g[i * n + i]! * g[i * n + i]!;
      for (let j = 0; j < n; j++) if (i !== j) off += g[i * n + j]! * g[i * n + j]!;
    }
    if (off <= 1e-30 * diag) break;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        const gpq = g[p * n + q]!;
        if (gpq === 0) continue;
        // The rotation that zeroes g[p][q]: tan θ = t, the smaller root of t² + 2·zeta·t − 1 = 0.
        const zeta = (g[q * n + q]! - g[p * n + p]!) / (2 * gpq);
        const t = (zeta >= 0 ? 1 : -1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t), s = t * c;
        for (let i = 0; i < n; i++) {
          const gip = g[i * n + p]!, giq = g[i * n + q]!;
          g[i * n + p] = c * gip - s * giq;
          g[i * n + q] = s * gip + c * giq;
        }
        for (let i = 0; i < n; i++) {
          const gpi = g[p * n + i]!, gqi = g[q * n + i]!;
          g[p * n + i] = c * gpi - s * gqi;
          g[q * n + i] = s * gpi + c * gqi;
        }
        for (let i = 0; i < n; i++) {
          const vip = v[i * n + p]!, viq = v[i * n + q]!;
          v[i * n + p] = c * vip - s * viq;
          v[i * n + q] = s * vip + c * viq;
        }
      }
    }
  }
  return { values: Float64Array.from({ length: n }, (_, i) => g[i * n + i]!), v };
}

/**
 * B [N, r] and A [r, K] (row-major) with scale·B·A = the best rank-r approximation of E [N, K]
 * and the singular values split evenly between them (B = U·sqrt(Σ/scale), A = sqrt(Σ/scale)·Vᵀ).
 */
function exactTruncatedSvd(e: Float64Array, n: number, k: number, rank: number, scale: number): { b: Float64Array; a: Float64Array } {
  const rowsSide = n <= k;  // eigenvectors of E·Eᵀ (left singular vectors) or of Eᵀ·E (right)
  const m = rowsSide ? n : k;
  const at = (i: number, j: number) => (rowsSide ? e[i * k + j]! : e[j * k + i]!);  // E or Eᵀ
  const len = rowsSide ? k : n;
  const g = new Float64Array(m * m);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j <= i; j++) {
      let s = 0;
      for (let p = 0; p < len; p++) s += at(i, p) * at(j, p);
      g[i * m + j] = g[j * m + i] = s;
    }
  }
  const { values, v } = symmetricEigen(g, m);
  const order = Array.from({ length: m }, (_, i) => i).sort((x, y) => values[y]! - values[x]!);
  const b = new Float64Array(n * rank), a = new Float64Array(rank * k);
  for (let j = 0; j < rank; j++) {
    const col = order[j]!;
    const sigma = Math.sqrt(Math.max(values[col]!, 0));
    if (sigma === 0) continue;
    // The other side's vector times sigma: Eᵀ·u = σ·v or E·v = σ·u.
    const other = new Float64Array(len);
    for (let p = 0; p < len; p++) {
      let s = 0;
      for (let i = 0; i < m; i++) s += at(i, p) * v[i * m + col]!;
      other[p] = s;
    }
    const root = Math.sqrt(sigma / scale);
    const mine = (i: number) => v[i * m + col]! * root;
    const theirs = (p: number) => other[p]! / Math.sqrt(sigma * scale);
    if (rowsSide) {
      for (let i = 0; i < n; i++) b[i * rank + j] = mine(i);
      for (let p = 0; p < k; p++) a[j * k + p] = theirs(p);
    } else {
      for (let p = 0; p < k; p++) a[j * k + p] = mine(p);
      for (let i = 0; i < n; i++) b[i * rank + j] = theirs(i);
    }
  }
  return { b, a };
}

function roundTo(dtype: QuantDType, values: Float64Array): Float64Array {
  return storageToFloat64(dtype, numbersToStorage(dtype, values));
}

/** init.loftq in float64 with an exact truncated SVD (see the top); options as the op's, assumed valid. */
export function loftq(weight: Tensor, opts: LoftqOptions): ReferenceLoftqResult {
  const [n, k] = weight.shape as [number, number];
  const { rank, format } = opts;
  const iters = opts.iters ?? 5, scale = opts.scale ?? 1, blockSize = opts.blockSize ?? 64;
  const dtype = weight.dtype as QuantDType;
  const w = storageToFloat64(weight.dtype, weight.toArray());
  let normW = 0;
  for (const x of w) normW += x * x;
  normW = Math.sqrt(normW);
  let residual = Float32Array.from(w);
  let quantized: QuantizedTensor | undefined;
  let b: Float64Array = new Float64Array(0), a: Float64Array = new Float64Array(0);
  const errors: number[] = [];
  for (let step = 0; step < iters; step++) {
    const input = Tensor.from(residual, [n, k]);
    quantized = { ...(format === 'nf4' ? nf4Quantize(input, { blockSize }) : ternaryQuantize(input)), dtype };
    const d = dequantize(quantized).data;
    const e = Float64Array.from(w, (x, i) => x - d[i]!);
    const factors = exactTruncatedSvd(e, n, k, rank, scale);
    b = roundTo(dtype, factors.b);
    a = roundTo(dtype, factors.a);
    let errSq = 0;
    residual = new Float32Array(n * k);
    for (let i = 0; i < n; i++) {
      for (let p = 0; p < k; p++) {
        let ba = 0;
        for (let j = 0; j < rank; j++) ba += b[i * rank + j]! * a[j * k + p]!;
        const err = e[i * k + p]! - scale * ba;
        errSq += err * err;
        residual[i * k + p] = w[i * k + p]! - scale * ba;
      }
    }
    errors.push(normW > 0 ? Math.sqrt(errSq) / normW : Math.sqrt(errSq));
  }
  return { quantized: quantized!, a: { data: a, shape: [rank, k] }, b: { data: b, shape: [n, rank] }, errors };
}
