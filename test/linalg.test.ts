/**
 * linalg on every backend: svd (economy, fullMatrices, values only, async) checked by its
 * properties (reconstruction, orthonormal factors, σ against the float64 reference) on odd,
 * batched, zero, rank-deficient, graded-spectrum, 1 × n and n × 1 inputs; qr (Q orthonormal, R
 * upper triangular with diag ≥ 0, QR = A, the reference's unique factors); svdLowRank against the
 * optimal truncation on a decaying spectrum; svdProduct against the SVD of the formed product;
 * non-convergence and bad arguments as typed errors; and, where numpy is installed, σ against
 * numpy.linalg.svd. Tolerances: reference.LINALG_TOLERANCES.
 */
import { spawnSync } from 'node:child_process';

import { describe, expect, it } from 'vitest';

import { type Device, linalg, reference, type SvdResult, type SvdValues, Tensor } from '../lib/index.js';
import { focusedRun, poisoned, testDevices } from './helpers/devices.js';
import { expectError } from './helpers/errors.js';
import { Random } from './helpers/random.js';

const TOL = reference.LINALG_TOLERANCES;

const onDevice = (t: Tensor, device: Device) => (device === 'cpu' ? t : t.to(device));

// ---- inputs ----------------------------------------------------------------------------------------

/** A random orthogonal n × n matrix (Q of a Gaussian matrix), row-major float64. */
function orthogonal(n: number, seed: number): Float64Array {
  return reference.linalg.qr(Tensor.randn([n, n], { seed, dtype: 'float64' })).q.data;
}

/** U·diag(σ)·Vᵀ [m, n] for random orthogonal U, V, rounded to float32. */
function withSpectrum(m: number, n: number, sigma: number[], seed: number): Float32Array {
  const u = orthogonal(m, seed), v = orthogonal(n, seed + 1);
  const out = new Float32Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let p = 0; p < n; p++) {
      let s = 0;
      for (let j = 0; j < sigma.length; j++) s += u[i * m + j]! * sigma[j]! * v[p * n + j]!;
      out[i * n + p] = s;
    }
  }
  return out;
}

type Kind = 'random' | 'zero' | 'rank3' | 'graded' | 'cluster';

interface Case {
  name: string;
  shape: number[];
  kind: Kind;
}

const CASES: Case[] = [
  { name: '1×1', shape: [1, 1], kind: 'random' },
  { name: '1×9', shape: [1, 9], kind: 'random' },
  { name: '9×1', shape: [9, 1], kind: 'random' },
  { name: '5×3', shape: [5, 3], kind: 'random' },
  { name: '3×5', shape: [3, 5], kind: 'random' },
  { name: '33×17', shape: [33, 17], kind: 'random' },
  { name: '17×33', shape: [17, 33], kind: 'random' },
  { name: 'batch [3, 2, 7, 5]', shape: [3, 2, 7, 5], kind: 'random' },
  { name: '32×32 batch 5', shape: [5, 32, 32], kind: 'random' },
  { name: '130×129 (QR, then blocked Jacobi: > 128 columns)', shape: [130, 129], kind: 'random' },
  // The blocked Jacobi starts from the eigenvectors of AᵀA: inputs where those are degenerate
  // (rank deficient, zero), badly scaled (graded) or clustered (the inverse iteration's
  // Gram–Schmidt).
  { name: 'rank 3 of 150×140 (blocked)', shape: [150, 140], kind: 'rank3' },
  { name: 'zero 131×131 (blocked)', shape: [131, 131], kind: 'zero' },
  { name: 'graded σ = 10^(−6i/n), 141×141 (blocked)', shape: [141, 141], kind: 'graded' },
  { name: 'clustered σ = 1 + 10^−4·i/n, 137×137 (blocked)', shape: [137, 137], kind: 'cluster' },
  { name: '1×40', shape: [1, 40], kind: 'random' },
  { name: 'zero 6×4', shape: [6, 4], kind: 'zero' },
  { name: 'rank 3 of 20×20', shape: [20, 20], kind: 'rank3' },
  { name: 'graded σ = 10^(−6i/n), 24×24', shape: [24, 24], kind: 'graded' },
  { name: 'graded, tall 31×12', shape: [31, 12], kind: 'graded' },
];

