/**
 * Quantized weights: NF4 (bitsandbytes / QLoRA, byte-identical to bitsandbytes) and 1.58-bit
 * ternary (BitNet b1.58 absmean), quantize and dequantize, and bitnet.cpp's I2_S layout.
 *
 * NF4: the weight [N, K] is flattened row-major and cut into blocks of `blockSize` elements
 * (32 … 4096, powers of two). Per block absmax = max |w| (NaN ignored), each value scaled by the
 * float32 reciprocal, x·(1/absmax), and mapped to the nearest of 16 codes with ties (and values on
 * a float32 midpoint) going to the lower code; element 2j is the HIGH nibble of byte j. An
 * all-zero block keeps absmax 0 and gets codes 7 (0x77); an odd element count pads the last low
 * nibble with 7 (the code of 0). Double quantization stores absmax as 8-bit codes of
 * absmax − offset (offset = mean absmax) in bitsandbytes' dynamic map, blocks of 256, each with a
 * float32 absmax of its own. Dequantize: code·absmax in float32, then one rounding to the dtype;
 * a double-quantized absmax is fp32(nestedCode[q]·nestedAbsmax[i / 256]) + offset, two roundings.
 *
 * Ternary: scale = max(mean |w|, eps) (one float32 for the tensor), codes clamp(round(w / scale),
 * −1, 1) packed row by row, 4 per byte, element k at bits 2·(k % 4) of byte k / 4 of its row, code
 * 0 = −1, 1 = 0, 2 = +1 (3 is never written and reads as 0); a row takes ⌈K/4⌉ bytes, padding
 * codes are 1. Dequantize: code·scale.
 *
 * I2_S (bitnet.cpp's x86 CPU format): the weight flattened row-major in blocks of 128, weight j of
 * a block in byte j % 32 of the block's 32 bytes at bit shift 6 − 2·(j / 32), codes as ours
 * (bitnet.cpp's quantize_i2_s: 0 = −1, 1 = 0, 2 = +1), then the float32 scale and zeros up to 32
 * bytes, as bitnet.cpp lays out an I2_S tensor's data. An element count that is not a multiple
 * of 128 is padded with code 1 (bitnet.cpp needs whole blocks). Repacked on the host.
 */
import { FLOAT_DTYPES, type DType } from '../dtype.js';
import { argumentError, describeValue, LoraKernelsError } from '../errors.js';
import type { NativeDequantize, NativeNf4Quantize, NativeQuantWeight, NativeTensor, NativeTernaryQuantize } from '../native.js';
import { type Device, deviceIndex, Tensor } from '../tensor.js';
import { Args, shapeText } from '../validate.js';
import { defineOp, type Prepared } from './define.js';
import { DYNAMIC_MAP } from './quant_tables.js';

/** The float dtypes a quantized weight remembers as its original (dequantize's default). */
export type QuantDType = 'float32' | 'float16' | 'bfloat16';

/** Double-quantized NF4 absmax: 8-bit codes of absmax − offset in a 256-entry map, blocks of 256. */
export interface Nf4NestedAbsmax {
  /** uint8 [nBlocks]: each block's code in nestedCode. */
  code: Tensor;
  /** float32 [⌈nBlocks / 256⌉]: the absmax of absmax − offset per block of 256. */
  nestedAbsmax: Tensor;
  /** float32 [256]: bitsandbytes' signed dynamic map. */
  nestedCode: Tensor;
  /** The mean of the block absmax values, added back. */
  offset: number;
}

/** An NF4-quantized weight [N, K] (see the top). Plain data: bnb.loadNf4 builds one from a checkpoint. */
export interface Nf4Tensor {
  readonly format: 'nf4';
  readonly shape: readonly [number, number];
  readonly blockSize: number;
  /** uint8 [⌈N·K / 2⌉]: two codes per byte, the even element in the high nibble. */
  readonly packed: Tensor;
  /** float32 [⌈N·K / blockSize⌉], or its double-quantized form. */
  readonly absmax: Tensor | Nf4NestedAbsmax;
  /** The weight's dtype before quantization: what dequantize returns by default. */
  readonly dtype: QuantDType;
  readonly device: Device;
}

