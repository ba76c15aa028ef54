/**
 * linalg: batched float32 SVD and QR on every backend (the native ops of csrc/ops/linalg.h), and
 * two factorizations composed from them and the LoRA GEMMs on the tensor's device:
 *
 *   svd(a [..., m, n])            one-sided Jacobi; s descending, u, vh; sweeps per matrix
 *   qr(a [..., m, n])             Householder, reduced, diag(r) ≥ 0
 *   svdLowRank(a [m, n], rank)    randomized range finder (Halko, Martinsson, Tropp 2011)
 *   svdProduct(b [m, r], a [r, n]) the SVD of b·a without forming it
 *
 * The native ops address every operand through element strides (batch, row, column), so the
 * composed ones read transposed views and write transposed results without a transpose op: their
 * thin factors are kept as ROWS (an m × l matrix Y stored as the contiguous [l, m] tensor Yᵀ), the
 * layout in which lora.forward (x·weightᵀ) and lora.backward's gradInput (gradOutput·weight) take
 * and give them with the big matrix as the weight operand.
 *
 * A matrix that does not converge within maxSweeps (a NaN or infinity in it never does) is
 * ERR_CONVERGENCE naming it. On CUDA the ops wait for the device to read the sweep counts back.
 */
import { numbersToStorage, storageToFloat32 } from '../dtype.js';
import { argumentError, describeValue, LoraKernelsError } from '../errors.js';
import { callNative, type NativeLinalgQr, type NativeLinalgSvd } from '../native.js';
import { type Device, Tensor } from '../tensor.js';
import { Args, shapeText } from '../validate.js';
import { defineOp } from './define.js';
import { backward, forward } from './lora_linear.js';
import type { QuantDType } from './quant.js';

export interface SvdOptions {
  /** u [..., m, m] and vh [..., n, n] (orthonormal completions) instead of the economy [..., m, k], [..., k, n]. Default false. */
  fullMatrices?: boolean;
  /** Compute u and vh; false: singular values only (u and vh absent). Default true. */
  computeUV?: boolean;
  /** Jacobi sweeps before a matrix counts as not converged (ERR_CONVERGENCE). Default 30. */
  maxSweeps?: number;
  /** Where to write (each optional; allocated when absent), float32 on a's device, not overlapping a. */
  out?: { u?: Tensor; s?: Tensor; vh?: Tensor };
}

/** a = u·diag(s)·vh per matrix. k = min(m, n). */
export interface SvdResult {
  /** [..., m, k] ([..., m, m] with fullMatrices), orthonormal columns. */
  u: Tensor;
  /** [..., k], descending, ≥ 0. */
  s: Tensor;
  /** [..., k, n] ([..., n, n] with fullMatrices), orthonormal rows. */
  vh: Tensor;
  /** Jacobi sweeps each matrix took (batch dims flattened). */
  sweeps: Int32Array;
}

export type SvdValues = Omit<SvdResult, 'u' | 'vh'>;

export interface QrOptions {
  /** Where to write (each optional; allocated when absent), float32 on a's device, not overlapping a. */
  out?: { q?: Tensor; r?: Tensor };
}

/** a = q·r per matrix, k = min(m, n). */
export interface QrResult {
  /** [..., m, k], orthonormal columns. */
  q: Tensor;
  /** [..., k, n], upper triangular with diag ≥ 0. */
  r: Tensor;
}

export interface SvdLowRankOptions {
  /** The singular triplets returned: an integer from 1 to min(m, n). */
  rank: number;
  /** Sample columns beyond the rank (l = min(rank + oversample, m, n)). Default 10. */
  oversample?: number;
  /** Power iterations (each two products with a and two QRs). Default 2. */
  iters?: number;
  /** Seed of the Gaussian test matrix: the same seed gives the same result. Default 0. */
  seed?: number;
}

export interface SvdProductOptions {
  /** The leading singular triplets returned: 1 … min(m, r, n). Default min(m, r, n). */
  rank?: number;
}