function input(c: Case, seed: number): Float32Array {
  const m = c.shape[c.shape.length - 2]!, n = c.shape[c.shape.length - 1]!;
  const count = c.shape.reduce((x, y) => x * y, 1);
  switch (c.kind) {
    case 'random': return Tensor.randn(c.shape, { seed }).toFloat32();
    case 'zero': return new Float32Array(count);
    case 'rank3': return withSpectrum(m, n, [3, 2, 1], seed);
    case 'graded': {
      const k = Math.min(m, n);
      return withSpectrum(m, n, Array.from({ length: k }, (_, i) => 10 ** ((-6 * i) / k)), seed);
    }
    case 'cluster': {
      const k = Math.min(m, n);
      return withSpectrum(m, n, Array.from({ length: k }, (_, i) => 1 + (1e-4 * (k - i)) / k), seed);
    }
  }
}

// ---- property checks -------------------------------------------------------------------------------

function frob(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i]! * x[i]!;
  return Math.sqrt(s);
}

/** max |(XᵀX − I)_ij| over the listed columns of a rows × cols matrix (row-major), row `base` on. */
function orthogonalityError(x: ArrayLike<number>, base: number, rows: number, cols: number, columns: number[], transposed = false): number {
  const at = (i: number, j: number) => (transposed ? x[base + j * rows + i]! : x[base + i * cols + j]!);
  let worst = 0;
  for (const a of columns) {
    for (const b of columns) {
      let s = 0;
      for (let i = 0; i < rows; i++) s += at(i, a) * at(i, b);
      worst = Math.max(worst, Math.abs(s - (a === b ? 1 : 0)));
    }
  }
  return worst;
}

interface SvdShape { batch: number; m: number; n: number; k: number; uCols: number; vhRows: number }

/**
 * Every matrix: σ against the float64 reference, A = U·Σ·Vh, orthonormal U columns and Vh rows —
 * all of them except those of noise singular values (0 < σ ≤ negligible·σ_1), all with
 * fullMatrices (the completion too).
 */
function expectSvd(a: Float32Array, shape: number[], got: SvdResult | SvdValues, full = false): void {
  const m = shape[shape.length - 2]!, n = shape[shape.length - 1]!, k = Math.min(m, n);
  const batch = a.length / (m * n);
  const d: SvdShape = { batch, m, n, k, uCols: full ? m : k, vhRows: full ? n : k };
  expect(got.s.shape).toEqual([...shape.slice(0, -2), k]);
  expect(got.sweeps).toBeInstanceOf(Int32Array);
  expect(got.sweeps.length).toBe(batch);
  for (const x of got.sweeps) expect(x).toBeGreaterThanOrEqual(0);
  const want = reference.linalg.svd({ data: Float64Array.from(a), shape });
  const s = got.s.toFloat32();
  for (let b = 0; b < batch; b++) {
    const sigma1 = want.s.data[b * k]!;
    for (let j = 0; j < k; j++) {
      const err = Math.abs(s[b * k + j]! - want.s.data[b * k + j]!);
      expect(err, `matrix ${b}: σ_${j} = ${s[b * k + j]}, reference ${want.s.data[b * k + j]}`).toBeLessThanOrEqual(TOL.singularValues * sigma1);
      if (j > 0) expect(s[b * k + j]!).toBeLessThanOrEqual(s[b * k + j - 1]!);
    }
  }
  if (!('u' in got)) return;
  const u = got.u.toFloat32(), vh = got.vh.toFloat32();
  expect(got.u.shape).toEqual([...shape.slice(0, -2), m, d.uCols]);
  expect(got.vh.shape).toEqual([...shape.slice(0, -2), d.vhRows, n]);
  for (let b = 0; b < batch; b++) {
    const sigma1 = s[b * k]!;
    const kept = (count: number) => Array.from({ length: count }, (_, j) => j)
      .filter((j) => full || j >= k || !(s[b * k + j]! > 0 && s[b * k + j]! <= TOL.negligible * sigma1));
    const residual = new Float64Array(m * n);
    for (let i = 0; i < m; i++) {
      for (let p = 0; p < n; p++) {
        let x = a[b * m * n + i * n + p]!;
        for (let j = 0; j < k; j++) x -= u[b * m * d.uCols + i * d.uCols + j]! * s[b * k + j]! * vh[b * d.vhRows * n + j * n + p]!;
        residual[i * n + p] = x;
      }
    }
    const norm = frob(a.subarray(b * m * n, (b + 1) * m * n));
    expect(frob(residual), `matrix ${b}: ‖A − UΣVh‖`).toBeLessThanOrEqual(TOL.reconstruction * norm);
    expect(orthogonalityError(u, b * m * d.uCols, m, d.uCols, kept(d.uCols)), `matrix ${b}: UᵀU − I`).toBeLessThanOrEqual(TOL.orthogonality);
    expect(orthogonalityError(vh, b * d.vhRows * n, n, d.vhRows, kept(d.vhRows), true), `matrix ${b}: Vh·Vhᵀ − I`).toBeLessThanOrEqual(TOL.orthogonality);
  }
}

