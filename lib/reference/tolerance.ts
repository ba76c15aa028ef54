/**
 * The project's one tolerance table and the comparison every test uses. Exported so that users
 * can check their own kernels against our float64 references with the same rules.
 *
 * An element passes when |actual − expected| ≤ atol·rms(expected) + rtol·|expected|, and the whole
 * tensor when ‖actual − expected‖_F ≤ frobenius·‖expected‖_F. atol is relative to the RMS of the
 * expected tensor so that the rule is scale-free: a dot product of length K that cancels to ~0
 * still carries an absolute error of order eps·sqrt(K)·|terms|.
 *
 * Napkin math for the entries: storing a result rounds it by half an ulp: 2^-24 (float32),
 * 2^-11 ≈ 4.9e-4 (float16), 2^-8 ≈ 3.9e-3 (bfloat16); float32 accumulation over K ≤ 4096 adds
 * about sqrt(K)·2^-24 ≈ 4e-6 relative; TF32 rounds each product's inputs to 2^-11.
 * float64 compares float64 results (the references with each other): K ≤ 4096 float64 products
 * carry about sqrt(K)·2^-53 ≈ 7e-15 relative, so 1e-12 leaves room for cancellation.
 * The fp8 dtypes only store values: one rounding is at most half an ulp, 2^-4 = 6.25e-2 relative
 * with e4m3's 3 mantissa bits and 2^-3 = 0.125 with e5m2's 2 (subnormals are covered by the
 * RMS-relative atol); errors spread uniformly within ±h have an RMS of h/√3 ≈ 0.58·h, so the
 * Frobenius bounds are 4e-2 and 8e-2.
 * Integer and bool dtypes hold exact values: 0.
 */
import { type DType, storageToFloat64 } from '../dtype.js';
import type { Tensor } from '../tensor.js';

export type ToleranceKey = DType | 'tf32';

export interface Tolerance {
  rtol: number;
  atol: number;
  frobenius: number;
}

export const TOLERANCES: Readonly<Record<ToleranceKey, Tolerance>> = {
  float64: { rtol: 1e-12, atol: 1e-12, frobenius: 1e-13 },
  float32: { rtol: 1e-4, atol: 1e-4, frobenius: 2e-5 },
  tf32: { rtol: 1e-2, atol: 1e-2, frobenius: 3e-3 },
  float16: { rtol: 2e-3, atol: 2e-3, frobenius: 1e-3 },
  bfloat16: { rtol: 1.6e-2, atol: 1.6e-2, frobenius: 8e-3 },
  float8_e4m3fn: { rtol: 6.25e-2, atol: 6.25e-2, frobenius: 4e-2 },
  float8_e5m2: { rtol: 0.125, atol: 0.125, frobenius: 8e-2 },
  int8: { rtol: 0, atol: 0, frobenius: 0 },
  uint8: { rtol: 0, atol: 0, frobenius: 0 },
  int16: { rtol: 0, atol: 0, frobenius: 0 },
  uint16: { rtol: 0, atol: 0, frobenius: 0 },
  int32: { rtol: 0, atol: 0, frobenius: 0 },
  uint32: { rtol: 0, atol: 0, frobenius: 0 },
  int64: { rtol: 0, atol: 0, frobenius: 0 },
  uint64: { rtol: 0, atol: 0, frobenius: 0 },
  bool: { rtol: 0, atol: 0, frobenius: 0 },
};

/** A float64 result of a reference op. */
export interface RefTensor {
  data: Float64Array;
  shape: number[];
}

export interface CloseReport {
  ok: boolean;
  maxAbsError: number;
  worstIndex: number;
  relativeFrobenius: number;
  message: string;
}

type Values = ArrayLike<number>;

// Tensors are read at full precision (float64 and large integers would not survive float32).
function valuesOf(t: Tensor | RefTensor | Values): Values {
  if ('data' in t && (t as RefTensor).data instanceof Float64Array) return (t as RefTensor).data;
  if (typeof (t as Tensor).toArray === 'function') return storageToFloat64((t as Tensor).dtype, (t as Tensor).toArray());
  return t as Values;
}