/** A ternary (BitNet b1.58) weight [N, K] (see the top). */
export interface TernaryTensor {
  readonly format: 'ternary';
  readonly shape: readonly [number, number];
  /** uint8 [N, ⌈K / 4⌉]: four 2-bit codes per byte, row by row. */
  readonly packed: Tensor;
  /** W ≈ scale · codes. */
  readonly scale: number;
  readonly dtype: QuantDType;
  readonly device: Device;
}

export type QuantizedTensor = Nf4Tensor | TernaryTensor;

export const NF4_MIN_BLOCK = 32;
export const NF4_MAX_BLOCK = 4096;
/** Absmax values per block of NF4's double quantization. */
export const NF4_NESTED_BLOCK = 256;

export function nf4Blocks(n: number, k: number, blockSize: number): number {
  return Math.ceil((n * k) / blockSize);
}

export function ternaryRowBytes(k: number): number {
  return Math.ceil(k / 4);
}

export function isBlockSize(v: unknown): v is number {
  return Number.isSafeInteger(v) && (v as number) >= NF4_MIN_BLOCK && (v as number) <= NF4_MAX_BLOCK &&
    ((v as number) & ((v as number) - 1)) === 0;
}

export const BLOCK_SIZE_TEXT = `a power of two from ${NF4_MIN_BLOCK} to ${NF4_MAX_BLOCK}`;

// ---- validation of a quantized weight --------------------------------------------------------------

/** `value` as a Tensor of `dtype` and `shape` on `device`: the parts of a quantized weight. */
function expectPart(op: string, name: string, value: unknown, dtype: DType, shape: readonly number[], device: Device): Tensor {
  if (!(value instanceof Tensor)) throw argumentError('ERR_ARGUMENT', op, name, 'a Tensor', describeValue(value));
  if (value.disposed) throw argumentError('ERR_DISPOSED', op, name, 'a live tensor', 'a disposed tensor');
  if (value.dtype !== dtype) throw argumentError('ERR_DTYPE', op, name, dtype, value.dtype);
  if (value.shape.length !== shape.length || value.shape.some((d, i) => d !== shape[i])) {
    throw argumentError('ERR_SHAPE', op, `${name}.shape`, shapeText(shape), shapeText(value.shape));
  }
  if (value.device !== device) throw argumentError('ERR_DEVICE', op, name, `on ${device} like the weight's packed codes`, value.device);
  return value;
}

/**
 * Checks that `value` is a complete, consistent quantized weight (of `format` when given) and
 * returns it: every part a live tensor of the right dtype and shape on one device. The messages
 * name the part (`weight.absmax.code`, …).
 */