/** A truncated SVD of one matrix: u [m, rank], s [rank], vh [rank, n], on its device. */
export interface LowRankSvd {
  u: Tensor;
  s: Tensor;
  vh: Tensor;
}

const DEFAULT_MAX_SWEEPS = 30;

// ---- strided operands and the native calls ---------------------------------------------------------

type Strides = [number, number, number];

/** A float32 operand as the native ops see it: element (b, i, j) at b·strides[0] + i·strides[1] + j·strides[2]. */
interface Strided {
  tensor: Tensor;
  strides: Strides;
}

/** A contiguous [batch, rows, cols] matrix. */
function rowMajor(tensor: Tensor, rows: number, cols: number): Strided {
  return { tensor, strides: [rows * cols, cols, 1] };
}

/** A rows × cols matrix stored column after column: the contiguous [cols, rows] tensor, seen transposed. */
function colMajor(tensor: Tensor, rows: number, cols: number): Strided {
  return { tensor, strides: [rows * cols, 1, rows] };
}

/** Frees device tensors now (host tensors are left to the garbage collector). */
export function release(...tensors: (Tensor | undefined)[]): void {
  for (const t of tensors) if (t && t.device !== 'cpu') t.dispose();
}

interface SvdCall {
  batch: number;
  m: number;
  n: number;
  keep: number;
  fullMatrices: boolean;
  maxSweeps: number;
  a: Strided;
  s: Tensor;
  u?: Strided;
  vh?: Strided;
  sweeps: Tensor;
}

function svdDescriptor(op: string, c: SvdCall): NativeLinalgSvd {
  const desc: NativeLinalgSvd = {
    a: Tensor.native(c.a.tensor, op, 'a'), aStrides: c.a.strides, batch: c.batch, m: c.m, n: c.n, keep: c.keep,
    fullMatrices: c.fullMatrices, maxSweeps: c.maxSweeps, tol: 0, s: Tensor.native(c.s, op, 's'),
    sweeps: Tensor.native(c.sweeps, op, 'sweeps'),
  };
  if (c.u) {
    desc.u = Tensor.native(c.u.tensor, op, 'u');
    desc.uStrides = c.u.strides;
  }
  if (c.vh) {
    desc.vh = Tensor.native(c.vh.tensor, op, 'vh');
    desc.vhStrides = c.vh.strides;
  }
  return desc;
}

/** The sweep counts (freeing their tensor); ERR_CONVERGENCE naming the first matrix that did not converge. */
function takeSweeps(op: string, c: SvdCall): Int32Array {
  const sweeps = c.sweeps.toArray() as Int32Array;
  release(c.sweeps);
  const failed = sweeps.findIndex((x) => x < 0);
  if (failed >= 0) {
    throw new LoraKernelsError('ERR_CONVERGENCE', `${op}: matrix ${failed} did not converge in ${c.maxSweeps} sweeps (a NaN or infinity in it?)`);
  }
  return sweeps;
}

/** The sweep counts, or (freeing `owned`: the outputs the caller allocated) ERR_CONVERGENCE. */
function finishSvd(op: string, c: SvdCall, owned: Tensor[]): Int32Array {
  try {
    return takeSweeps(op, c);
  } catch (error) {
    release(...owned);
    throw error;
  }
}

function runSvd(op: string, c: SvdCall, owned: Tensor[]): Int32Array {
  if (c.batch > 0) {
    const desc = svdDescriptor(op, c);
    callNative((m) => m.linalgSvd(desc));
  }
  return finishSvd(op, c, owned);
}

/** One matrix's leading `keep` triplets into s, u and vh (through their strides). */
function svdOne(op: string, a: Strided, m: number, n: number, keep: number, s: Tensor, u: Strided, vh: Strided, owned: Tensor[]): void {
  const sweeps = Tensor.empty([1], { dtype: 'int32', device: s.device });
  runSvd(op, { batch: 1, m, n, keep, fullMatrices: false, maxSweeps: DEFAULT_MAX_SWEEPS, a, s, u, vh, sweeps }, owned);
}

