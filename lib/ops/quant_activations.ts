/**
 * int8 per-token activation quantization: BitNet b1.58's activation quantizer (../shared/FORMATS.md,
 * ternary section), on every backend with the same bytes.
 *
 * Per row (token) of x [..., K]: s = 127 / max(max |x_row|, 1e-5) (a float32 division), code =
 * clamp(round(x·s), −128, 127) with round half to even (torch.round; x·s one float32 product),
 * stored as int8; the scales float32 [M], M the rows of x flattened. Dequantize: x̂ = code / s (a
 * float32 division), then one rounding to the dtype. A finite row's codes stay in [−127, 127].
 * Rows that are not finite: a NaN anywhere gives s = NaN (bits 0x7fc00000) and codes 0, so x̂ is
 * NaN across the row (as a NaN in x makes its row of a matmul NaN); ±inf without NaN gives s = 0,
 * codes 0 and again x̂ NaN (0 / 0). quant.matmul's `activations: 'int8'` composes the two.
 */
import { FLOAT_DTYPES } from '../dtype.js';
import { argumentError, describeValue } from '../errors.js';
import type { NativeInt8Dequantize, NativeInt8Quantize } from '../native.js';
import { Tensor } from '../tensor.js';
import { Args, shapeText } from '../validate.js';
import { defineOp, type Prepared } from './define.js';

/** x quantized per row (see the top). */
export interface Int8Activations {
  /** int8 [..., K]: the codes, in x's shape. */
  values: Tensor;
  /** float32 [M]: s per row of x flattened to [M, K]. */
  scales: Tensor;
}

export interface Int8QuantizeOptions {
  /** Where to write (each optional; allocated when absent): values int8 [..., K], scales float32 [M]. Must not overlap x. */
  out?: { values?: Tensor; scales?: Tensor };
}

export interface Int8DequantizeOptions {
  /** The result's dtype. Default: out's dtype, else float32. */
  dtype?: 'float32' | 'float16' | 'bfloat16';
  /** Where to write x̂ [..., K]; allocated when absent. */
  out?: Tensor;
}

/** The options object as Args whose names read `opts.<name>` in messages. */
function options(op: string, opts: unknown): Args {
  if (opts !== undefined && (opts === null || typeof opts !== 'object' || Array.isArray(opts))) {
    throw argumentError('ERR_ARGUMENT', op, 'opts', 'an object of options', describeValue(opts));
  }
  return new Args(op, Object.fromEntries(Object.entries(opts ?? {}).map(([key, value]) => [`opts.${key}`, value])));
}

/** [..., K] with K ≥ 1: the rows M. */
function rowsOf(op: string, name: string, t: Tensor): number {
  const k = t.shape[t.shape.length - 1];
  if (k === undefined || k < 1) throw argumentError('ERR_SHAPE', op, `${name}.shape`, '[..., K] with K ≥ 1', shapeText(t.shape));
  return t.numel / k;
}

function prepareQuantize(op: string, x: Tensor, opts: Int8QuantizeOptions | undefined): Prepared<NativeInt8Quantize, Int8Activations> {
  const input = new Args(op, { x }).tensor('x', { dtypes: FLOAT_DTYPES });
  const m = rowsOf(op, 'x', input);
  options(op, opts);
  const given = opts?.out;
  if (given !== undefined && (given === null || typeof given !== 'object' || Array.isArray(given))) {
    throw argumentError('ERR_ARGUMENT', op, 'opts.out', 'an object { values?, scales? }', describeValue(given));
  }
  const parts = new Args(op, Object.fromEntries(Object.entries(given ?? {}).map(([key, value]) => [`opts.out.${key}`, value])));
  const target = (name: 'values' | 'scales', dtype: 'int8' | 'float32', shape: readonly number[]): Tensor => {
    const t = parts.optionalTensor(`opts.out.${name}`, { dtypes: [dtype] });
    if (!t) return Tensor.empty(shape, { dtype, device: input.device });
    if (t.device !== input.device) throw argumentError('ERR_DEVICE', op, `opts.out.${name}`, `on ${input.device} like x`, t.device);
    parts.expectShape(`opts.out.${name}`, t, shape);
    parts.expectNoAlias(`opts.out.${name}`, t, { x: input });
    return t;
  };
  const values = target('values', 'int8', input.shape);
  const scales = target('scales', 'float32', [m]);
  if (Tensor.overlaps(values, scales)) throw argumentError('ERR_ARGUMENT', op, 'opts.out', 'separate values and scales tensors', 'overlapping tensors');
  const desc: NativeInt8Quantize = {
    x: Tensor.native(input, op, 'x'), values: Tensor.native(values, op, 'values'), scales: Tensor.native(scales, op, 'scales'),
  };
  return { desc, result: { values, scales } };
}

