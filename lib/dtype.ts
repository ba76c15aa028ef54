/**
 * Element types. Ops compute in float32, float16 and bfloat16 (FLOAT_DTYPES); the other dtypes
 * exist for storage and data movement (the dtypes a safetensors file can hold, PyTorch names).
 * float16 and bfloat16 are stored as their 16-bit patterns in a Uint16Array, float8_e4m3fn and
 * float8_e5m2 as their 8-bit patterns in a Uint8Array, bool as 0/1 bytes in a Uint8Array.
 */
export type DType =
  | 'float32' | 'float16' | 'bfloat16' | 'int8' | 'uint8' | 'int32'
  | 'float64' | 'int16' | 'uint16' | 'uint32' | 'int64' | 'uint64' | 'bool' | 'float8_e4m3fn' | 'float8_e5m2';

export type TypedArray =
  | Float32Array | Float64Array | Uint16Array | Int16Array | Int8Array | Uint8Array | Int32Array | Uint32Array
  | BigInt64Array | BigUint64Array;

export const DTYPES: readonly DType[] = [
  'float32', 'float16', 'bfloat16', 'int8', 'uint8', 'int32',
  'float64', 'int16', 'uint16', 'uint32', 'int64', 'uint64', 'bool', 'float8_e4m3fn', 'float8_e5m2',
];
/** The dtypes ops compute in. */
export const FLOAT_DTYPES: readonly DType[] = ['float32', 'float16', 'bfloat16'];

/** Numeric codes of the native contract (csrc/core/dtype.h). */
export const DTYPE_CODE: Readonly<Record<DType, number>> = {
  float32: 0, float16: 1, bfloat16: 2, int8: 3, uint8: 4, int32: 5,
  float64: 6, int16: 7, uint16: 8, uint32: 9, int64: 10, uint64: 11, bool: 12, float8_e4m3fn: 13, float8_e5m2: 14,
};

type ArrayConstructorFor = { new (length: number): TypedArray; new (buffer: ArrayBufferLike, byteOffset: number, length: number): TypedArray; BYTES_PER_ELEMENT: number };

export const STORAGE: Readonly<Record<DType, ArrayConstructorFor>> = {
  float32: Float32Array, float16: Uint16Array, bfloat16: Uint16Array,
  int8: Int8Array, uint8: Uint8Array, int32: Int32Array,
  float64: Float64Array, int16: Int16Array, uint16: Uint16Array, uint32: Uint32Array,
  int64: BigInt64Array, uint64: BigUint64Array, bool: Uint8Array, float8_e4m3fn: Uint8Array, float8_e5m2: Uint8Array,
};

export function isDType(value: unknown): value is DType {
  return typeof value === 'string' && (DTYPES as readonly string[]).includes(value);
}

export function dtypeSize(dtype: DType): number {
  return STORAGE[dtype].BYTES_PER_ELEMENT;
}

/** Whether elements of `dtype` are floating-point numbers (of any width). */
export function isFloatingPoint(dtype: DType): boolean {
  return dtype === 'float32' || dtype === 'float16' || dtype === 'bfloat16' || dtype === 'float64' ||
    dtype === 'float8_e4m3fn' || dtype === 'float8_e5m2';
}

// ---- float16 / bfloat16 bit conversions (round to nearest even) -----------------------------

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function floatToBFloat16(value: number): number {
  f32[0] = value;
  const bits = u32[0]!;
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) | 0x40) & 0xffff;
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bfloat16ToFloat(bits: number): number {
  u32[0] = (bits & 0xffff) << 16;
  return f32[0]!;
}

export function floatToFloat16(value: number): number {
  f32[0] = value;
  const bits = u32[0]!;
  const sign = (bits >>> 16) & 0x8000;
  const abs = bits & 0x7fffffff;
  if (abs > 0x7f800000) return sign | 0x7e00;
  if (abs >= 0x477ff000) return sign | 0x7c00;
  if (abs < 0x38800000) {
    u32[0] = abs;
    const scaled = f32[0]! * 16777216; // subnormal: value · 2^24, rounded half to even
    let i = Math.floor(scaled);
    const frac = scaled - i;
    if (frac > 0.5 || (frac === 0.5 && (i & 1) === 1)) i += 1;
    return sign | i;
  }
  const rounded = abs + 0x0fff + ((abs >>> 13) & 1) - (112 << 23);
  return sign | (rounded >>> 13);
}

