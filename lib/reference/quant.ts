/**
 * References of quantize and dequantize (lib/ops/quant.ts): slow, obvious, element by element. The
 * quantizers produce the bytes the kernels must produce (they are the byte-level oracle), with the
 * same float32 operations written out: Math.fround after each one. Dequantize returns the float32
 * values that define it (code·absmax rounded once to float32; a double-quantized absmax rounded
 * twice), as float64 numbers; a kernel's output in another dtype is those values rounded once more.
 */
import type { Nf4Tensor, QuantizedTensor, TernaryTensor, QuantDType } from '../ops/quant.js';
import { codeMidpoints, DYNAMIC_MAP, NF4_CODE, NF4_THRESHOLDS } from '../ops/quant_tables.js';
import { Tensor } from '../tensor.js';
import type { RefTensor } from './tolerance.js';

const NESTED_BLOCK = 256;
const DYNAMIC_MIDPOINTS = codeMidpoints(DYNAMIC_MAP);
/** The code of 0.0, which pads an odd element count. */
const NF4_ZERO_CODE = 7;

/** The number of thresholds v is strictly greater than: the nearest code, ties to the lower one (NaN: 0). */
function codeOf(v: number, thresholds: Float32Array): number {
  let code = 0;
  for (const t of thresholds) if (v > t) code++;
  return code;
}

/** The dynamic map's code of v: the nearest, a value exactly on a midpoint taking the even code (bitsandbytes' 8-bit quantizer). */
function nestedCodeOf(v: number): number {
  const code = codeOf(v, DYNAMIC_MIDPOINTS);
  return code % 2 === 1 && v === DYNAMIC_MIDPOINTS[code] ? code + 1 : code;
}

/** max |v| over values[from, to), NaN ignored. */
function absmax(values: ArrayLike<number>, from: number, to: number): number {
  let m = 0;
  for (let i = from; i < to; i++) if (Math.abs(values[i]!) > m) m = Math.abs(values[i]!);
  return m;
}

/** The float32 reciprocal a block is scaled by: 1/absmax, or 1 for an all-zero block (its codes are then those of 0). */
function reciprocal(m: number): number {
  return m > 0 ? Math.fround(1 / m) : 1;
}

function host(t: Tensor): ArrayLike<number> {
  return t.toFloat32();
}

/** NF4 quantize with bitsandbytes' rules (lib/ops/quant.ts); the parts are host tensors. */
export function nf4Quantize(w: Tensor, opts: { blockSize?: number; doubleQuant?: boolean } = {}): Nf4Tensor {
  const blockSize = opts.blockSize ?? 64;
  const [n, k] = w.shape as [number, number];
  const values = host(w);
  const total = n * k, blocks = Math.ceil(total / blockSize);
  const packed = new Uint8Array(Math.ceil(total / 2));
  const absmaxes = new Float32Array(blocks);
  for (let b = 0; b < blocks; b++) {
    const from = b * blockSize, to = Math.min(total, from + blockSize);
    absmaxes[b] = absmax(values, from, to);
    const inv = reciprocal(absmaxes[b]!);
    for (let e = from; e < to; e++) {
      const code = codeOf(Math.fround(values[e]! * inv), NF4_THRESHOLDS);
      packed[e >> 1]! |= e % 2 === 0 ? code << 4 : code;
    }
  }
  if (total % 2 === 1) packed[packed.length - 1]! |= NF4_ZERO_CODE;
  const base = { format: 'nf4' as const, shape: [n, k] as const, blockSize, packed: Tensor.from(packed, [packed.length]), dtype: w.dtype as QuantDType, device: 'cpu' as const };
  if (!opts.doubleQuant) return { ...base, absmax: Tensor.from(absmaxes, [blocks]) };

  let sum = 0;  // float64 sums per nested block of 256, then over them (the kernels' order)
  for (let from = 0; from < blocks; from += NESTED_BLOCK) {
    let nestedSum = 0;
    for (let b = from; b < Math.min(blocks, from + NESTED_BLOCK); b++) nestedSum += absmaxes[b]!;
    sum += nestedSum;
  }
  const offset = Math.fround(sum / blocks);
  const shifted = Float32Array.from(absmaxes, (m) => m - offset);
  const code = new Uint8Array(blocks);
  const nestedAbsmax = new Float32Array(Math.ceil(blocks / NESTED_BLOCK));
  for (let nb = 0; nb < nestedAbsmax.length; nb++) {
    const from = nb * NESTED_BLOCK, to = Math.min(blocks, from + NESTED_BLOCK);
    nestedAbsmax[nb] = absmax(shifted, from, to);
    const inv = reciprocal(nestedAbsmax[nb]!);
    for (let i = from; i < to; i++) code[i] = nestedCodeOf(Math.fround(shifted[i]! * inv));
  }
  return {
    ...base,
    absmax: {
      code: Tensor.from(code, [blocks]), nestedAbsmax: Tensor.from(nestedAbsmax, [nestedAbsmax.length]),
      nestedCode: Tensor.from(DYNAMIC_MAP.slice(), [DYNAMIC_MAP.length]), offset,
    },
  };
}