export function expectQuantized(op: string, name: string, value: unknown, format?: 'nf4' | 'ternary'): QuantizedTensor {
  const formats = format === 'nf4' ? 'an Nf4Tensor' : format === 'ternary' ? 'a TernaryTensor' : 'an Nf4Tensor or a TernaryTensor';
  const what = `${formats} (from quant.nf4.quantize, quant.ternary.quantize or bnb.loadNf4)`;
  if (value === null || typeof value !== 'object') throw argumentError('ERR_ARGUMENT', op, name, what, describeValue(value));
  const q = value as Record<string, unknown>;
  if (q['format'] !== 'nf4' && q['format'] !== 'ternary') {
    throw argumentError('ERR_ARGUMENT', op, name, what, `an object with format ${describeValue(q['format'])}`);
  }
  if (format && q['format'] !== format) throw argumentError('ERR_ARGUMENT', op, name, what, `a quantized weight of format ${q['format']}`);
  const shape = q['shape'];
  if (!Array.isArray(shape) || shape.length !== 2 || !shape.every((d) => Number.isSafeInteger(d) && d >= 1)) {
    throw argumentError('ERR_SHAPE', op, `${name}.shape`, '[N, K] with N, K ≥ 1', Array.isArray(shape) ? shapeText(shape) : describeValue(shape));
  }
  const [n, k] = shape as [number, number];
  if (!FLOAT_DTYPES.includes(q['dtype'] as DType)) {
    throw argumentError('ERR_DTYPE', op, `${name}.dtype`, FLOAT_DTYPES.join(' or '), describeValue(q['dtype']));
  }
  const packedValue = q['packed'];
  if (!(packedValue instanceof Tensor)) throw argumentError('ERR_ARGUMENT', op, `${name}.packed`, 'a Tensor', describeValue(packedValue));
  const device = packedValue.device;
  if (q['device'] !== device) throw argumentError('ERR_DEVICE', op, `${name}.device`, `${device}, where its packed codes are`, describeValue(q['device']));
  if (q['format'] === 'ternary') {
    expectPart(op, `${name}.packed`, packedValue, 'uint8', [n, ternaryRowBytes(k)], device);
    if (typeof q['scale'] !== 'number' || !Number.isFinite(q['scale'])) {
      throw argumentError('ERR_ARGUMENT', op, `${name}.scale`, 'a finite number', describeValue(q['scale']));
    }
    return value as TernaryTensor;
  }
  if (!isBlockSize(q['blockSize'])) throw argumentError('ERR_ARGUMENT', op, `${name}.blockSize`, BLOCK_SIZE_TEXT, describeValue(q['blockSize']));
  const blocks = nf4Blocks(n, k, q['blockSize']);
  expectPart(op, `${name}.packed`, packedValue, 'uint8', [Math.ceil((n * k) / 2)], device);
  const absmax = q['absmax'];
  if (absmax instanceof Tensor) {
    expectPart(op, `${name}.absmax`, absmax, 'float32', [blocks], device);
  } else if (absmax !== null && typeof absmax === 'object') {
    const nested = absmax as Record<string, unknown>;
    expectPart(op, `${name}.absmax.code`, nested['code'], 'uint8', [blocks], device);
    expectPart(op, `${name}.absmax.nestedAbsmax`, nested['nestedAbsmax'], 'float32', [Math.ceil(blocks / NF4_NESTED_BLOCK)], device);
    expectPart(op, `${name}.absmax.nestedCode`, nested['nestedCode'], 'float32', [DYNAMIC_MAP.length], device);
    if (typeof nested['offset'] !== 'number' || !Number.isFinite(nested['offset'])) {
      throw argumentError('ERR_ARGUMENT', op, `${name}.absmax.offset`, 'a finite number', describeValue(nested['offset']));
    }
  } else {
    throw argumentError('ERR_ARGUMENT', op, `${name}.absmax`, 'a float32 Tensor or { code, nestedAbsmax, nestedCode, offset }', describeValue(absmax));
  }
  return value as Nf4Tensor;
}

/** Every tensor a quantized weight holds (for aliasing checks and dispose). */
export function quantizedParts(q: QuantizedTensor): Record<string, Tensor> {
  if (q.format === 'ternary') return { 'weight.packed': q.packed };
  if (q.absmax instanceof Tensor) return { 'weight.packed': q.packed, 'weight.absmax': q.absmax };
  return {
    'weight.packed': q.packed, 'weight.absmax.code': q.absmax.code, 'weight.absmax.nestedAbsmax': q.absmax.nestedAbsmax,
    'weight.absmax.nestedCode': q.absmax.nestedCode,
  };
}

/** The descriptor the addon reads (csrc/binding/quant_weight.cpp). */
export function nativeQuantized(q: QuantizedTensor, op: string): NativeQuantWeight {
  const [n, k] = q.shape;
  const part = (t: Tensor, name: string): NativeTensor => Tensor.native(t, op, name);
  if (q.format === 'ternary') return { format: 1, n, k, packed: part(q.packed, 'weight.packed'), scale: q.scale };
  const desc: NativeQuantWeight = { format: 0, n, k, packed: part(q.packed, 'weight.packed'), blockSize: q.blockSize };
  if (q.absmax instanceof Tensor) {
    desc.absmax = part(q.absmax, 'weight.absmax');
  } else {
    desc.absmaxCode = part(q.absmax.code, 'weight.absmax.code');
    desc.nestedAbsmax = part(q.absmax.nestedAbsmax, 'weight.absmax.nestedAbsmax');
    desc.nestedCode = part(q.absmax.nestedCode, 'weight.absmax.nestedCode');
    desc.offset = q.absmax.offset;
  }
  return desc;
}

