/**
 * Argument checks shared by every op. All user-facing validation lives in TypeScript and uses one
 * message format (`<op>: <argument> must be <expected>, got <actual>`); the addon re-checks only
 * what memory safety needs.
 */
import type { DType } from './dtype.js';
import { argumentError, describeValue } from './errors.js';
import type { NativeTensor } from './native.js';
import { type Device, Tensor } from './tensor.js';

export function shapeText(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** What Args.hostVector checks: a small per-adapter or per-row argument (ranks, scales, adapterIds). */
export interface HostVectorSpec {
  dtype: 'int32' | 'float32';
  length: number;
  /** The length as messages state it, e.g. `3 (B of q)`; default: the number. */
  lengthText?: string;
  /** The tensor the op runs with (its device), and its name in messages. */
  like: Tensor;
  likeName: string;
  /** The values allowed, as messages state them. A device Tensor's values are not read back (that would wait for the device on every call). */
  range?: { min: number; max: number; expected: string };
  optional?: boolean;
}

/**
 * A small per-adapter or per-row argument after Args.hostVector's checks: the caller's Tensor, or
 * a copy of the numbers it gave, made a tensor on the op's device only for the descriptor.
 */
export class HostVector {
  /** The caller's Tensor (for alias checks); undefined when numbers were given. */
  readonly tensor: Tensor | undefined;
  readonly #values: Int32Array | Float32Array | undefined;
  readonly #device: Device;

  constructor(given: Tensor | Int32Array | Float32Array, device: Device) {
    this.tensor = given instanceof Tensor ? given : undefined;
    this.#values = given instanceof Tensor ? undefined : given;
    this.#device = device;
  }

  /** Numbers were given, not a Tensor. */
  get isNumbers(): boolean {
    return this.tensor === undefined;
  }

  /**
   * The descriptor's tensor: the caller's, or the numbers as a tensor on the op's device (or left
   * on the host with `onHost`, for an op that reads them there), added to `temporaries` (which
   * defineOp disposes after the call; on CUDA a copy of 4 bytes a value).
   */
  native(op: string, name: string, temporaries: Tensor[], onHost = false): NativeTensor {
    if (this.tensor) return Tensor.native(this.tensor, op, name);
    const values = this.#values!;
    const host = Tensor.from(values, [values.length]);
    const t = this.#device === 'cpu' || onHost ? host : host.to(this.#device);
    temporaries.push(t);
    return Tensor.native(t, op, name);
  }
}

export class Args {
  readonly op: string;
  readonly #args: Record<string, unknown>;

  constructor(op: string, args: unknown) {
    this.op = op;
    if (args === null || typeof args !== 'object' || Array.isArray(args)) {
      throw argumentError('ERR_ARGUMENT', op, 'the argument', 'an object of named arguments', describeValue(args));
    }
    this.#args = args as Record<string, unknown>;
  }

  tensor(name: string, opts: { dtypes?: readonly DType[] } = {}): Tensor {
    const value = this.#args[name];
    if (!(value instanceof Tensor)) throw argumentError('ERR_ARGUMENT', this.op, name, 'a Tensor', describeValue(value));
    if (value.disposed) throw argumentError('ERR_DISPOSED', this.op, name, 'a live tensor', 'a disposed tensor');
    if (opts.dtypes && !opts.dtypes.includes(value.dtype)) {
      throw argumentError('ERR_DTYPE', this.op, name, `of dtype ${opts.dtypes.join(' or ')}`, value.dtype);
    }
    return value;
  }

  optionalTensor(name: string, opts: { dtypes?: readonly DType[] } = {}): Tensor | undefined {
    return this.#args[name] === undefined ? undefined : this.tensor(name, opts);
  }

  number(name: string, fallback: number): number {
    const value = this.#args[name] ?? fallback;
    if (typeof value !== 'number' || !Number.isFinite(value)) {
      throw argumentError('ERR_ARGUMENT', this.op, name, 'a finite number', describeValue(value));
    }
    return value;
  }

  boolean(name: string, fallback: boolean): boolean {
    const value = this.#args[name] ?? fallback;
    if (typeof value !== 'boolean') throw argumentError('ERR_ARGUMENT', this.op, name, 'a boolean', describeValue(value));
    return value;
  }

  /**
   * A small per-adapter or per-row argument given as a Tensor (of `spec.dtype`, on the op's
   * device, [length]), the matching typed array (Int32Array / Float32Array) or an array of numbers
   * (integers for int32), each host value in `spec.range`; messages name the value by its index.
   */
  hostVector(name: string, spec: HostVectorSpec & { optional: true }): HostVector | undefined;
  hostVector(name: string, spec: HostVectorSpec): HostVector;
  hostVector(name: string, spec: HostVectorSpec): HostVector | undefined {
    const value = this.#args[name];
    if (value === undefined && spec.optional) return undefined;
    const device = spec.like.device;
    if (value instanceof Tensor) {
      const t = this.tensor(name, { dtypes: [spec.dtype] });
      if (t.device !== device) throw argumentError('ERR_DEVICE', this.op, name, `on ${device} like ${spec.likeName}`, t.device);
      this.expectShape(name, t, [spec.length]);
      if (device === 'cpu') this.#expectValues(name, t.toArray() as Int32Array | Float32Array, spec);
      return new HostVector(t, device);
    }
    const [typed, expected] = spec.dtype === 'int32'
      ? [Int32Array, 'an int32 Tensor, an Int32Array or an array of integers']
      : [Float32Array, 'a float32 Tensor, a Float32Array or an array of numbers'];
    if (ArrayBuffer.isView(value) && !(value instanceof typed)) throw argumentError('ERR_DTYPE', this.op, name, expected, describeValue(value));
    if (!(value instanceof typed) && !Array.isArray(value)) throw argumentError('ERR_ARGUMENT', this.op, name, expected, describeValue(value));
    const values = value as ArrayLike<unknown>;
    if (values.length !== spec.length) {
      throw argumentError('ERR_SHAPE', this.op, `${name}.length`, spec.lengthText ?? String(spec.length), String(values.length));
    }
    this.#expectValues(name, values, spec);
    // A copy: the caller may change its array before an async op runs.
    return new HostVector(typed.from(values as ArrayLike<number>), device);
  }

  #expectValues(name: string, values: ArrayLike<unknown>, spec: HostVectorSpec): void {
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (typeof v !== 'number') throw argumentError('ERR_ARGUMENT', this.op, `${name}[${i}]`, 'a number', describeValue(v));
      const { range } = spec;
      if (range && !(v >= range.min && v <= range.max)) throw argumentError('ERR_ARGUMENT', this.op, `${name}[${i}]`, range.expected, String(v));
      if (spec.dtype === 'int32' && (v | 0) !== v) throw argumentError('ERR_ARGUMENT', this.op, `${name}[${i}]`, 'an integer (int32)', String(v));
    }
  }

  expectShape(name: string, t: Tensor, expected: readonly number[]): void {
    if (t.shape.length !== expected.length || t.shape.some((d, i) => d !== expected[i])) {
      throw argumentError('ERR_SHAPE', this.op, `${name}.shape`, shapeText(expected), shapeText(t.shape));
    }
  }

  expectLike(name: string, t: Tensor, reference: Tensor, referenceName: string): void {
    if (t.dtype !== reference.dtype) {
      throw argumentError('ERR_DTYPE', this.op, name, `${reference.dtype} like ${referenceName}`, t.dtype);
    }
    if (t.device !== reference.device) {
      throw argumentError('ERR_DEVICE', this.op, name, `on ${reference.device} like ${referenceName}`, t.device);
    }
  }

  /**
   * `bias` is in x's dtype, or float32 with float16/bfloat16 x (mixed precision keeps the bias in
   * float32; the kernels add it to the float32 sum before the single rounding). On x's device.
   */
  expectBias(bias: Tensor, x: Tensor): void {
    const sixteenBit = x.dtype === 'float16' || x.dtype === 'bfloat16';
    if (bias.dtype !== x.dtype && !(sixteenBit && bias.dtype === 'float32')) {
      const expected = sixteenBit ? `${x.dtype} like x (or float32)` : `${x.dtype} like x`;
      throw argumentError('ERR_DTYPE', this.op, 'bias', expected, bias.dtype);
    }
    if (bias.device !== x.device) throw argumentError('ERR_DEVICE', this.op, 'bias', `on ${x.device} like x`, bias.device);
  }

  /** `out` must not share memory with an input: the kernel would read what it already wrote. */
  expectNoAlias(outName: string, out: Tensor, inputs: Record<string, Tensor | undefined>): void {
    for (const [name, t] of Object.entries(inputs)) {
      if (t && Tensor.overlaps(out, t)) {
        throw argumentError('ERR_ARGUMENT', this.op, outName, `memory not shared with ${name}`, 'an overlapping tensor');
      }
    }
  }
}