/** Ternary (BitNet b1.58 absmean) quantize (lib/ops/quant.ts): float64 sums per row, then over rows in order. */
export function ternaryQuantize(w: Tensor, opts: { eps?: number } = {}): TernaryTensor {
  const eps = Math.fround(opts.eps ?? 1e-5);
  const [n, k] = w.shape as [number, number];
  const values = host(w);
  let total = 0;
  for (let row = 0; row < n; row++) {
    let rowSum = 0;
    for (let col = 0; col < k; col++) rowSum += Math.abs(values[row * k + col]!);
    total += rowSum;
  }
  const mean = Math.fround(total / (n * k));
  const scale = mean < eps ? eps : mean;
  const inverse = Math.fround(1 / scale);  // BitNet multiplies by the reciprocal (csrc/formats/ternary.h)
  const rowBytes = Math.ceil(k / 4);
  const packed = new Uint8Array(n * rowBytes).fill(0x55);  // padding codes: 1 (0)
  for (let row = 0; row < n; row++) {
    for (let col = 0; col < k; col++) {
      const q = Math.fround(values[row * k + col]! * inverse);
      const code = q > 0.5 ? 2 : q < -0.5 ? 0 : 1;
      const at = row * rowBytes + (col >> 2), place = 2 * (col & 3);
      packed[at] = (packed[at]! & ~(3 << place)) | (code << place);
    }
  }
  return { format: 'ternary', shape: [n, k], packed: Tensor.from(packed, [n, rowBytes]), scale, dtype: w.dtype as QuantDType, device: 'cpu' };
}

/** The float32 absmax of every NF4 block (a double-quantized one: fp32(code value · nested absmax) + offset, rounded twice). */
export function nf4Absmax(q: Nf4Tensor): Float32Array {
  if (q.absmax instanceof Tensor) return q.absmax.toFloat32();
  const code = q.absmax.code.toArray() as Uint8Array;
  const nestedAbsmax = q.absmax.nestedAbsmax.toFloat32(), nestedCode = q.absmax.nestedCode.toFloat32();
  const offset = q.absmax.offset;
  return Float32Array.from(code, (c, b) => Math.fround(Math.fround(nestedCode[c]! * nestedAbsmax[Math.floor(b / NESTED_BLOCK)]!) + offset));
}

/** The weight's values [N, K]: the float32 numbers dequantize defines (see the top), as float64. */
export function dequantize(q: QuantizedTensor): RefTensor {
  const [n, k] = q.shape;
  const packed = q.packed.toArray() as Uint8Array;
  const out = new Float64Array(n * k);
  if (q.format === 'nf4') {
    const scales = nf4Absmax(q);
    for (let e = 0; e < n * k; e++) {
      const code = e % 2 === 0 ? packed[e >> 1]! >> 4 : packed[e >> 1]! & 15;
      out[e] = Math.fround(NF4_CODE[code]! * scales[Math.floor(e / q.blockSize)]!);
    }
  } else {
    const rowBytes = Math.ceil(k / 4);
    for (let row = 0; row < n; row++) {
      for (let col = 0; col < k; col++) {
        const code = (packed[row * rowBytes + (col >> 2)]! >> (2 * (col & 3))) & 3;
        out[row * k + col] = (code === 0 ? -1 : code === 2 ? 1 : 0) * q.scale;
      }
    }
  }
  return { data: out, shape: [n, k] };
}