// ---- quantize ---------------------------------------------------------------------------------------

export interface Nf4QuantizeOptions {
  /** Elements per block: a power of two from 32 to 4096. Default 64 (bitsandbytes' default). */
  blockSize?: number;
  /** Quantize the absmax values too (QLoRA's double quantization, ~0.37 bits per weight less). Default false. */
  doubleQuant?: boolean;
}

export interface TernaryQuantizeOptions {
  /** The smallest scale (BitNet's clamp of mean |w|). Default 1e-5. */
  eps?: number;
}

/** w [N, K] (N, K ≥ 1) in a float dtype: what both quantizers take. */
function weightToQuantize(op: string, w: unknown): { w: Tensor; n: number; k: number } {
  const args = new Args(op, { w });
  const t = args.tensor('w', { dtypes: FLOAT_DTYPES });
  if (t.shape.length !== 2 || t.shape[0]! < 1 || t.shape[1]! < 1) {
    throw argumentError('ERR_SHAPE', op, 'w.shape', '[N, K] with N, K ≥ 1', shapeText(t.shape));
  }
  return { w: t, n: t.shape[0]!, k: t.shape[1]! };
}

/** The options object as Args whose names read `opts.<name>` in messages. */
function options(op: string, opts: unknown): Args {
  if (opts !== undefined && (opts === null || typeof opts !== 'object' || Array.isArray(opts))) {
    throw argumentError('ERR_ARGUMENT', op, 'opts', 'an object of options', describeValue(opts));
  }
  return new Args(op, Object.fromEntries(Object.entries(opts ?? {}).map(([key, value]) => [`opts.${key}`, value])));
}

function prepareNf4(op: string, w: Tensor, opts: Nf4QuantizeOptions | undefined): Prepared<NativeNf4Quantize, Nf4Tensor> {
  const { w: weight, n, k } = weightToQuantize(op, w);
  const o = options(op, opts);
  const blockSize = opts?.blockSize ?? 64;
  if (!isBlockSize(blockSize)) throw argumentError('ERR_ARGUMENT', op, 'opts.blockSize', BLOCK_SIZE_TEXT, describeValue(blockSize));
  const doubleQuant = o.boolean('opts.doubleQuant', false);
  const device = weight.device;
  const blocks = nf4Blocks(n, k, blockSize);
  const packed = Tensor.empty([Math.ceil((n * k) / 2)], { dtype: 'uint8', device });
  const absmax = Tensor.empty([blocks], { dtype: 'float32', device });
  const desc: NativeNf4Quantize = {
    w: Tensor.native(weight, op, 'w'), blockSize, doubleQuant, packed: Tensor.native(packed, op, 'packed'),
    absmax: Tensor.native(absmax, op, 'absmax'),
  };
  const base = { format: 'nf4' as const, shape: [n, k] as const, blockSize, packed, dtype: weight.dtype as QuantDType, device };
  if (!doubleQuant) return { desc, finish: () => ({ ...base, absmax }) };
  const code = Tensor.empty([blocks], { dtype: 'uint8', device });
  const nestedAbsmax = Tensor.empty([Math.ceil(blocks / NF4_NESTED_BLOCK)], { dtype: 'float32', device });
  const nestedCode = onDevice(Tensor.from(DYNAMIC_MAP.slice(), [DYNAMIC_MAP.length]), device);
  const offset = Tensor.empty([1], { dtype: 'float32', device });
  Object.assign(desc, {
    absmaxCode: Tensor.native(code, op, 'absmaxCode'), nestedAbsmax: Tensor.native(nestedAbsmax, op, 'nestedAbsmax'),
    nestedCode: Tensor.native(nestedCode, op, 'nestedCode'), offset: Tensor.native(offset, op, 'offset'),
  });
  return {
    desc,
    finish: () => {
      // The float32 absmax was the nested quantization's input only.
      absmax.dispose();
      const value = offset.toFloat32()[0]!;
      offset.dispose();
      return { ...base, absmax: { code, nestedAbsmax, nestedCode, offset: value } };
    },
  };
}