/** Compares without throwing. NaN must meet NaN and ±Infinity the same infinity. */
export function compareClose(
  actual: Tensor | RefTensor | Values,
  expected: Tensor | RefTensor | Values,
  opts: { dtype: ToleranceKey; tolerance?: Partial<Tolerance> },
): CloseReport {
  const tol = { ...TOLERANCES[opts.dtype], ...opts.tolerance };
  const got = valuesOf(actual);
  const want = valuesOf(expected);
  const fail = (message: string): CloseReport => ({ ok: false, maxAbsError: NaN, worstIndex: -1, relativeFrobenius: NaN, message });
  if (got.length !== want.length) return fail(`length ${got.length} != expected ${want.length}`);
  let sumSq = 0;
  let finiteCount = 0;
  for (let i = 0; i < want.length; i++) {
    const e = want[i]!;
    if (Number.isFinite(e)) {
      sumSq += e * e;
      finiteCount++;
    }
  }
  const rms = finiteCount ? Math.sqrt(sumSq / finiteCount) : 0;
  let errSq = 0;
  let maxAbs = 0;
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < want.length; i++) {
    const e = want[i]!;
    const a = got[i]!;
    if (!Number.isFinite(e)) {
      const same = Number.isNaN(e) ? Number.isNaN(a) : a === e;
      if (!same) return fail(`element ${i}: expected ${e}, got ${a}`);
      continue;
    }
    if (!Number.isFinite(a)) return fail(`element ${i}: expected ${e}, got ${a}`);
    const err = Math.abs(a - e);
    errSq += err * err;
    if (err > maxAbs) maxAbs = err;
    const excess = err - (tol.atol * rms + tol.rtol * Math.abs(e));
    if (excess > worstExcess) {
      worstExcess = excess;
      worst = i;
    }
  }
  const relativeFrobenius = sumSq > 0 ? Math.sqrt(errSq / sumSq) : Math.sqrt(errSq);
  if (worst >= 0) {
    return {
      ok: false, maxAbsError: maxAbs, worstIndex: worst, relativeFrobenius,
      message: `element ${worst}: got ${got[worst]}, expected ${want[worst]} (|err| ${Math.abs(got[worst]! - want[worst]!)
        .toExponential(3)} > ${tol.atol}·rms ${rms.toExponential(3)} + ${tol.rtol}·|expected|)`,
    };
  }
  if (relativeFrobenius > tol.frobenius) {
    return {
      ok: false, maxAbsError: maxAbs, worstIndex: -1, relativeFrobenius,
      message: `relative Frobenius error ${relativeFrobenius.toExponential(3)} > ${tol.frobenius}`,
    };
  }
  return { ok: true, maxAbsError: maxAbs, worstIndex: -1, relativeFrobenius, message: 'ok' };
}

/** Throws an Error describing the worst element when `actual` is not close to `expected`. */
export function assertClose(
  actual: Tensor | RefTensor | Values,
  expected: Tensor | RefTensor | Values,
  opts: { dtype: ToleranceKey; tolerance?: Partial<Tolerance>; label?: string },
): void {
  const report = compareClose(actual, expected, opts);
  if (!report.ok) throw new Error(`${opts.label ? opts.label + ': ' : ''}not close (${opts.dtype}): ${report.message}`);
}

/**
 * linalg (svd, qr, svdLowRank, svdProduct) is checked by properties rather than element by element:
 * singular vectors are unique only up to sign, and not at all within a repeated or zero singular
 * value. With A = U·Σ·Vh from the op and σ_ref from reference.linalg.svd:
 *   reconstruction   ‖A − U·Σ·Vh‖_F / ‖A‖_F (also ‖A − Q·R‖_F / ‖A‖_F)
 *   orthogonality    max |(UᵀU − I)_ij| and max |(Vh·Vhᵀ − I)_ij| over the columns whose σ >
 *                    negligible·σ_1 (all of them for qr and for fullMatrices' completions)
 *   singularValues   max |σ − σ_ref| / σ_1
 *   lowRankExcess    ‖A − A_k‖_F of svdLowRank's rank-k part over the optimal (Eckart–Young) − 1
 * Napkin math: a float32 rotation rounds each element by ≤ 2^-24 ≈ 6e-8 relative; ~10 sweeps of
 * n − 1 rotations touch each column, a random walk of sqrt(10·n)·6e-8 ≈ 2e-6 at n = 129 (the
 * Householder QR of a tall input adds ~sqrt(m)·6e-8), so 1e-5 (the issue's bound) leaves ~5×.
 * Below negligible·σ_1 = 1e-6·σ_1 a singular vector is determined by the float32 noise of A only.
 * The randomized range finder's excess on a decaying spectrum with iters ≥ 2 is well under 1%;
 * the issue bounds it at 2%.
 */
export const LINALG_TOLERANCES = {
  reconstruction: 1e-5,
  orthogonality: 1e-5,
  singularValues: 1e-5,
  negligible: 1e-6,
  lowRankExcess: 0.02,
} as const;
