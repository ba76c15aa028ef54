/**
 * Tensors: a dtype, a row-major shape and storage on one device. Host tensors wrap a TypedArray
 * (zero-copy when it already has the dtype's storage type); device tensors own CUDA memory from
 * the device's caching allocator, returned by dispose() (a finalizer in the addon is only a safety
 * net). Uploads and device copies are queued on the device's stream like ops (the host data may
 * be reused at once); reading device data back waits for the work queued before it (lib/cuda.ts).
 */
import {
  DTYPE_CODE, DTYPES, type DType, dtypeSize, isDType, numbersToStorage, STORAGE, storageToFloat32, type TypedArray,
} from './dtype.js';
import { argumentError, describeValue, LoraKernelsError } from './errors.js';
import { callNative, type NativeDeviceBuffer, type NativeTensor } from './native.js';

export type Device = 'cpu' | 'cuda' | `cuda:${number}`;

const disposeSymbol: typeof Symbol.dispose = (Symbol as { dispose?: typeof Symbol.dispose }).dispose ??
  (Symbol.for('Symbol.dispose') as typeof Symbol.dispose);

/** Device string → index (-1 for the host). Throws ERR_DEVICE naming the argument. */
export function deviceIndex(device: unknown, op: string, argument = 'device'): number {
  if (device === 'cpu') return -1;
  if (device === 'cuda') return 0;
  if (typeof device === 'string') {
    const match = /^cuda:(\d+)$/.exec(device);
    if (match) return Number(match[1]);
  }
  throw argumentError('ERR_DEVICE', op, argument, `'cpu', 'cuda' or 'cuda:<index>'`, describeValue(device));
}

function deviceName(index: number): Device {
  return index < 0 ? 'cpu' : index === 0 ? 'cuda' : `cuda:${index}`;
}

export function checkShape(shape: unknown, op: string, argument = 'shape'): number[] {
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw argumentError('ERR_SHAPE', op, argument, 'an array of non-negative integers', describeValue(shape));
  }
  return [...shape] as number[];
}

function checkDType(dtype: unknown, op: string): DType {
  if (!isDType(dtype)) throw argumentError('ERR_DTYPE', op, 'dtype', `one of ${DTYPES.join(', ')}`, describeValue(dtype));
  return dtype;
}

/** The dtypes the native random fill writes; float64 widens its float32 samples. */
const RANDN_DTYPES: readonly DType[] = ['float32', 'float16', 'bfloat16', 'float64', 'int8', 'uint8', 'int32'];

export function numelOf(shape: readonly number[]): number {
  // A zero dimension makes any shape empty, even one whose other dimensions overflow a double.
  return shape.includes(0) ? 0 : shape.reduce((a, b) => a * b, 1);
}

// Uint16Array has no natural dtype (float16, bfloat16 or uint16 bits); Uint8Array defaults to
// uint8 and holds bool or fp8 bits only when the dtype says so.
function naturalDType(data: unknown): DType | undefined {
  if (data instanceof Float32Array) return 'float32';
  if (data instanceof Float64Array) return 'float64';
  if (data instanceof Int8Array) return 'int8';
  if (data instanceof Uint8Array) return 'uint8';
  if (data instanceof Int16Array) return 'int16';
  if (data instanceof Int32Array) return 'int32';
  if (data instanceof Uint32Array) return 'uint32';
  if (data instanceof BigInt64Array) return 'int64';
  if (data instanceof BigUint64Array) return 'uint64';
  return undefined;
}

/** A Uint8Array given as bool storage must hold only 0 and 1, like every bool tensor. */
function checkBoolBytes(data: Uint8Array, op: string): void {
  const bad = data.findIndex((v) => v > 1);
  if (bad >= 0) throw argumentError('ERR_ARGUMENT', op, `data[${bad}]`, '0 or 1 for dtype bool', String(data[bad]));
}

/** Host storage for `count` elements; an allocation failure is ERR_OUT_OF_MEMORY, not a RangeError. */
function allocHost(dtype: DType, count: number, op: string): TypedArray {
  try {
    return new STORAGE[dtype](count);
  } catch (error) {
    throw new LoraKernelsError('ERR_OUT_OF_MEMORY', `${op}: cannot allocate ${count} ${dtype} elements on the host (${(error as Error).message})`);
  }
}

type Storage = { kind: 'host'; data: TypedArray } | { kind: 'device'; buffer: NativeDeviceBuffer; index: number };

export class Tensor {
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly device: Device;
  #storage: Storage | undefined;

  private constructor(dtype: DType, shape: readonly number[], storage: Storage) {
    this.dtype = dtype;
    this.shape = Object.freeze([...shape]);
    this.device = storage.kind === 'host' ? 'cpu' : deviceName(storage.index);
    this.#storage = storage;
  }