export function float16ToFloat(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const man = bits & 0x3ff;
  if (exp === 0x1f) return man ? NaN : sign * Infinity;
  if (exp === 0) return sign * man * 2 ** -24;
  return sign * (1 + man / 1024) * 2 ** (exp - 15);
}

// ---- 8-bit floats (OCP FP8) -----------------------------------------------------------------
//
// float8_e4m3fn: bias 7, 3 mantissa bits, no infinities, NaN = S.1111.111, largest finite 448.
// float8_e5m2:   bias 15, 2 mantissa bits, IEEE-like (S.11111.00 = ±inf, S.11111.xx NaN), largest
//                finite 57344.
// Conversions follow PyTorch's casts (c10 Float8_e4m3fn / Float8_e5m2, which take a float): the
// value is rounded to float32 first, then to nearest even on the fp8 grid. The OCP spec leaves
// overflow to the implementation; PyTorch does not saturate: e4m3fn turns every value that rounds
// past 448 (|x| > 464, and ±inf) into NaN, e5m2 turns values that round past 57344 into ±inf.
// NaN becomes the positive NaN pattern (0x7f); the sign of ±0 and of values that round to zero is
// kept.

interface Fp8Format {
  mantissaBits: number;
  exponentBias: number;
  /** Unbiased exponent of the smallest normal number. */
  minExponent: number;
  /** The largest finite pattern (no sign). */
  maxFinite: number;
  /** The pattern (no sign) of a value that rounds past maxFinite, and of ±inf. */
  overflow: number;
  isNaN(bits: number): boolean;
  isInfinite(bits: number): boolean;
}

const E4M3FN: Fp8Format = {
  mantissaBits: 3, exponentBias: 7, minExponent: -6, maxFinite: 0x7e, overflow: 0x7f,
  isNaN: (bits) => (bits & 0x7f) === 0x7f,
  isInfinite: () => false,
};

const E5M2: Fp8Format = {
  mantissaBits: 2, exponentBias: 15, minExponent: -14, maxFinite: 0x7b, overflow: 0x7c,
  isNaN: (bits) => (bits & 0x7f) > 0x7c,
  isInfinite: (bits) => (bits & 0x7f) === 0x7c,
};

function roundHalfToEven(x: number): number {
  const floor = Math.floor(x);
  const frac = x - floor;
  return frac > 0.5 || (frac === 0.5 && floor % 2 === 1) ? floor + 1 : floor;
}

/** The exponent e with 2^e ≤ a < 2^(e+1), for a finite a > 0 (Math.log2 can be off by one). */
function exponentOf(a: number): number {
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e -= 1;
  else if (2 ** (e + 1) <= a) e += 1;
  return e;
}

function floatToFp8(value: number, format: Fp8Format): number {
  const v = Math.fround(value);
  if (Number.isNaN(v)) return 0x7f;
  const sign = v < 0 || Object.is(v, -0) ? 0x80 : 0;
  const a = Math.abs(v);
  if (a === Infinity) return sign | format.overflow;
  const implicitOne = 1 << format.mantissaBits;
  let exponent = a === 0 ? format.minExponent : Math.max(exponentOf(a), format.minExponent);
  // a is a float32 and the step a power of two: the quotient is exact before the one rounding.
  let q = roundHalfToEven(a / 2 ** (exponent - format.mantissaBits));
  if (q === 2 * implicitOne) {
    exponent += 1;
    q = implicitOne;
  }
  const bits = q < implicitOne ? q : ((exponent + format.exponentBias) << format.mantissaBits) | (q - implicitOne);
  return sign | (bits > format.maxFinite ? format.overflow : bits);
}

function fp8ToFloat(bits: number, format: Fp8Format): number {
  if (format.isNaN(bits)) return NaN;
  const sign = bits & 0x80 ? -1 : 1;
  if (format.isInfinite(bits)) return sign * Infinity;
  const field = (bits & 0x7f) >>> format.mantissaBits;
  const mantissa = (bits & ((1 << format.mantissaBits) - 1)) / (1 << format.mantissaBits);
  if (field === 0) return sign * mantissa * 2 ** format.minExponent;
  return sign * (1 + mantissa) * 2 ** (field - format.exponentBias);
}

