/**
 * Argument checks shared by every op. All user-facing validation lives in TypeScript and uses one
 * message format (`<op>: <argument> must be <expected>, got <actual>`); the addon re-checks only
 * what memory safety needs.
 */
import type { DType } from './dtype.js';
import { argumentError, describeValue } from './errors.js';
import { Tensor } from './tensor.js';

export function shapeText(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
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

  /** `out` must not share memory with an input: the kernel would read what it already wrote. */
  expectNoAlias(outName: string, out: Tensor, inputs: Record<string, Tensor | undefined>): void {
    for (const [name, t] of Object.entries(inputs)) {
      if (t && Tensor.overlaps(out, t)) {
        throw argumentError('ERR_ARGUMENT', this.op, outName, `memory not shared with ${name}`, 'an overlapping tensor');
      }
    }
  }
}