function poisonedSvdOut(shape: number[], full: boolean, device: Device): { u: Tensor; s: Tensor; vh: Tensor } {
  const m = shape[shape.length - 2]!, n = shape[shape.length - 1]!, k = Math.min(m, n), lead = shape.slice(0, -2);
  return {
    u: poisoned([...lead, m, full ? m : k], 'float32', device),
    s: poisoned([...lead, k], 'float32', device),
    vh: poisoned([...lead, full ? n : k, n], 'float32', device),
  };
}

/** QᵀQ = I, R upper triangular (exact zeros below) with diag ≥ 0, ‖A − QR‖ small. */
function expectQr(a: Float32Array, shape: number[], q: Tensor, r: Tensor): void {
  const m = shape[shape.length - 2]!, n = shape[shape.length - 1]!, k = Math.min(m, n);
  const batch = a.length / (m * n);
  expect(q.shape).toEqual([...shape.slice(0, -2), m, k]);
  expect(r.shape).toEqual([...shape.slice(0, -2), k, n]);
  const qv = q.toFloat32(), rv = r.toFloat32();
  for (let b = 0; b < batch; b++) {
    for (let i = 0; i < k; i++) {
      expect(rv[b * k * n + i * n + i]!).toBeGreaterThanOrEqual(0);
      for (let j = 0; j < Math.min(i, n); j++) expect(rv[b * k * n + i * n + j], `R[${i}][${j}]`).toBe(0);
    }
    expect(orthogonalityError(qv, b * m * k, m, k, Array.from({ length: k }, (_, j) => j))).toBeLessThanOrEqual(TOL.orthogonality);
    const residual = new Float64Array(m * n);
    for (let i = 0; i < m; i++) {
      for (let p = 0; p < n; p++) {
        let x = a[b * m * n + i * n + p]!;
        for (let j = 0; j < k; j++) x -= qv[b * m * k + i * k + j]! * rv[b * k * n + j * n + p]!;
        residual[i * n + p] = x;
      }
    }
    expect(frob(residual)).toBeLessThanOrEqual(TOL.reconstruction * Math.max(frob(a.subarray(b * m * n, (b + 1) * m * n)), 1e-30));
  }
}

/** u [m, k], s [k], vh [k, n] as the rank-k matrix U·Σ·Vh in float64. */
function lowRankOf(f: { u: Tensor; s: Tensor; vh: Tensor }): Float64Array {
  const [m, k] = f.u.shape as [number, number], n = f.vh.shape[1]!;
  const u = f.u.toFloat32(), s = f.s.toFloat32(), vh = f.vh.toFloat32();
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < k; j++) for (let p = 0; p < n; p++) out[i * n + p]! += u[i * k + j]! * s[j]! * vh[j * n + p]!;
  return out;
}

/** Both factors' kept columns / rows orthonormal. */
function expectOrthonormalFactors(f: { u: Tensor; vh: Tensor }): void {
  const [m, k] = f.u.shape as [number, number], n = f.vh.shape[1]!;
  const all = Array.from({ length: k }, (_, j) => j);
  expect(orthogonalityError(f.u.toFloat32(), 0, m, k, all)).toBeLessThanOrEqual(TOL.orthogonality);
  expect(orthogonalityError(f.vh.toFloat32(), 0, n, k, all, true)).toBeLessThanOrEqual(TOL.orthogonality);
}