function fp8Table(format: Fp8Format): Float32Array {
  return Float32Array.from({ length: 256 }, (_, bits) => fp8ToFloat(bits, format));
}

const E4M3FN_VALUES = fp8Table(E4M3FN);
const E5M2_VALUES = fp8Table(E5M2);

export function floatToFloat8E4M3FN(value: number): number {
  return floatToFp8(value, E4M3FN);
}

export function float8E4M3FNToFloat(bits: number): number {
  return E4M3FN_VALUES[bits & 0xff]!;
}

export function floatToFloat8E5M2(value: number): number {
  return floatToFp8(value, E5M2);
}

export function float8E5M2ToFloat(bits: number): number {
  return E5M2_VALUES[bits & 0xff]!;
}

// ---- storage ⇄ numbers ----------------------------------------------------------------------

function decodeInto<T extends Float32Array | Float64Array>(dtype: DType, data: TypedArray, out: T): T {
  const n = data.length;
  switch (dtype) {
    case 'float16': for (let i = 0; i < n; i++) out[i] = float16ToFloat((data as Uint16Array)[i]!); break;
    case 'bfloat16': for (let i = 0; i < n; i++) out[i] = bfloat16ToFloat((data as Uint16Array)[i]!); break;
    case 'float8_e4m3fn': for (let i = 0; i < n; i++) out[i] = E4M3FN_VALUES[(data as Uint8Array)[i]!]!; break;
    case 'float8_e5m2': for (let i = 0; i < n; i++) out[i] = E5M2_VALUES[(data as Uint8Array)[i]!]!; break;
    case 'int64': case 'uint64': for (let i = 0; i < n; i++) out[i] = Number((data as BigInt64Array)[i]!); break;
    default: out.set(data as Exclude<TypedArray, BigInt64Array | BigUint64Array>);
  }
  return out;
}

/** Converts stored elements of `dtype` to float32 values (int64/uint64 through Number). */
export function storageToFloat32(dtype: DType, data: TypedArray): Float32Array {
  return decodeInto(dtype, data, new Float32Array(data.length));
}

/** Converts stored elements of `dtype` to float64 values: exact but for int64/uint64 beyond 2^53. */
export function storageToFloat64(dtype: DType, data: TypedArray): Float64Array {
  return decodeInto(dtype, data, new Float64Array(data.length));
}

/** `value` truncated toward zero as a BigInt; NaN and ±Infinity give 0, as TypedArray stores do. */
function numberToBigInt(value: number): bigint {
  return Number.isFinite(value) ? BigInt(Math.trunc(value)) : 0n;
}

/**
 * Converts numbers (or BigInts) to the storage of `dtype`: round to nearest even for the narrow
 * float types (through float32, see above), value !== 0 for bool, and TypedArray store semantics
 * for the integer types (truncation toward zero, wrap-around, NaN → 0).
 */
export function numbersToStorage(dtype: DType, values: ArrayLike<number | bigint>): TypedArray {
  const n = values.length;
  const out = new STORAGE[dtype](n);
  const num = (i: number): number => Number(values[i]!);
  switch (dtype) {
    case 'float16': for (let i = 0; i < n; i++) out[i] = floatToFloat16(num(i)); break;
    case 'bfloat16': for (let i = 0; i < n; i++) out[i] = floatToBFloat16(num(i)); break;
    case 'float8_e4m3fn': for (let i = 0; i < n; i++) out[i] = floatToFloat8E4M3FN(num(i)); break;
    case 'float8_e5m2': for (let i = 0; i < n; i++) out[i] = floatToFloat8E5M2(num(i)); break;
    case 'bool': for (let i = 0; i < n; i++) out[i] = num(i) !== 0 ? 1 : 0; break;
    case 'int64': case 'uint64':
      for (let i = 0; i < n; i++) {
        const v = values[i]!;
        out[i] = typeof v === 'bigint' ? v : numberToBigInt(v);
      }
      break;
    case 'float32': case 'float64': for (let i = 0; i < n; i++) out[i] = num(i); break;
    default:
      // A BigInt keeps its low 32 bits exactly; the store then wraps them to 8, 16 or 32 bits.
      for (let i = 0; i < n; i++) {
        const v = values[i]!;
        out[i] = typeof v === 'bigint' ? Number(BigInt.asUintN(32, v)) : v;
      }
  }
  return out;
}