function onDevice(t: Tensor, device: Device): Tensor {
  return device === 'cpu' ? t : t.to(device);
}

const nf4QuantizeOp = defineOp('quant.nf4.quantize', 'nf4Quantize', prepareNf4);

/** NF4-quantizes w [N, K] with bitsandbytes' bytes (see the top). On CUDA with doubleQuant, waits for the device (the offset is read back). */
export function nf4Quantize(w: Tensor, opts?: Nf4QuantizeOptions): Nf4Tensor {
  return nf4QuantizeOp.sync(w, opts);
}

/** nf4Quantize() off the JS thread. */
export function nf4QuantizeAsync(w: Tensor, opts?: Nf4QuantizeOptions): Promise<Nf4Tensor> {
  return nf4QuantizeOp.async(w, opts);
}

function prepareTernary(op: string, w: Tensor, opts: TernaryQuantizeOptions | undefined): Prepared<NativeTernaryQuantize, TernaryTensor> {
  const { w: weight, n, k } = weightToQuantize(op, w);
  const eps = options(op, opts).number('opts.eps', 1e-5);
  if (!(eps > 0)) throw argumentError('ERR_ARGUMENT', op, 'opts.eps', 'a positive number', String(eps));
  const device = weight.device;
  const packed = Tensor.empty([n, ternaryRowBytes(k)], { dtype: 'uint8', device });
  const scale = Tensor.empty([1], { dtype: 'float32', device });
  const desc: NativeTernaryQuantize = { w: Tensor.native(weight, op, 'w'), eps, packed: Tensor.native(packed, op, 'packed'), scale: Tensor.native(scale, op, 'scale') };
  return {
    desc,
    finish: () => {
      const value = scale.toFloat32()[0]!;
      scale.dispose();
      return { format: 'ternary', shape: [n, k], packed, scale: value, dtype: weight.dtype as QuantDType, device };
    },
  };
}

const ternaryQuantizeOp = defineOp('quant.ternary.quantize', 'ternaryQuantize', prepareTernary);

/** Ternary-quantizes w [N, K] (BitNet b1.58 absmean, see the top). On CUDA, waits for the device (the scale is read back). */
export function ternaryQuantize(w: Tensor, opts?: TernaryQuantizeOptions): TernaryTensor {
  return ternaryQuantizeOp.sync(w, opts);
}

/** ternaryQuantize() off the JS thread. */
export function ternaryQuantizeAsync(w: Tensor, opts?: TernaryQuantizeOptions): Promise<TernaryTensor> {
  return ternaryQuantizeOp.async(w, opts);
}

// ---- dequantize -------------------------------------------------------------------------------------

export interface DequantizeOptions {
  /** The result's dtype. Default: the weight's original dtype (q.dtype), or out's. */
  dtype?: QuantDType;
  /** Where to write [N, K]; allocated when absent. */
  out?: Tensor;
}

function prepareDequantize(op: string, format: 'nf4' | 'ternary', q: QuantizedTensor, opts: DequantizeOptions | undefined): Prepared<NativeDequantize, Tensor> {
  const weight = expectQuantized(op, 'q', q, format);
  const o = options(op, opts);
  const given = o.optionalTensor('opts.out', { dtypes: FLOAT_DTYPES });
  const requested = opts?.dtype;
  if (requested !== undefined && !FLOAT_DTYPES.includes(requested as DType)) {
    throw argumentError('ERR_DTYPE', op, 'opts.dtype', FLOAT_DTYPES.join(' or '), describeValue(requested));
  }
  const dtype = (requested ?? given?.dtype ?? weight.dtype) as QuantDType;
  if (given) {
    if (given.dtype !== dtype) throw argumentError('ERR_DTYPE', op, 'opts.out', `${dtype} like opts.dtype`, given.dtype);
    if (given.device !== weight.device) throw argumentError('ERR_DEVICE', op, 'opts.out', `on ${weight.device} like q`, given.device);
    o.expectShape('opts.out', given, weight.shape);
    o.expectNoAlias('opts.out', given, quantizedParts(weight));
  }
  const out = given ?? Tensor.empty(weight.shape, { dtype, device: weight.device });
  return { desc: { weight: nativeQuantized(weight, op), out: Tensor.native(out, op, 'out') }, result: out };
}