interface QrCall {
  batch: number;
  m: number;
  n: number;
  a: Strided;
  q: Strided;
  r?: Strided;
}

function qrDescriptor(op: string, c: QrCall): NativeLinalgQr {
  const desc: NativeLinalgQr = {
    a: Tensor.native(c.a.tensor, op, 'a'), aStrides: c.a.strides, batch: c.batch, m: c.m, n: c.n,
    q: Tensor.native(c.q.tensor, op, 'q'), qStrides: c.q.strides,
  };
  if (c.r) {
    desc.r = Tensor.native(c.r.tensor, op, 'r');
    desc.rStrides = c.r.strides;
  }
  return desc;
}

function runQr(op: string, c: QrCall): void {
  if (c.batch === 0) return;
  const desc = qrDescriptor(op, c);
  callNative((m) => m.linalgQr(desc));
}

// ---- argument checks ---------------------------------------------------------------------------------

/** The options object as Args whose names read `opts.<name>` in messages. */
function options(op: string, opts: unknown): Args {
  if (opts !== undefined && (opts === null || typeof opts !== 'object' || Array.isArray(opts))) {
    throw argumentError('ERR_ARGUMENT', op, 'opts', 'an object of options', describeValue(opts));
  }
  return new Args(op, Object.fromEntries(Object.entries(opts ?? {}).map(([key, value]) => [`opts.${key}`, value])));
}

/** An integer option in [min, max] (or its fallback when absent); `expected` says which in messages. */
function integer(op: string, name: string, value: unknown, fallback: number, min: number, max: number, expected: string): number {
  const v = value ?? fallback;
  if (!Number.isSafeInteger(v) || (v as number) < min || (v as number) > max) {
    throw argumentError('ERR_ARGUMENT', op, name, expected, describeValue(value));
  }
  return v as number;
}

/** A float32 tensor [..., m, n] with m, n ≥ 1 (exactly [m, n] when `matrix`): its batch and sizes. */
function matrixArg(args: Args, name: string, matrix: boolean): { t: Tensor; batchShape: number[]; batch: number; m: number; n: number } {
  const t = args.tensor(name, { dtypes: ['float32'] });
  const rank = t.shape.length;
  if ((matrix ? rank !== 2 : rank < 2) || t.shape[rank - 2]! < 1 || t.shape[rank - 1]! < 1) {
    throw argumentError('ERR_SHAPE', args.op, `${name}.shape`, matrix ? '[m, n] with m, n ≥ 1' : '[..., m, n] with m, n ≥ 1', shapeText(t.shape));
  }
  const batchShape = t.shape.slice(0, -2);
  return { t, batchShape, batch: batchShape.reduce((x, y) => x * y, 1), m: t.shape[rank - 2]!, n: t.shape[rank - 1]! };
}

/**
 * The `opts.out` object's tensors where given (float32, `shapes[name]`, on `device`, overlapping
 * neither `input` nor each other), fresh tensors elsewhere; a name whose shape is undefined must
 * not be given.
 */
