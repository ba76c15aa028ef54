/**
 * LoRA linear layer. Layouts follow nn.Linear and PEFT: weight [N, K], a = lora_A.weight [r, K],
 * b = lora_B.weight [N, r].
 *
 *   y = x·weightᵀ + bias + scale·((x ⊙ dropoutMask)·aᵀ)·bᵀ
 *
 * One fused pass on every backend: the low-rank product is folded into the base GEMM rather than
 * computed as three separate passes over memory.
 */
import { FLOAT_DTYPES } from '../dtype.js';
import { argumentError } from '../errors.js';
import type { NativeLoraBackward, NativeLoraForward } from '../native.js';
import { Tensor } from '../tensor.js';
import { Args, shapeText } from '../validate.js';
import { defineOp, type Prepared } from './define.js';

export interface LoraForwardArgs {
  /** Input [..., K] in float32, float16 or bfloat16. */
  x: Tensor;
  /** Frozen base weight [N, K] (nn.Linear layout), same dtype and device as x. */
  weight: Tensor;
  /** Optional bias [N]: x's dtype, or float32 with float16/bfloat16 x (added before the single rounding). */
  bias?: Tensor;
  /** lora_A.weight [r, K]; omit a and b together for the base layer alone. */
  a?: Tensor;
  /** lora_B.weight [N, r]. */
  b?: Tensor;
  /** Multiplier of the low-rank path (PEFT: lora_alpha / r). Default 1. */
  scale?: number;
  /** Multiplies x on the LoRA branch only, shape of x (holds 0 or 1/(1-p) for dropout p). */
  dropoutMask?: Tensor;
  /** Where to write y [..., N]; allocated when absent. Must not overlap an input. */
  out?: Tensor;
  /** CUDA float32 only: allow TF32 tensor cores (10-bit mantissa products). Default false: exact float32 FMA. */
  allowTf32?: boolean;
}

/** x [..., K] (K ≥ 1, a float dtype) and weight [N, K] like it: what every LoRA linear op takes. */
function inputAndWeight(args: Args): { x: Tensor; weight: Tensor; k: number; n: number } {
  const op = args.op;
  const x = args.tensor('x', { dtypes: FLOAT_DTYPES });
  if (x.shape.length < 1) throw argumentError('ERR_SHAPE', op, 'x.shape', '[..., K] with at least one dimension', '[]');
  const k = x.shape[x.shape.length - 1]!;
  if (k < 1) throw argumentError('ERR_SHAPE', op, 'x.shape', '[..., K] with K ≥ 1', shapeText(x.shape));
  const weight = args.tensor('weight');
  args.expectLike('weight', weight, x, 'x');
  if (weight.shape.length !== 2 || weight.shape[1] !== k || weight.shape[0]! < 1) {
    throw argumentError('ERR_SHAPE', op, 'weight.shape', `[N, ${k}] (N ≥ 1, K = x.shape[-1])`, shapeText(weight.shape));
  }
  return { x, weight, k, n: weight.shape[0]! };
}

function expectLoraA(args: Args, a: Tensor, k: number): void {
  if (a.shape.length !== 2 || a.shape[1] !== k || a.shape[0]! < 1) {
    throw argumentError('ERR_SHAPE', args.op, 'a.shape', `[r, ${k}] (r ≥ 1)`, shapeText(a.shape));
  }
}

function prepareForward(op: string, input: LoraForwardArgs): Prepared<NativeLoraForward, Tensor> {
  const args = new Args(op, input);
  const { x, weight, k, n } = inputAndWeight(args);
  const bias = args.optionalTensor('bias');
  if (bias) {
    args.expectBias(bias, x);
    args.expectShape('bias', bias, [n]);
  }
  const a = args.optionalTensor('a');
  const b = args.optionalTensor('b');
  if ((a === undefined) !== (b === undefined)) {
    const [given, missing] = a ? ['a', 'b'] : ['b', 'a'];
    throw argumentError('ERR_ARGUMENT', op, missing, `given together with ${given}`, 'undefined');
  }
  if (a && b) {
    args.expectLike('a', a, x, 'x');
    args.expectLike('b', b, x, 'x');
    expectLoraA(args, a, k);
    args.expectShape('b', b, [n, a.shape[0]!]);
  }
  const dropoutMask = args.optionalTensor('dropoutMask');
  if (dropoutMask) {
    args.expectLike('dropoutMask', dropoutMask, x, 'x');
    args.expectShape('dropoutMask', dropoutMask, x.shape);
  }
  const scale = args.number('scale', 1);
  const allowTf32 = args.boolean('allowTf32', false);
  const outShape = [...x.shape.slice(0, -1), n];
  const given = args.optionalTensor('out');
  if (given) {
    args.expectLike('out', given, x, 'x');
    args.expectShape('out', given, outShape);
    args.expectNoAlias('out', given, { x, weight, bias, a, b, dropoutMask });
  }
  const out = given ?? Tensor.empty(outShape, { dtype: x.dtype, device: x.device });
  const desc: NativeLoraForward = {
    x: Tensor.native(x, op, 'x'),
    weight: Tensor.native(weight, op, 'weight'),
    out: Tensor.native(out, op, 'out'),
    scale,
    allowTf32,
  };
  if (bias) desc.bias = Tensor.native(bias, op, 'bias');
  if (a && b) {
    desc.a = Tensor.native(a, op, 'a');
    desc.b = Tensor.native(b, op, 'b');
  }
  if (dropoutMask) desc.dropoutMask = Tensor.native(dropoutMask, op, 'dropoutMask');
  return { desc, result: out };
}

const forwardOp = defineOp('lora.forward', 'loraForward', prepareForward);