function dequantizeWith(format: 'nf4' | 'ternary') {
  return defineOp(`quant.${format}.dequantize`, 'quantDequantize',
    (op, q: QuantizedTensor, opts?: DequantizeOptions) => prepareDequantize(op, format, q, opts));
}

const nf4Dequantizer = dequantizeWith('nf4');
const ternaryDequantizer = dequantizeWith('ternary');

/** The NF4 weight's values [N, K]: code·absmax in float32, then one rounding to the dtype. */
export function nf4Dequantize(q: Nf4Tensor, opts?: DequantizeOptions): Tensor {
  return nf4Dequantizer.sync(q, opts);
}

export function nf4DequantizeAsync(q: Nf4Tensor, opts?: DequantizeOptions): Promise<Tensor> {
  return nf4Dequantizer.async(q, opts);
}

/** The ternary weight's values [N, K]: code·scale, then one rounding to the dtype. */
export function ternaryDequantize(q: TernaryTensor, opts?: DequantizeOptions): Tensor {
  return ternaryDequantizer.sync(q, opts);
}

export function ternaryDequantizeAsync(q: TernaryTensor, opts?: DequantizeOptions): Promise<Tensor> {
  return ternaryDequantizer.async(q, opts);
}

// ---- moving and freeing ---------------------------------------------------------------------------

/** A copy of a quantized weight on `device` (every part copied, like Tensor.to). */
export function quantizedTo<Q extends QuantizedTensor>(q: Q, device: Device): Q {
  const weight = expectQuantized('quant.to', 'q', q);
  const to = (t: Tensor) => t.to(device);
  if (weight.format === 'ternary') return { ...weight, packed: to(weight.packed), device } as Q;
  const absmax = weight.absmax instanceof Tensor ? to(weight.absmax)
    : { ...weight.absmax, code: to(weight.absmax.code), nestedAbsmax: to(weight.absmax.nestedAbsmax), nestedCode: to(weight.absmax.nestedCode) };
  return { ...weight, packed: to(weight.packed), absmax, device } as Q;
}

/** Frees every part of a quantized weight now (device memory; idempotent like Tensor.dispose). */
export function disposeQuantized(q: QuantizedTensor): void {
  for (const t of Object.values(quantizedParts(q))) t.dispose();
}

// ---- bitnet.cpp I2_S --------------------------------------------------------------------------------

const I2S_BLOCK = 128;
const I2S_BLOCK_BYTES = 32;
/** The float32 scale and its padding after the packed blocks. */
const I2S_TRAILER_BYTES = 32;

function i2sPackedBytes(elements: number): number {
  return Math.ceil(elements / I2S_BLOCK) * I2S_BLOCK_BYTES;
}

/** Byte and bit shift of flattened element e in I2_S. */
function i2sPlace(e: number): [number, number] {
  const block = Math.floor(e / I2S_BLOCK), j = e % I2S_BLOCK;
  return [block * I2S_BLOCK_BYTES + (j % 32), 6 - 2 * Math.floor(j / 32)];
}