  /**
   * A host tensor from numbers, BigInts or a TypedArray. Zero-copy when `data` is already the
   * storage type of `dtype` (Float32Array for float32, BigInt64Array for int64, Uint16Array
   * holding bits for float16/bfloat16/uint16, Uint8Array holding bits for bool/fp8, ...);
   * otherwise values are converted (see numbersToStorage in dtype.ts: round to nearest even for
   * the narrow floats, value !== 0 for bool, TypedArray stores for integers). The default dtype is
   * the TypedArray's own (uint8 for a Uint8Array; a Uint16Array needs one), else float32.
   */
  static from(data: ArrayLike<number> | ArrayLike<bigint> | TypedArray, shape: readonly number[], opts: { dtype?: DType } = {}): Tensor {
    const op = 'Tensor.from';
    const dims = checkShape(shape, op);
    if (data === null || typeof data !== 'object' || typeof (data as ArrayLike<unknown>).length !== 'number') {
      throw argumentError('ERR_ARGUMENT', op, 'data', 'an array of numbers or BigInts, or a TypedArray', describeValue(data));
    }
    if (data instanceof Uint16Array && opts.dtype === undefined) {
      throw argumentError('ERR_DTYPE', op, 'opts.dtype', `'float16', 'bfloat16' or 'uint16' for a Uint16Array`, 'undefined');
    }
    const dtype = checkDType(opts.dtype ?? naturalDType(data) ?? 'float32', op);
    const count = numelOf(dims);
    if (data.length !== count) {
      throw argumentError('ERR_SHAPE', op, 'data', `${count} elements for shape [${dims.join(', ')}]`, `${data.length}`);
    }
    if (data instanceof STORAGE[dtype]) {
      if (dtype === 'bool') checkBoolBytes(data as Uint8Array, op);
      return new Tensor(dtype, dims, { kind: 'host', data: data as TypedArray });
    }
    return new Tensor(dtype, dims, { kind: 'host', data: numbersToStorage(dtype, data as ArrayLike<number | bigint>) });
  }

  /** A tensor of zeros (all-zero bits: +0.0 for every float dtype). */
  static zeros(shape: readonly number[], opts: { dtype?: DType; device?: Device } = {}): Tensor {
    const op = 'Tensor.zeros';
    const dims = checkShape(shape, op);
    const dtype = checkDType(opts.dtype ?? 'float32', op);
    const index = deviceIndex(opts.device ?? 'cpu', op, 'opts.device');
    const host = allocHost(dtype, numelOf(dims), op);
    if (index < 0) return new Tensor(dtype, dims, { kind: 'host', data: host });
    return Tensor.upload(dtype, dims, host, index);
  }

  /** A tensor whose contents are unspecified (device memory is not cleared): for outputs. */
  static empty(shape: readonly number[], opts: { dtype?: DType; device?: Device } = {}): Tensor {
    const op = 'Tensor.empty';
    const dims = checkShape(shape, op);
    const dtype = checkDType(opts.dtype ?? 'float32', op);
    const index = deviceIndex(opts.device ?? 'cpu', op, 'opts.device');
    if (index < 0) return new Tensor(dtype, dims, { kind: 'host', data: allocHost(dtype, numelOf(dims), op) });
    const buffer = callNative((m) => m.deviceAlloc(index, numelOf(dims) * dtypeSize(dtype)), { cuda: true });
    return new Tensor(dtype, dims, { kind: 'device', buffer, index });
  }

  /**
   * Standard normal samples; element i is a pure function of (seed, i), so the same seed gives
   * the same values on every backend, thread count and device. Integer dtypes get scaled,
   * rounded samples (int8: round(32·z) clamped, uint8: 128 + round(32·z), int32: round(1000·z));
   * float64 holds the float32 samples exactly (float32 precision, not a float64 stream). Other
   * dtypes are ERR_DTYPE.
   */
  static randn(shape: readonly number[], opts: { dtype?: DType; device?: Device; seed?: number } = {}): Tensor {
    const op = 'Tensor.randn';
    const dims = checkShape(shape, op);
    const dtype = checkDType(opts.dtype ?? 'float32', op);
    if (!RANDN_DTYPES.includes(dtype)) {
      throw argumentError('ERR_DTYPE', op, 'opts.dtype', `one of ${RANDN_DTYPES.join(', ')} (randn)`, dtype);
    }
    const index = deviceIndex(opts.device ?? 'cpu', op, 'opts.device');
    const seed = opts.seed ?? 0;
    if (!Number.isSafeInteger(seed)) throw argumentError('ERR_ARGUMENT', op, 'opts.seed', 'a safe integer', describeValue(seed));
    const fillDType = dtype === 'float64' ? 'float32' : dtype;
    const samples = allocHost(fillDType, numelOf(dims), op);
    callNative((m) => m.fillRandn(samples, DTYPE_CODE[fillDType], seed));
    const host = dtype === 'float64' ? Float64Array.from(samples as Float32Array) : samples;
    if (index < 0) return new Tensor(dtype, dims, { kind: 'host', data: host });
    return Tensor.upload(dtype, dims, host, index);
  }