// ---- the suites ------------------------------------------------------------------------------------

// focusedRun (the ThreadSanitizer run): the CPU only. The emulated SVD kernels run 512–1024
// threads per block with a barrier per Jacobi round; the fiber schedules and ASan cover them.
describe.each(testDevices().filter((d) => !(focusedRun && d.emulated)))('linalg on $device', ({ device, emulated }) => {
  describe('svd', () => {
    it.each(CASES)('$name: σ, A = UΣVh, orthonormal U and Vh (into poisoned out)', (c) => {
      const a = input(c, 7 + c.shape.length * 31 + c.shape[c.shape.length - 1]!);
      const out = poisonedSvdOut(c.shape, false, device);
      const got = linalg.svd(onDevice(Tensor.from(a, c.shape), device), { out });
      expect(got.u).toBe(out.u);
      expect(got.s).toBe(out.s);
      expect(got.vh).toBe(out.vh);
      expectSvd(a, c.shape, got);
    });

    it.each(CASES.filter((c) => c.shape.length === 2 && c.shape[0]! * c.shape[1]! <= 700))(
      '$name: fullMatrices completes U and Vh to orthogonal matrices', (c) => {
        const a = input(c, 3);
        const got = linalg.svd(onDevice(Tensor.from(a, c.shape), device), { fullMatrices: true, out: poisonedSvdOut(c.shape, true, device) });
        expectSvd(a, c.shape, got, true);
      });

    it.each(CASES)('$name: computeUV false gives the same σ', (c) => {
      const a = input(c, 5);
      const t = onDevice(Tensor.from(a, c.shape), device);
      const values = linalg.svd(t, { computeUV: false, out: { s: poisoned([...c.shape.slice(0, -2), Math.min(c.shape.at(-2)!, c.shape.at(-1)!)], 'float32', device) } });
      expect('u' in values).toBe(false);
      expect('vh' in values).toBe(false);
      expectSvd(a, c.shape, values);
      const full = linalg.svd(t).s.toFloat32(), s = values.s.toFloat32();
      const k = Math.min(c.shape.at(-2)!, c.shape.at(-1)!);
      for (let i = 0; i < s.length; i++) expect(Math.abs(s[i]! - full[i]!)).toBeLessThanOrEqual(TOL.singularValues * full[Math.floor(i / k) * k]!);
    });

    it('svdAsync gives what svd gives', async () => {
      const shape = [2, 9, 6];
      const a = input({ name: '', shape, kind: 'random' }, 12);
      const t = onDevice(Tensor.from(a, shape), device);
      const got = await linalg.svdAsync(t);
      expectSvd(a, shape, got);
      expect(Array.from(got.s.toFloat32())).toEqual(Array.from(linalg.svd(t).s.toFloat32()));
      expectSvd(a, shape, await linalg.svdAsync(t, { computeUV: false }));
    });

    it('a batch dimension of 0 gives empty results without a call', () => {
      const got = linalg.svd(Tensor.zeros([0, 4, 3], { device }));
      expect(got.s.shape).toEqual([0, 3]);
      expect(got.u.shape).toEqual([0, 4, 3]);
      expect(got.sweeps).toEqual(new Int32Array(0));
    });

    it.each([NaN, Infinity])('a matrix holding %s is ERR_CONVERGENCE naming it', async (bad) => {
      const a = Tensor.randn([3, 4, 4], { seed: 1 }).toFloat32();
      a[16 + 5] = bad;
      const t = onDevice(Tensor.from(a, [3, 4, 4]), device);
      expectError(() => linalg.svd(t), 'ERR_CONVERGENCE', /^linalg\.svd: matrix 1 did not converge in 30 sweeps/);
      expectError(() => linalg.svd(t, { computeUV: false, maxSweeps: 7 }), 'ERR_CONVERGENCE', /matrix 1 did not converge in 7 sweeps/);
      await expect(linalg.svdAsync(t)).rejects.toMatchObject({ code: 'ERR_CONVERGENCE', message: expect.stringMatching(/^linalg\.svdAsync: matrix 1/) });
    });

    it('bad arguments are typed errors naming them', () => {
      const a = onDevice(Tensor.randn([5, 4], { seed: 2 }), device);
      const call = (x: unknown, opts?: unknown) => () => linalg.svd(x as Tensor, opts as undefined);
      expectError(call(a.toFloat32()), 'ERR_ARGUMENT', /^linalg\.svd: a must be a Tensor, got a Float32Array$/);
      expectError(call(onDevice(Tensor.randn([5, 4], { dtype: 'float16' }), device)), 'ERR_DTYPE', /a must be of dtype float32, got float16/);
      expectError(call(onDevice(Tensor.randn([5]), device)), 'ERR_SHAPE', /a\.shape must be \[\.\.\., m, n\] with m, n ≥ 1, got \[5\]/);
      expectError(call(Tensor.zeros([0, 3], { device })), 'ERR_SHAPE', /a\.shape .* got \[0, 3\]/);
      expectError(call(a, 'full'), 'ERR_ARGUMENT', /opts must be an object of options/);
      expectError(call(a, { fullMatrices: 1 }), 'ERR_ARGUMENT', /opts\.fullMatrices must be a boolean, got number 1/);
      expectError(call(a, { computeUV: 'no' }), 'ERR_ARGUMENT', /opts\.computeUV must be a boolean/);
      for (const maxSweeps of [0, 2.5, -1]) expectError(call(a, { maxSweeps }), 'ERR_ARGUMENT', /opts\.maxSweeps must be an integer ≥ 1/);
      expectError(call(a, { out: { s: poisoned([5], 'float32', device) } }), 'ERR_SHAPE', /opts\.out\.s\.shape must be \[4\], got \[5\]/);
      expectError(call(a, { out: { u: poisoned([5, 4], 'float16', device) } }), 'ERR_DTYPE', /opts\.out\.u must be of dtype float32/);
      expectError(call(a, { computeUV: false, out: { u: poisoned([5, 4], 'float32', device) } }), 'ERR_ARGUMENT', /opts\.out\.u must be undefined when opts\.computeUV is false/);
      expectError(call(a, { out: { s: a } }), 'ERR_SHAPE', /opts\.out\.s\.shape/);
      const square = onDevice(Tensor.randn([4, 4], { seed: 3 }), device);
      expectError(call(square, { out: { u: square } }), 'ERR_ARGUMENT', /opts\.out\.u must be memory not shared with a/);
      const gone = onDevice(Tensor.randn([3, 3]), device);
      gone.dispose();
      expectError(call(gone), 'ERR_DISPOSED', /a must be a live tensor/);
    });
  });

  describe('qr', () => {
    it.each(CASES.filter((c) => c.kind !== 'graded'))('$name: Q orthonormal, R upper triangular, diag ≥ 0, QR = A', async (c) => {
      const a = input(c, 40 + c.shape[0]!);
      const t = onDevice(Tensor.from(a, c.shape), device);
      const m = c.shape.at(-2)!, n = c.shape.at(-1)!, k = Math.min(m, n), lead = c.shape.slice(0, -2);
      const out = { q: poisoned([...lead, m, k], 'float32', device), r: poisoned([...lead, k, n], 'float32', device) };
      const got = linalg.qr(t, { out });
      expect(got.q).toBe(out.q);
      expectQr(a, c.shape, got.q, got.r);
      if (c.kind === 'random') {
        // A full-rank matrix has one QR with diag(R) > 0: the reference's.
        const want = reference.linalg.qr({ data: Float64Array.from(a), shape: c.shape });
        reference.assertClose(got.r, want.r, { dtype: 'float32', label: 'R' });
        reference.assertClose(got.q, want.q, { dtype: 'float32', label: 'Q' });
      }
      const again = await linalg.qrAsync(t);
      expect(Array.from(again.r.toFloat32())).toEqual(Array.from(got.r.toFloat32()));
    });

    it('bad arguments are typed errors naming them', () => {
      const a = onDevice(Tensor.randn([5, 4], { seed: 2 }), device);
      expectError(() => linalg.qr(Tensor.randn([5, 4], { dtype: 'int8' })), 'ERR_DTYPE', /^linalg\.qr: a must be of dtype float32, got int8/);
      expectError(() => linalg.qr(onDevice(Tensor.randn([4]), device)), 'ERR_SHAPE', /linalg\.qr: a\.shape must be \[\.\.\., m, n\]/);
      expectError(() => linalg.qr(a, { out: { r: poisoned([4, 5], 'float32', device) } }), 'ERR_SHAPE', /opts\.out\.r\.shape must be \[4, 4\], got \[4, 5\]/);
      expectError(() => linalg.qr(a, { out: { q: a } }), 'ERR_ARGUMENT', /opts\.out\.q must be memory not shared with a/);
    });
  });

  describe('svdLowRank', () => {
    const decaying = (m: number, n: number, seed: number) => {
      const k = Math.min(m, n);
      const sigma = Array.from({ length: k }, (_, i) => 0.8 ** i);
      return { a: withSpectrum(m, n, sigma, seed), sigma };
    };
    const shapes = emulated ? [[40, 28], [24, 37]] : [[96, 61], [45, 80], [40, 28]];

    it.each(shapes)('[%i, %i], decaying spectrum: within 2% of the optimal rank-k error, orthonormal factors', (m, n) => {
      const { a, sigma } = decaying(m!, n!, m! + n!);
      const rank = 6;
      const t = onDevice(Tensor.from(a, [m!, n!]), device);
      const got = linalg.svdLowRank(t, { rank, seed: 4 });
      expect(got.u.shape).toEqual([m, rank]);
      expect(got.s.shape).toEqual([rank]);
      expect(got.vh.shape).toEqual([rank, n]);
      for (const x of [got.u, got.s, got.vh]) expect(x.device).toBe(device);
      expectOrthonormalFactors(got);
      const approx = lowRankOf(got);
      const optimal = Math.sqrt(sigma.slice(rank).reduce((s, x) => s + x * x, 0));
      const error = frob(Float64Array.from(a, (x, e) => x - approx[e]!));
      expect(error).toBeLessThanOrEqual((1 + TOL.lowRankExcess) * optimal);
      const s = got.s.toFloat32();
      for (let j = 0; j < rank; j++) expect(Math.abs(s[j]! - sigma[j]!)).toBeLessThanOrEqual(TOL.lowRankExcess * sigma[j]!);
      // The same seed gives the same factors; iters 0 still lands near the optimum here.
      expect(Array.from(linalg.svdLowRank(t, { rank, seed: 4 }).s.toFloat32())).toEqual(Array.from(s));
      const rough = lowRankOf(linalg.svdLowRank(t, { rank, iters: 0, oversample: 4, seed: 9 }));
      expect(frob(Float64Array.from(a, (x, e) => x - rough[e]!))).toBeLessThan(2 * optimal);
    });

    it('a matrix of rank ≤ the sample is recovered to float32 accuracy; a zero matrix gives σ = 0, orthonormal factors', () => {
      const a = withSpectrum(30, 22, [5, 3, 2, 1], 8);
      const got = linalg.svdLowRank(onDevice(Tensor.from(a, [30, 22]), device), { rank: 4, oversample: 2 });
      const approx = lowRankOf(got);
      expect(frob(Float64Array.from(a, (x, e) => x - approx[e]!))).toBeLessThanOrEqual(TOL.reconstruction * frob(a));
      expectOrthonormalFactors(got);
      const zero = linalg.svdLowRank(Tensor.zeros([12, 9], { device }), { rank: 3 });
      expect(Array.from(zero.s.toFloat32())).toEqual([0, 0, 0]);
      expectOrthonormalFactors(zero);
      // rank = min(m, n) and a 1 × n matrix: the sample covers everything.
      const line = Tensor.randn([1, 17], { seed: 6 }).toFloat32();
      const one = linalg.svdLowRank(onDevice(Tensor.from(line, [1, 17]), device), { rank: 1 });
      expect(one.s.toFloat32()[0]!).toBeCloseTo(frob(line), 5);
    });

    it('bad arguments are typed errors naming them', () => {
      const a = onDevice(Tensor.randn([9, 7], { seed: 1 }), device);
      const call = (x: unknown, opts: unknown) => () => linalg.svdLowRank(x as Tensor, opts as { rank: number });
      expectError(call(onDevice(Tensor.randn([2, 9, 7]), device), { rank: 2 }), 'ERR_SHAPE', /^linalg\.svdLowRank: a\.shape must be \[m, n\] with m, n ≥ 1, got \[2, 9, 7\]/);
      expectError(call(a, undefined), 'ERR_ARGUMENT', /opts must be an object with rank, got undefined/);
      expectError(call(a, { rank: 8 }), 'ERR_ARGUMENT', /opts\.rank must be an integer from 1 to min\(m, n\) = 7, got number 8/);
      expectError(call(a, { rank: 2, oversample: -1 }), 'ERR_ARGUMENT', /opts\.oversample must be an integer ≥ 0/);
      expectError(call(a, { rank: 2, iters: 1.5 }), 'ERR_ARGUMENT', /opts\.iters must be an integer ≥ 0/);
      expectError(call(a, { rank: 2, seed: 'x' }), 'ERR_ARGUMENT', /opts\.seed must be a safe integer/);
      const nan = Tensor.randn([9, 7], { seed: 1 }).toFloat32();
      nan[10] = NaN;
      expectError(call(onDevice(Tensor.from(nan, [9, 7]), device), { rank: 2 }), 'ERR_CONVERGENCE', /^linalg\.svdLowRank: matrix 0 did not converge/);
    });
  });

  describe('svdProduct', () => {
    // [m, r, n]: r below both, r above m, r above n, a single row, r = 1.
    it.each([[13, 5, 11], [4, 9, 7], [9, 7, 3], [1, 3, 5], [6, 1, 8]])('b [%i, %i]·a [.., %i]: the SVD of the formed product', (m, r, n) => {
      const bv = Tensor.randn([m!, r!], { seed: m! }).toFloat32(), av = Tensor.randn([r!, n!], { seed: n! + 100 }).toFloat32();
      const b = onDevice(Tensor.from(bv, [m!, r!]), device), a = onDevice(Tensor.from(av, [r!, n!]), device);
      const got = linalg.svdProduct(b, a);
      const k = Math.min(m!, r!, n!);
      expect(got.u.shape).toEqual([m, k]);
      expect(got.vh.shape).toEqual([k, n]);
      const product = new Float64Array(m! * n!);
      for (let i = 0; i < m!; i++) for (let j = 0; j < r!; j++) for (let p = 0; p < n!; p++) product[i * n! + p]! += bv[i * r! + j]! * av[j * n! + p]!;
      const want = reference.linalg.svd({ data: product, shape: [m!, n!] });
      const s = got.s.toFloat32();
      for (let j = 0; j < k; j++) expect(Math.abs(s[j]! - want.s.data[j]!)).toBeLessThanOrEqual(TOL.singularValues * want.s.data[0]!);
      const approx = lowRankOf(got);
      expect(frob(Float64Array.from(product, (x, e) => x - approx[e]!))).toBeLessThanOrEqual(TOL.reconstruction * frob(product));
      expectOrthonormalFactors(got);
      if (k > 1) {
        const top = linalg.svdProduct(b, a, { rank: 1 });
        expect(top.u.shape).toEqual([m, 1]);
        expect(Math.abs(top.s.toFloat32()[0]! - want.s.data[0]!)).toBeLessThanOrEqual(TOL.singularValues * want.s.data[0]!);
      }
    });

    it('bad arguments are typed errors naming them', () => {
      const b = onDevice(Tensor.randn([6, 3]), device), a = onDevice(Tensor.randn([3, 5]), device);
      expectError(() => linalg.svdProduct(b, onDevice(Tensor.randn([4, 5]), device)), 'ERR_SHAPE', /^linalg\.svdProduct: a\.shape must be \[3, n\] \(r = b\.shape\[1\], n ≥ 1\), got \[4, 5\]/);
      expectError(() => linalg.svdProduct(b, a, { rank: 4 }), 'ERR_ARGUMENT', /opts\.rank must be an integer from 1 to min\(m, r, n\) = 3, got number 4/);
      expectError(() => linalg.svdProduct(Tensor.randn([6, 3], { dtype: 'bfloat16' }), a), 'ERR_DTYPE', /b must be of dtype float32/);
      if (device !== 'cpu') expectError(() => linalg.svdProduct(b, Tensor.randn([3, 5])), 'ERR_DEVICE', /a must be on cuda(:0)? like b, got cpu/);
      const nan = Tensor.randn([3, 5]).toFloat32();
      nan[7] = Infinity;
      expectError(() => linalg.svdProduct(b, onDevice(Tensor.from(nan, [3, 5]), device)), 'ERR_CONVERGENCE', /^linalg\.svdProduct: matrix 0 did not converge/);
    });
  });
});