/** The weight in bitnet.cpp's I2_S layout (see the top): a host uint8 tensor of ⌈N·K/128⌉·32 + 32 bytes. */
export function ternaryToI2S(q: TernaryTensor): Tensor {
  const weight = expectQuantized('quant.ternary.toI2S', 'q', q, 'ternary') as TernaryTensor;
  const [n, k] = weight.shape;
  const rowBytes = ternaryRowBytes(k);
  const ours = weight.packed.toArray() as Uint8Array;
  const packedBytes = i2sPackedBytes(n * k);
  const out = new Uint8Array(packedBytes + I2S_TRAILER_BYTES);
  // Padding elements (up to a whole block) hold code 1 (0): 0b01 in each of their 2-bit places.
  for (let e = n * k; e < Math.ceil((n * k) / I2S_BLOCK) * I2S_BLOCK; e++) {
    const [byte, shift] = i2sPlace(e);
    out[byte]! |= 1 << shift;
  }
  for (let row = 0, e = 0; row < n; row++) {
    for (let col = 0; col < k; col++, e++) {
      const code = (ours[row * rowBytes + (col >> 2)]! >> (2 * (col & 3))) & 3;
      const [byte, shift] = i2sPlace(e);
      out[byte]! |= (code === 3 ? 1 : code) << shift;
    }
  }
  new DataView(out.buffer).setFloat32(packedBytes, weight.scale, true);
  return Tensor.from(out, [out.length], { dtype: 'uint8' });
}

export interface FromI2SOptions {
  /** The original dtype to remember (dequantize's default). Default float32. */
  dtype?: QuantDType;
  /** Where the result goes. Default cpu. */
  device?: Device;
}

/**
 * A TernaryTensor [N, K] from bitnet.cpp's I2_S bytes (a uint8 Tensor or a Uint8Array: the packed
 * blocks, then the float32 scale). Code 3 reads as 0. Wrong sizes are ERR_FORMAT.
 */
export function ternaryFromI2S(data: Tensor | Uint8Array, shape: readonly [number, number], opts: FromI2SOptions = {}): TernaryTensor {
  const op = 'quant.ternary.fromI2S';
  let bytes: Uint8Array;
  if (data instanceof Uint8Array) bytes = data;
  else if (data instanceof Tensor && data.dtype === 'uint8') bytes = data.toArray() as Uint8Array;
  else throw argumentError('ERR_ARGUMENT', op, 'data', 'a uint8 Tensor or a Uint8Array', data instanceof Tensor ? `a ${data.dtype} Tensor` : describeValue(data));
  if (!Array.isArray(shape) || shape.length !== 2 || !shape.every((d) => Number.isSafeInteger(d) && d >= 1)) {
    throw argumentError('ERR_SHAPE', op, 'shape', '[N, K] with N, K ≥ 1', Array.isArray(shape) ? shapeText(shape) : describeValue(shape));
  }
  const dtype = opts.dtype ?? 'float32';
  if (!FLOAT_DTYPES.includes(dtype)) throw argumentError('ERR_DTYPE', op, 'opts.dtype', FLOAT_DTYPES.join(' or '), describeValue(dtype));
  const device = opts.device ?? 'cpu';
  deviceIndex(device, op, 'opts.device');
  const [n, k] = shape;
  const packedBytes = i2sPackedBytes(n * k);
  if (bytes.length < packedBytes + 4) {
    throw new LoraKernelsError('ERR_FORMAT', `${op}: data must hold ${packedBytes} bytes of I2_S blocks for [${n}, ${k}] and a float32 scale after them, got ${bytes.length} bytes`);
  }
  const scale = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getFloat32(packedBytes, true);
  if (!Number.isFinite(scale)) throw new LoraKernelsError('ERR_FORMAT', `${op}: the scale after the I2_S blocks must be a finite float32, got ${scale}`);
  const rowBytes = ternaryRowBytes(k);
  // Our padding codes (past K in each row) are 1.
  const ours = new Uint8Array(n * rowBytes).fill(0x55);
  for (let row = 0, e = 0; row < n; row++) {
    for (let col = 0; col < k; col++, e++) {
      const [byte, shift] = i2sPlace(e);
      const code = (bytes[byte]! >> shift) & 3;
      const at = row * rowBytes + (col >> 2), place = 2 * (col & 3);
      ours[at] = (ours[at]! & ~(3 << place)) | ((code === 3 ? 1 : code) << place);
    }
  }
  const packed = onDevice(Tensor.from(ours, [n, rowBytes], { dtype: 'uint8' }), device);
  return { format: 'ternary', shape: [n, k], packed, scale, dtype, device: packed.device };
}