function outputs<K extends string>(
  op: string, given: unknown, device: Device, input: Tensor, shapes: Record<K, number[] | undefined>, absentWhy = '',
): Partial<Record<K, Tensor>> {
  if (given !== undefined && (given === null || typeof given !== 'object' || Array.isArray(given))) {
    throw argumentError('ERR_ARGUMENT', op, 'opts.out', `an object { ${Object.keys(shapes).map((k) => `${k}?`).join(', ')} }`, describeValue(given));
  }
  const parts = new Args(op, Object.fromEntries(Object.entries(given ?? {}).map(([key, value]) => [`opts.out.${key}`, value])));
  const result: Partial<Record<K, Tensor>> = {};
  for (const name of Object.keys(shapes) as K[]) {
    const argName = `opts.out.${name}`;
    const shape = shapes[name];
    if (!shape) {
      if ((given as Record<string, unknown> | undefined)?.[name] !== undefined) {
        throw argumentError('ERR_ARGUMENT', op, argName, `undefined ${absentWhy}`, describeValue((given as Record<string, unknown>)[name]));
      }
      continue;
    }
    const t = parts.optionalTensor(argName, { dtypes: ['float32'] });
    if (!t) {
      result[name] = Tensor.empty(shape, { device });
      continue;
    }
    if (t.device !== device) throw argumentError('ERR_DEVICE', op, argName, `on ${device} like a`, t.device);
    parts.expectShape(argName, t, shape);
    parts.expectNoAlias(argName, t, { a: input });
    for (const [other, u] of Object.entries(result) as [string, Tensor][]) {
      if (Tensor.overlaps(t, u)) throw argumentError('ERR_ARGUMENT', op, argName, `memory not shared with opts.out.${other}`, 'an overlapping tensor');
    }
    result[name] = t;
  }
  return result;
}

// ---- svd and qr --------------------------------------------------------------------------------------

function prepareSvd(op: string, a: Tensor, opts: SvdOptions | undefined): { call: SvdCall; fresh: Tensor[] } {
  const { t, batchShape, batch, m, n } = matrixArg(new Args(op, { a }), 'a', false);
  const o = options(op, opts);
  const fullMatrices = o.boolean('opts.fullMatrices', false);
  const computeUV = o.boolean('opts.computeUV', true);
  const maxSweeps = integer(op, 'opts.maxSweeps', opts?.maxSweeps, DEFAULT_MAX_SWEEPS, 1, 2 ** 31 - 1, 'an integer ≥ 1');
  const k = Math.min(m, n);
  const uCols = fullMatrices ? m : k, vhRows = fullMatrices ? n : k;
  const out = outputs(op, opts?.out, t.device, t, {
    u: computeUV ? [...batchShape, m, uCols] : undefined,
    s: [...batchShape, k],
    vh: computeUV ? [...batchShape, vhRows, n] : undefined,
  }, 'when opts.computeUV is false');
  const fresh = (['u', 's', 'vh'] as const).filter((name) => out[name] && out[name] !== opts?.out?.[name]).map((name) => out[name]!);
  const call: SvdCall = {
    batch, m, n, keep: k, fullMatrices: computeUV && fullMatrices, maxSweeps, a: rowMajor(t, m, n), s: out.s!,
    sweeps: Tensor.empty([batch], { dtype: 'int32', device: t.device }),
  };
  if (computeUV) {
    call.u = rowMajor(out.u!, m, uCols);
    call.vh = rowMajor(out.vh!, vhRows, n);
  }
  return { call, fresh };
}

function svdResult(call: SvdCall, sweeps: Int32Array): SvdResult | SvdValues {
  return call.u ? { u: call.u.tensor, s: call.s, vh: call.vh!.tensor, sweeps } : { s: call.s, sweeps };
}

// An empty batch calls nothing; the sweep counts are read back after the call (ERR_CONVERGENCE frees
// the outputs this call allocated).
const svdOp = defineOp('linalg.svd', 'linalgSvd', (op: string, a: Tensor, opts: SvdOptions | undefined) => {
  const { call, fresh } = prepareSvd(op, a, opts);
  return { desc: call.batch > 0 ? svdDescriptor(op, call) : undefined, finish: () => svdResult(call, finishSvd(op, call, fresh)) };
});

/**
 * The singular value decomposition of each matrix of a [..., m, n] (float32, CPU or CUDA; batch
 * dims flattened): a = u·diag(s)·vh with s descending. computeUV false: s and sweeps only.
 */