// ---- a large matrix on the CPU ----------------------------------------------------------------------

describe.skipIf(!testDevices().some((d) => d.device === 'cpu'))('linalg.svd of a 520×520 on the CPU', () => {
  // The size the benchmarks time, too large for the float64 reference: orthonormal U, V and
  // A = UΣVh pin σ down to the reconstruction error all the same. One sweep: the blocked Jacobi's
  // preconditioner (csrc/cpu/sym_eigen.h) left it only the check.
  it('A = UΣVh with orthonormal U, V, σ descending, values-only σ the same', () => {
    const n = 520;
    const a = Tensor.randn([n, n], { seed: 52 });
    const got = linalg.svd(a);
    const values = linalg.svd(a, { computeUV: false }).s.toFloat32();
    const av = a.toFloat32(), u = got.u.toFloat32(), s = got.s.toFloat32(), vh = got.vh.toFloat32();
    const all = Array.from({ length: n }, (_, j) => j);
    for (let j = 0; j < n; j++) {
      expect(Math.abs(values[j]! - s[j]!)).toBeLessThanOrEqual(TOL.singularValues * s[0]!);
      if (j > 0) expect(s[j]!).toBeLessThanOrEqual(s[j - 1]!);
    }
    expect(s[n - 1]!).toBeGreaterThanOrEqual(0);
    const us = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) us[i * n + j] = u[i * n + j]! * s[j]!;
    const residual = new Float64Array(n * n);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        const x = us[i * n + j]!;
        for (let p = 0; p < n; p++) residual[i * n + p]! += x * vh[j * n + p]!;
      }
      for (let p = 0; p < n; p++) residual[i * n + p] = av[i * n + p]! - residual[i * n + p]!;
    }
    expect(frob(residual)).toBeLessThanOrEqual(TOL.reconstruction * frob(av));
    expect(orthogonalityError(u, 0, n, n, all)).toBeLessThanOrEqual(TOL.orthogonality);
    expect(orthogonalityError(vh, 0, n, n, all, true)).toBeLessThanOrEqual(TOL.orthogonality);
    expect(Array.from(got.sweeps)).toEqual([1]);
  });
});