  private static upload(dtype: DType, shape: readonly number[], host: TypedArray, index: number): Tensor {
    const buffer = callNative((m) => m.deviceAlloc(index, host.byteLength), { cuda: true });
    callNative((m) => m.copyToDevice(buffer, host));
    return new Tensor(dtype, shape, { kind: 'device', buffer, index });
  }

  get numel(): number {
    return numelOf(this.shape);
  }

  get disposed(): boolean {
    return this.#storage === undefined;
  }

  /** A copy on `device` (also when it is already there). */
  to(device: Device): Tensor {
    const index = deviceIndex(device, 'Tensor.to');
    const storage = this.#live('Tensor.to');
    if (storage.kind === 'device' && index === storage.index) {
      const buffer = callNative((m) => m.deviceAlloc(index, this.numel * dtypeSize(this.dtype)), { cuda: true });
      callNative((m) => m.copyOnDevice(buffer, storage.buffer));
      return new Tensor(this.dtype, this.shape, { kind: 'device', buffer, index });
    }
    const host = this.toArray();
    if (index < 0) return new Tensor(this.dtype, this.shape, { kind: 'host', data: host });
    return Tensor.upload(this.dtype, this.shape, host, index);
  }

  /**
   * A host copy of the stored elements (float16/bfloat16 bits in a Uint16Array, fp8 bits in a
   * Uint8Array, ...). For a device tensor, waits for the work queued on its device so far; a
   * kernel fault in it is ERR_CUDA naming the op.
   */
  toArray(): TypedArray {
    const storage = this.#live('Tensor.toArray');
    if (storage.kind === 'host') return storage.data.slice();
    const host = allocHost(this.dtype, this.numel, 'Tensor.toArray');
    callNative((m) => m.copyToHost(storage.buffer, host));
    return host;
  }

  /**
   * A host copy converted to float32: exact for the 16- and 8-bit types; float64 is rounded,
   * 32- and 64-bit integers beyond 2^24 too (int64/uint64 go through Number).
   */
  toFloat32(): Float32Array {
    const storage = this.#live('Tensor.toFloat32');
    if (storage.kind === 'host') return storageToFloat32(this.dtype, storage.data);
    return storageToFloat32(this.dtype, this.toArray());
  }

  /** The same storage seen with another shape of the same element count. */
  reshape(shape: readonly number[]): Tensor {
    const dims = checkShape(shape, 'Tensor.reshape');
    if (numelOf(dims) !== this.numel) {
      throw argumentError('ERR_SHAPE', 'Tensor.reshape', 'shape', `${this.numel} elements`, `[${dims.join(', ')}]`);
    }
    return new Tensor(this.dtype, dims, this.#live('Tensor.reshape'));
  }

  /**
   * Frees device memory now, back to the caching allocator and without waiting for the GPU: an op
   * queued on it still runs first (host tensors drop their reference). Idempotent.
   */
  dispose(): void {
    const storage = this.#storage;
    this.#storage = undefined;
    if (storage?.kind === 'device') callNative((m) => m.deviceFree(storage.buffer));
  }

  [disposeSymbol](): void {
    this.dispose();
  }

  toString(): string {
    return `Tensor(${this.dtype}, [${this.shape.join(', ')}], ${this.device}${this.disposed ? ', disposed' : ''})`;
  }

  #live(op: string): Storage {
    if (!this.#storage) throw new LoraKernelsError('ERR_DISPOSED', `${op}: the tensor was disposed`);
    return this.#storage;
  }

  /** @internal The descriptor the addon reads. */
  static native(t: Tensor, op: string, argument: string): NativeTensor {
    if (!t.#storage) throw new LoraKernelsError('ERR_DISPOSED', `${op}: ${argument} was disposed`);
    const data = t.#storage.kind === 'host' ? t.#storage.data : t.#storage.buffer;
    return { dtype: DTYPE_CODE[t.dtype], shape: t.shape, data };
  }

  /** @internal Whether two tensors share any bytes of memory (for `out` aliasing checks). */
  static overlaps(a: Tensor, b: Tensor): boolean {
    const sa = a.#storage, sb = b.#storage;
    if (!sa || !sb) return false;
    if (sa.kind === 'device' && sb.kind === 'device') return sa.buffer === sb.buffer;
    if (sa.kind !== 'host' || sb.kind !== 'host') return false;
    if (sa.data.buffer !== sb.data.buffer) return false;
    const aEnd = sa.data.byteOffset + sa.data.byteLength, bEnd = sb.data.byteOffset + sb.data.byteLength;
    return sa.data.byteOffset < bEnd && sb.data.byteOffset < aEnd;
  }
}