export function svd(a: Tensor, opts: SvdOptions & { computeUV: false }): SvdValues;
export function svd(a: Tensor, opts?: SvdOptions & { computeUV?: true }): SvdResult;
export function svd(a: Tensor, opts?: SvdOptions): SvdResult | SvdValues;
export function svd(a: Tensor, opts?: SvdOptions): SvdResult | SvdValues {
  return svdOp.sync(a, opts);
}

/** svd() off the JS thread. */
export async function svdAsync(a: Tensor, opts: SvdOptions & { computeUV: false }): Promise<SvdValues>;
export async function svdAsync(a: Tensor, opts?: SvdOptions & { computeUV?: true }): Promise<SvdResult>;
export async function svdAsync(a: Tensor, opts?: SvdOptions): Promise<SvdResult | SvdValues>;
export async function svdAsync(a: Tensor, opts?: SvdOptions): Promise<SvdResult | SvdValues> {
  return svdOp.async(a, opts);
}

function prepareQr(op: string, a: Tensor, opts: QrOptions | undefined): QrCall {
  const { t, batchShape, batch, m, n } = matrixArg(new Args(op, { a }), 'a', false);
  options(op, opts);
  const k = Math.min(m, n);
  const out = outputs(op, opts?.out, t.device, t, { q: [...batchShape, m, k], r: [...batchShape, k, n] });
  return { batch, m, n, a: rowMajor(t, m, n), q: rowMajor(out.q!, m, k), r: rowMajor(out.r!, k, n) };
}

const qrOp = defineOp('linalg.qr', 'linalgQr', (op: string, a: Tensor, opts: QrOptions | undefined) => {
  const call = prepareQr(op, a, opts);
  return { desc: call.batch > 0 ? qrDescriptor(op, call) : undefined, result: { q: call.q.tensor, r: call.r!.tensor } };
});

/** The reduced QR decomposition of each matrix of a [..., m, n] (float32): a = q·r, diag(r) ≥ 0. */
export function qr(a: Tensor, opts?: QrOptions): QrResult {
  return qrOp.sync(a, opts);
}

/** qr() off the JS thread. */
export async function qrAsync(a: Tensor, opts?: QrOptions): Promise<QrResult> {
  return qrOp.async(a, opts);
}

/**
 * The leading `rank` singular triplets of one float32 matrix a [m, n] by the native SVD (its
 * `keep`): u [m, rank], s [rank], vh [rank, n]. For init.pissa's exact method.
 */
export function truncatedSvd(op: string, a: Tensor, rank: number): LowRankSvd {
  const [m, n] = a.shape as [number, number];
  const device = a.device;
  const u = Tensor.empty([m, rank], { device }), s = Tensor.empty([rank], { device }), vh = Tensor.empty([rank, n], { device });
  svdOne(op, rowMajor(a, m, n), m, n, rank, s, rowMajor(u, m, rank), rowMajor(vh, rank, n), [u, s, vh]);
  return { u, s, vh };
}

// ---- svdLowRank ----------------------------------------------------------------------------------------

/**
 * The products with a [m, n] the range finder needs, through the native GEMM with a as the weight
 * operand, both on thin factors kept as rows: (a·X)ᵀ = Xᵀ·aᵀ via lora.forward (x·weightᵀ) and
 * Gᵀ·a via lora.backward's gradInput (gradOutput·weight), the one native product that takes a
 * untransposed on the right; backward's other outputs are made free by scale 0 and a rank-1 zero
 * adapter (O(l·(m + n)) work). Exact float32 on CUDA (no TF32): the range must be resolved to
 * float32 accuracy.
 */
class Products {
  readonly #zeroX: Tensor;
  readonly #zeroA: Tensor;
  readonly #zeroB: Tensor;

  constructor(readonly a: Tensor, m: number, n: number, l: number) {
    this.#zeroX = Tensor.zeros([l, n], { device: a.device });
    this.#zeroA = Tensor.zeros([1, n], { device: a.device });
    this.#zeroB = Tensor.zeros([m, 1], { device: a.device });
  }