// ---- numpy cross-check (optional) ----------------------------------------------------------------------

const numpy = spawnSync('/usr/bin/python3', ['-c', 'import numpy'], { encoding: 'utf8' }).status === 0;

describe.skipIf(!numpy || !testDevices().some((d) => d.device === 'cpu'))('linalg.svd against numpy.linalg.svd (CPU; python3 with numpy)', () => {
  it('σ of a few matrices agree with numpy in float64', () => {
    const shapes = [[33, 17], [20, 41], [64, 64]];
    const matrices = shapes.map(([m, n], i) => ({ shape: [m!, n!], a: Tensor.randn([m!, n!], { seed: 70 + i }).toFloat32() }));
    const script = 'import json, sys, numpy as np\n' +
      'ms = json.load(sys.stdin)\n' +
      'print(json.dumps([np.linalg.svd(np.array(m["a"], dtype=np.float64).reshape(m["shape"]), compute_uv=False).tolist() for m in ms]))';
    const res = spawnSync('/usr/bin/python3', ['-c', script], {
      input: JSON.stringify(matrices.map(({ shape, a }) => ({ shape, a: Array.from(a) }))), encoding: 'utf8',
    });
    expect(res.status, res.stderr).toBe(0);
    const want = JSON.parse(res.stdout) as number[][];
    matrices.forEach(({ shape, a }, i) => {
      const s = linalg.svd(Tensor.from(a, shape), { computeUV: false }).s.toFloat32();
      want[i]!.forEach((x, j) => expect(Math.abs(s[j]! - x)).toBeLessThanOrEqual(TOL.singularValues * want[i]![0]!));
    });
  });
});