const quantizeOp = defineOp('quant.int8.quantize', 'int8Quantize', prepareQuantize);

/** Quantizes x [..., K] per row to int8 codes and float32 scales (see the top). */
export function int8Quantize(x: Tensor, opts?: Int8QuantizeOptions): Int8Activations {
  return quantizeOp.sync(x, opts);
}

/** int8Quantize() off the JS thread. */
export function int8QuantizeAsync(x: Tensor, opts?: Int8QuantizeOptions): Promise<Int8Activations> {
  return quantizeOp.async(x, opts);
}

function prepareDequantize(op: string, q: Int8Activations, opts: Int8DequantizeOptions | undefined): Prepared<NativeInt8Dequantize, Tensor> {
  if (q === null || typeof q !== 'object') {
    throw argumentError('ERR_ARGUMENT', op, 'q', 'an object { values, scales } (from quant.int8.quantize)', describeValue(q));
  }
  const parts = new Args(op, { 'q.values': q.values, 'q.scales': q.scales });
  const values = parts.tensor('q.values', { dtypes: ['int8'] });
  const m = rowsOf(op, 'q.values', values);
  const scales = parts.tensor('q.scales', { dtypes: ['float32'] });
  parts.expectShape('q.scales', scales, [m]);
  if (scales.device !== values.device) throw argumentError('ERR_DEVICE', op, 'q.scales', `on ${values.device} like q.values`, scales.device);
  const o = options(op, opts);
  const given = o.optionalTensor('opts.out', { dtypes: FLOAT_DTYPES });
  const requested = opts?.dtype;
  if (requested !== undefined && !FLOAT_DTYPES.includes(requested)) {
    throw argumentError('ERR_DTYPE', op, 'opts.dtype', FLOAT_DTYPES.join(' or '), describeValue(requested));
  }
  const dtype = requested ?? given?.dtype ?? 'float32';
  if (given) {
    if (given.dtype !== dtype) throw argumentError('ERR_DTYPE', op, 'opts.out', `${dtype} like opts.dtype`, given.dtype);
    if (given.device !== values.device) throw argumentError('ERR_DEVICE', op, 'opts.out', `on ${values.device} like q.values`, given.device);
    o.expectShape('opts.out', given, values.shape);
    o.expectNoAlias('opts.out', given, { 'q.values': values, 'q.scales': scales });
  }
  const out = given ?? Tensor.empty(values.shape, { dtype, device: values.device });
  const desc: NativeInt8Dequantize = {
    values: Tensor.native(values, op, 'q.values'), scales: Tensor.native(scales, op, 'q.scales'), out: Tensor.native(out, op, 'out'),
  };
  return { desc, result: out };
}

const dequantizeOp = defineOp('quant.int8.dequantize', 'int8Dequantize', prepareDequantize);

/** x̂ [..., K] = code / s per row, in float32, then rounded once to the dtype (default float32). */
export function int8Dequantize(q: Int8Activations, opts?: Int8DequantizeOptions): Tensor {
  return dequantizeOp.sync(q, opts);
}

/** int8Dequantize() off the JS thread. */
export function int8DequantizeAsync(q: Int8Activations, opts?: Int8DequantizeOptions): Promise<Tensor> {
  return dequantizeOp.async(q, opts);
}