  /** a·X for X [n, l] given as its rows [l, n] (released here): a·X as its rows [l, m]. */
  times(xRows: Tensor): Tensor {
    const y = forward({ x: xRows, weight: this.a, allowTf32: false });
    release(xRows);
    return y;
  }

  /** aᵀ·G for G [m, l] given as its rows [l, m] (released here): aᵀ·G as its rows [l, n], i.e. Gᵀ·a. */
  transposeTimes(gRows: Tensor): Tensor {
    const { gradInput, gradA, gradB } = backward({
      gradOutput: gRows, x: this.#zeroX, weight: this.a, a: this.#zeroA, b: this.#zeroB, scale: 0,
    });
    release(gRows, gradA, gradB);
    return gradInput!;
  }

  dispose(): void {
    release(this.#zeroX, this.#zeroA, this.#zeroB);
  }
}

/**
 * Q of the QR of an m × l matrix (l ≤ m) given as its rows [l, m]: as rows [l, m] again, or as
 * the contiguous [m, l] matrix. Householder keeps Q orthonormal even when the sample is rank
 * deficient (a zero or low-rank a): the extra columns complete the basis.
 */
function orthonormalize(op: string, rows: Tensor, m: number, l: number, layout: 'rows' | 'matrix'): Tensor {
  const q = Tensor.empty(layout === 'rows' ? [l, m] : [m, l], { device: rows.device });
  runQr(op, { batch: 1, m, n: l, a: colMajor(rows, m, l), q: layout === 'rows' ? colMajor(q, m, l) : rowMajor(q, m, l) });
  return q;
}

function validateLowRank(op: string, a: unknown, opts: unknown): { t: Tensor; m: number; n: number; rank: number; oversample: number; iters: number; seed: number } {
  const { t, m, n } = matrixArg(new Args(op, { a }), 'a', true);
  if (opts === null || typeof opts !== 'object' || Array.isArray(opts)) {
    throw argumentError('ERR_ARGUMENT', op, 'opts', 'an object with rank', describeValue(opts));
  }
  const o = opts as Record<string, unknown>;
  const maxRank = Math.min(m, n);
  const rank = integer(op, 'opts.rank', o['rank'], NaN, 1, maxRank, `an integer from 1 to min(m, n) = ${maxRank}`);
  const oversample = integer(op, 'opts.oversample', o['oversample'], 10, 0, Number.MAX_SAFE_INTEGER, 'an integer ≥ 0');
  const iters = integer(op, 'opts.iters', o['iters'], 2, 0, Number.MAX_SAFE_INTEGER, 'an integer ≥ 0');
  const seed = integer(op, 'opts.seed', o['seed'], 0, Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, 'a safe integer');
  return { t, m, n, rank, oversample, iters, seed };
}

/**
 * A rank-`rank` truncated SVD of a [m, n] (float32) by the randomized range finder, on a's
 * device: Y = a·Ω for a Gaussian Ω [n, l] (l = min(rank + oversample, m, n)), Q = qr(Y); `iters`
 * power iterations Q = qr(a·qr(aᵀ·Q)) (re-orthonormalized each time, so σ² growth cannot wash
 * out the small directions); then B = Qᵀ·a [l, n] = U_b·Σ·Vh, u = Q·U_b[:, :rank].
 *
 * Everything stays on the device; the thin factors are rows (see the top), so each product is one
 * lora.forward or lora.backward and each QR reads and writes them through strides. U = Q·U_b needs
 * Q as the contiguous [m, l] matrix (the x of x·U_bᵀ, with U_b written transposed by the SVD)
 * while Qᵀ·a needs it as rows: the last Y is factored twice, once per layout. Napkin math (4096²,
 * rank 16, l = 26, iters 2): (2 + 2·iters) = 6 products of 2·m·n·l ≈ 0.87 GFLOP, 5.2 GFLOP in all
 * (a dense SVD: ~10·n³ ≈ 700 GFLOP); a QR with its Q ~4·m·l² ≈ 11 MFLOP, so the second one adds
 * 0.2%.
 */
export function svdLowRank(a: Tensor, opts: SvdLowRankOptions): LowRankSvd {
  const op = 'linalg.svdLowRank';
  const { t, m, n, rank, oversample, iters, seed } = validateLowRank(op, a, opts);
  const device = t.device;
  const l = Math.min(rank + oversample, m, n);
  const products = new Products(t, m, n, l);
  let y = products.times(Tensor.randn([l, n], { device, seed }));  // rows of a·Ω
  for (let it = 0; it < iters; it++) {
    const q = orthonormalize(op, y, m, l, 'rows');
    release(y);
    const z = products.transposeTimes(q);  // rows of aᵀ·Q
    y = products.times(orthonormalize(op, z, n, l, 'rows'));
    release(z);
  }
  const qRows = orthonormalize(op, y, m, l, 'rows'), qMatrix = orthonormalize(op, y, m, l, 'matrix');
  release(y);
  const b = products.transposeTimes(qRows);  // B = Qᵀ·a [l, n]
  products.dispose();
  const ubT = Tensor.empty([rank, l], { device }), s = Tensor.empty([rank], { device }), vh = Tensor.empty([rank, n], { device });
  svdOne(op, rowMajor(b, l, n), l, n, rank, s, colMajor(ubT, l, rank), rowMajor(vh, rank, n), [qMatrix, b, ubT, s, vh]);
  const u = forward({ x: qMatrix, weight: ubT, allowTf32: false });  // Q·U_b [m, rank]
  release(qMatrix, b, ubT);
  return { u, s, vh };
}

// ---- svdProduct ----------------------------------------------------------------------------------------

function validateProduct(op: string, b: unknown, a: unknown, opts: unknown): { b: Tensor; a: Tensor; m: number; r: number; n: number; rank: number } {
  const args = new Args(op, { b, a });
  const { t: bt, m, n: r } = matrixArg(args, 'b', true);
  const at = args.tensor('a', { dtypes: ['float32'] });
  if (at.device !== bt.device) throw argumentError('ERR_DEVICE', op, 'a', `on ${bt.device} like b`, at.device);
  if (at.shape.length !== 2 || at.shape[0] !== r || at.shape[1]! < 1) {
    throw argumentError('ERR_SHAPE', op, 'a.shape', `[${r}, n] (r = b.shape[1], n ≥ 1)`, shapeText(at.shape));
  }
  const n = at.shape[1]!;
  const maxRank = Math.min(m, r, n);
  options(op, opts);
  const rank = integer(op, 'opts.rank', (opts as SvdProductOptions | undefined)?.rank, maxRank, 1, maxRank, `an integer from 1 to min(m, r, n) = ${maxRank}`);
  return { b: bt, a: at, m, r, n, rank };
}

/**
 * The SVD of b·a (b [m, r], a [r, n], float32, one device) without forming the m × n product:
 * b = Q_b·R_b, aᵀ = Q_a·R_a (reduced QRs, k_b = min(m, r), k_a = min(n, r); aᵀ read through
 * strides), core = R_b·R_aᵀ [k_b, k_a] = U_c·Σ·V_cᵀ, so b·a = (Q_b·U_c)·Σ·(Q_a·V_c)ᵀ. The two
 * outer products are lora.forward's x·weightᵀ with the SVD writing U_c transposed: u = Q_b·U_c,
 * vh = V_cᵀ·Q_aᵀ; no transpose op. Cost O((m + n)·r² + r³) against m·n·r to form b·a and
 * ~10·min(m, n)²·max(m, n) to factor it. Returns the leading `rank` triplets (default all
 * min(m, r, n)).
 */
export function svdProduct(b: Tensor, a: Tensor, opts?: SvdProductOptions): LowRankSvd {
  const op = 'linalg.svdProduct';
  const v = validateProduct(op, b, a, opts);
  const { m, r, n, rank } = v;
  const device = v.b.device;
  const kb = Math.min(m, r), ka = Math.min(n, r);
  const qb = Tensor.empty([m, kb], { device }), rb = Tensor.empty([kb, r], { device });
  runQr(op, { batch: 1, m, n: r, a: rowMajor(v.b, m, r), q: rowMajor(qb, m, kb), r: rowMajor(rb, kb, r) });
  const qa = Tensor.empty([n, ka], { device }), ra = Tensor.empty([ka, r], { device });
  runQr(op, { batch: 1, m: n, n: r, a: colMajor(v.a, n, r), q: rowMajor(qa, n, ka), r: rowMajor(ra, ka, r) });
  const core = forward({ x: rb, weight: ra, allowTf32: false });  // R_b·R_aᵀ [kb, ka]
  release(rb, ra);
  const ucT = Tensor.empty([rank, kb], { device }), s = Tensor.empty([rank], { device }), vhc = Tensor.empty([rank, ka], { device });
  svdOne(op, rowMajor(core, kb, ka), kb, ka, rank, s, colMajor(ucT, kb, rank), rowMajor(vhc, rank, ka), [qb, qa, core, ucT, s, vhc]);
  const u = forward({ x: qb, weight: ucT, allowTf32: false });  // Q_b·U_c [m, rank]
  const vh = forward({ x: vhc, weight: qa, allowTf32: false });  // V_cᵀ·Q_aᵀ [rank, n]
  release(qb, qa, core, ucT, vhc);
  return { u, s, vh };
}

// ---- for the ops composed on these (lora.compress / merge, init.pissa / loftq) ------------------------

/** values rounded once to `dtype` (float16 / bfloat16 through float32, as Tensor.from does), as float32. */
export function roundTo(dtype: QuantDType, values: ArrayLike<number>): Float32Array {
  return dtype === 'float32' ? Float32Array.from(values) : storageToFloat32(dtype, numbersToStorage(dtype, values));
}

/** Values already of `dtype` (see roundTo) as a tensor of that dtype on `device`. */
export function tensorOf(values: Float32Array, shape: readonly number[], dtype: QuantDType, device: Device): Tensor {
  const host = Tensor.from(numbersToStorage(dtype, values), shape, { dtype });
  return device === 'cpu' ? host : host.to(device);
}

/** t as float32 on its device: t itself, or a converted copy (a host round trip for float16 / bfloat16). */
export function float32Of(t: Tensor): Tensor {
  if (t.dtype === 'float32') return t;
  const host = Tensor.from(t.toFloat32(), t.shape);
  return t.device === 'cpu' ? host : host.to(t.device);
}

/**
 * A truncated SVD split evenly into LoRA factors: b = U·sqrt(Σ/scale) [m, rank] and
 * a = sqrt(Σ/scale)·Vh [rank, n], so scale·b·a = U·Σ·Vh; each rounded once to `dtype`. On the
 * host: the factors are (m + n)·rank values, and the ops that use this form their results there
 * (on CUDA they come down once, ~(m + n)·rank·4 bytes).
 */
export function splitFactors(svd: LowRankSvd, scale: number, dtype: QuantDType): { b: Float32Array; a: Float32Array } {
  const rank = svd.s.shape[0]!, n = svd.vh.shape[1]!;
  const u = svd.u.toFloat32(), s = svd.s.toFloat32(), vh = svd.vh.toFloat32();
  const roots = Float64Array.from(s, (x) => Math.sqrt(x / scale));
  const b = Float64Array.from(u, (x, e) => x * roots[e % rank]!);
  const a = Float64Array.from(vh, (x, e) => x * roots[Math.floor(e / n)]!);
  return { b: roundTo(dtype, b), a: roundTo(dtype, a) };
}
