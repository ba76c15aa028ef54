/** Element types. float16 and bfloat16 are stored as their 16-bit patterns in a Uint16Array. */
export type DType = 'float32' | 'float16' | 'bfloat16' | 'int8' | 'uint8' | 'int32';

export type TypedArray = Float32Array | Uint16Array | Int8Array | Uint8Array | Int32Array;

export const DTYPES: readonly DType[] = ['float32', 'float16', 'bfloat16', 'int8', 'uint8', 'int32'];
export const FLOAT_DTYPES: readonly DType[] = ['float32', 'float16', 'bfloat16'];

/** Numeric codes of the native contract (csrc/core/dtype.h). */
export const DTYPE_CODE: Readonly<Record<DType, number>> = {
  float32: 0, float16: 1, bfloat16: 2, int8: 3, uint8: 4, int32: 5,
};

type ArrayConstructorFor = { new (length: number): TypedArray; new (buffer: ArrayBufferLike, byteOffset: number, length: number): TypedArray; BYTES_PER_ELEMENT: number };

export const STORAGE: Readonly<Record<DType, ArrayConstructorFor>> = {
  float32: Float32Array, float16: Uint16Array, bfloat16: Uint16Array,
  int8: Int8Array, uint8: Uint8Array, int32: Int32Array,
};

export function isDType(value: unknown): value is DType {
  return typeof value === 'string' && (DTYPES as readonly string[]).includes(value);
}

export function dtypeSize(dtype: DType): number {
  return STORAGE[dtype].BYTES_PER_ELEMENT;
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

/** Converts stored elements of `dtype` to float32 values. */
export function storageToFloat32(dtype: DType, data: TypedArray): Float32Array {
  if (dtype === 'float32') return Float32Array.from(data as Float32Array);
  const out = new Float32Array(data.length);
  if (dtype === 'float16') for (let i = 0; i < data.length; i++) out[i] = float16ToFloat(data[i]!);
  else if (dtype === 'bfloat16') for (let i = 0; i < data.length; i++) out[i] = bfloat16ToFloat(data[i]!);
  else for (let i = 0; i < data.length; i++) out[i] = data[i]!;
  return out;
}

/** Converts numbers to the storage of `dtype` (round to nearest even for half types; integer types follow TypedArray assignment). */
export function numbersToStorage(dtype: DType, values: ArrayLike<number>): TypedArray {
  const out = new STORAGE[dtype](values.length);
  if (dtype === 'float16') for (let i = 0; i < values.length; i++) out[i] = floatToFloat16(values[i]!);
  else if (dtype === 'bfloat16') for (let i = 0; i < values.length; i++) out[i] = floatToBFloat16(values[i]!);
  else for (let i = 0; i < values.length; i++) out[i] = values[i]!;
  return out;
}