/** Fused LoRA forward; returns y [..., N] (`out` when given). */
export function forward(args: LoraForwardArgs): Tensor {
  return forwardOp.sync(args);
}

/** forward() off the JS thread (on the addon's job thread, not libuv's pool). */
export function forwardAsync(args: LoraForwardArgs): Promise<Tensor> {
  return forwardOp.async(args);
}

export interface LoraBackwardArgs {
  /** dL/dy [..., N], the leading dimensions of x. */
  gradOutput: Tensor;
  /** The forward's input [..., K] (float32, float16 or bfloat16). */
  x: Tensor;
  /** Frozen base weight [N, K]: no gradient is computed for it. */
  weight: Tensor;
  /** lora_A.weight [r, K]. */
  a: Tensor;
  /** lora_B.weight [N, r]. */
  b: Tensor;
  /** The forward's scale. Default 1. */
  scale?: number;
  /** The forward's dropout mask (shape of x), or none. */
  dropoutMask?: Tensor;
  /** Compute gradInput = dL/dx. Default true; false for the first layer (saves the g·W GEMM). */
  needInputGrad?: boolean;
  /** Where to write the gradients (each optional; allocated when absent). Must not overlap an input. */
  out?: { gradInput?: Tensor; gradA?: Tensor; gradB?: Tensor };
}

export interface LoraGradients {
  /** dL/dx [..., K] = gradOutput·weight + dropoutMask ⊙ (scale·gradOutput·b)·a; absent when needInputGrad is false. */
  gradInput?: Tensor;
  /** dL/da [r, K] = (scale·gradOutput·b)ᵀ·(x ⊙ dropoutMask). */
  gradA: Tensor;
  /** dL/db [N, r] = scale·gradOutputᵀ·((x ⊙ dropoutMask)·aᵀ). */
  gradB: Tensor;
}

function prepareBackward(op: string, input: LoraBackwardArgs): Prepared<NativeLoraBackward, LoraGradients> {
  const args = new Args(op, input);
  const { x, weight, k, n } = inputAndWeight(args);
  const a = args.tensor('a');
  args.expectLike('a', a, x, 'x');
  expectLoraA(args, a, k);
  const r = a.shape[0]!;
  const b = args.tensor('b');
  args.expectLike('b', b, x, 'x');
  args.expectShape('b', b, [n, r]);
  const gradOutput = args.tensor('gradOutput');
  args.expectLike('gradOutput', gradOutput, x, 'x');
  args.expectShape('gradOutput', gradOutput, [...x.shape.slice(0, -1), n]);
  const dropoutMask = args.optionalTensor('dropoutMask');
  if (dropoutMask) {
    args.expectLike('dropoutMask', dropoutMask, x, 'x');
    args.expectShape('dropoutMask', dropoutMask, x.shape);
  }
  const scale = args.number('scale', 1);
  const needInputGrad = args.boolean('needInputGrad', true);
  const out = input.out ?? {};
  if (typeof out !== 'object' || out === null) throw argumentError('ERR_ARGUMENT', op, 'out', 'an object of gradient tensors', typeof out);
  const outArgs = new Args(op, out);
  const inputs = { gradOutput, x, weight, a, b, dropoutMask };
  const target = (name: 'gradInput' | 'gradA' | 'gradB', shape: readonly number[]): Tensor => {
    const given = outArgs.optionalTensor(name);
    if (!given) return Tensor.empty(shape, { dtype: x.dtype, device: x.device });
    outArgs.expectLike(`out.${name}`, given, x, 'x');
    outArgs.expectShape(`out.${name}`, given, shape);
    outArgs.expectNoAlias(`out.${name}`, given, inputs);
    return given;
  };
  const grads: LoraGradients = { gradA: target('gradA', [r, k]), gradB: target('gradB', [n, r]) };
  if (needInputGrad) grads.gradInput = target('gradInput', x.shape);
  const written = [grads.gradInput, grads.gradA, grads.gradB].filter((t): t is Tensor => t !== undefined);
  written.forEach((t, i) => written.slice(i + 1).forEach((u) => {
    if (Tensor.overlaps(t, u)) throw argumentError('ERR_ARGUMENT', op, 'out', 'three separate gradient tensors', 'overlapping tensors');
  }));
  const desc: NativeLoraBackward = {
    gradOutput: Tensor.native(gradOutput, op, 'gradOutput'),
    x: Tensor.native(x, op, 'x'),
    weight: Tensor.native(weight, op, 'weight'),
    a: Tensor.native(a, op, 'a'),
    b: Tensor.native(b, op, 'b'),
    scale,
    gradA: Tensor.native(grads.gradA, op, 'gradA'),
    gradB: Tensor.native(grads.gradB, op, 'gradB'),
  };
  if (dropoutMask) desc.dropoutMask = Tensor.native(dropoutMask, op, 'dropoutMask');
  if (grads.gradInput) desc.gradInput = Tensor.native(grads.gradInput, op, 'gradInput');
  return { desc, result: grads };
}

const backwardOp = defineOp('lora.backward', 'loraBackward', prepareBackward);

/**
 * Backward of forward() for a frozen weight: gradients of a loss L with respect to a, b and
 * (unless needInputGrad is false) x, given gradOutput = dL/dy. One fused pass over gradOutput
 * and x on the CPU; deterministic on every backend.
 */
export function backward(args: LoraBackwardArgs): LoraGradients {
  return backwardOp.sync(args);
}

/** backward() off the JS thread (on the addon's job thread, not libuv's pool). */
export function backwardAsync(args: LoraBackwardArgs): Promise<LoraGradients> {
  return backwardOp.async(args);
}
