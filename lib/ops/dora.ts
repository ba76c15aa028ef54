/**
 * DoRA (weight-decomposed low-rank adaptation) with PEFT semantics. Layouts as in lora.forward:
 * weight [N, K], a = lora_A.weight [r, K], b = lora_B.weight [N, r], magnitude =
 * lora_magnitude_vector [N].
 *
 *   norm = ‖weight + scale·b·a‖₂ per output row ([N]; a constant in backward, as PEFT detaches it)
 *   y    = (magnitude / norm) ⊙ (x·weightᵀ + scale·(x·aᵀ)·bᵀ) + bias
 *
 * magnitude may be float32 or the dtype of x (PEFT stores it in the model dtype); it is read as
 * float32, and gradMagnitude comes back in magnitude's dtype. The norm is computed in float32 from
 * the stored weights without forming weight + scale·b·a, then the fused LoRA forward runs once
 * with magnitude / norm applied per output column before the bias. A zero row norm gives ±Infinity
 * or NaN in that column, as in PEFT (which adds no epsilon).
 */
import { FLOAT_DTYPES } from '../dtype.js';
import { argumentError } from '../errors.js';
import type { NativeDoraBackward, NativeDoraForward, NativeDoraOperands } from '../native.js';
import { Tensor } from '../tensor.js';
import { Args, shapeText } from '../validate.js';
import { defineOp, type Prepared } from './define.js';

export interface DoraForwardArgs {
  /** Input [..., K] in float32, float16 or bfloat16. */
  x: Tensor;
  /** Frozen base weight [N, K], same dtype and device as x. */
  weight: Tensor;
  /**
   * Optional bias [N] (added after the magnitude scaling): x's dtype, or float32 with float16/bfloat16 x
   * (added before the single rounding).
   */
  bias?: Tensor;
  /** lora_A.weight [r, K] (r ≥ 1). */
  a: Tensor;
  /** lora_B.weight [N, r]. */
  b: Tensor;
  /** Multiplier of the low-rank path (PEFT: lora_alpha / r). Default 1. */
  scale?: number;
  /** lora_magnitude_vector [N], float32 or the dtype of x. */
  magnitude: Tensor;
  /** Where to write y [..., N]; allocated when absent. Must not overlap an input. */
  out?: Tensor;
}

export interface DoraBackwardArgs {
  /** dL/dy [..., N], like the forward's output. */
  gradOutput: Tensor;
  x: Tensor;
  weight: Tensor;
  a: Tensor;
  b: Tensor;
  scale?: number;
  magnitude: Tensor;
  /** Compute gradInput (dL/dx). Default true. */
  needInputGrad?: boolean;
}

export interface DoraGradients {
  /** dL/dx, shape of x (absent when needInputGrad is false). */
  gradInput?: Tensor;
  /** dL/da [r, K]. */
  gradA: Tensor;
  /** dL/db [N, r]. */
  gradB: Tensor;
  /** dL/dmagnitude [N] in magnitude's dtype: Σ over rows of gradOutput ⊙ (x·Wᵀ + scale·(x·aᵀ)·bᵀ) / norm. */
  gradMagnitude: Tensor;
}

interface Operands {
  x: Tensor;
  weight: Tensor;
  a: Tensor;
  b: Tensor;
  magnitude: Tensor;
  scale: number;
  n: number;
}

function operands(args: Args): Operands {
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
  const n = weight.shape[0]!;
  const a = args.tensor('a');
  args.expectLike('a', a, x, 'x');
  if (a.shape.length !== 2 || a.shape[1] !== k || a.shape[0]! < 1) {
    throw argumentError('ERR_SHAPE', op, 'a.shape', `[r, ${k}] (r ≥ 1)`, shapeText(a.shape));
  }
  const b = args.tensor('b');
  args.expectLike('b', b, x, 'x');
  args.expectShape('b', b, [n, a.shape[0]!]);
  const magnitude = args.tensor('magnitude');
  if (magnitude.dtype !== 'float32' && magnitude.dtype !== x.dtype) {
    const expected = x.dtype === 'float32' ? 'float32' : `float32 or ${x.dtype} like x`;
    throw argumentError('ERR_DTYPE', op, 'magnitude', expected, magnitude.dtype);
  }
  if (magnitude.device !== x.device) throw argumentError('ERR_DEVICE', op, 'magnitude', `on ${x.device} like x`, magnitude.device);
  args.expectShape('magnitude', magnitude, [n]);
  return { x, weight, a, b, magnitude, scale: args.number('scale', 1), n };
}

function nativeOperands(op: string, o: Operands): NativeDoraOperands {
  return {
    x: Tensor.native(o.x, op, 'x'),
    weight: Tensor.native(o.weight, op, 'weight'),
    a: Tensor.native(o.a, op, 'a'),
    b: Tensor.native(o.b, op, 'b'),
    magnitude: Tensor.native(o.magnitude, op, 'magnitude'),
    scale: o.scale,
  };
}

function prepareForward(op: string, input: DoraForwardArgs): Prepared<NativeDoraForward, Tensor> {
  const args = new Args(op, input);
  const o = operands(args);
  const bias = args.optionalTensor('bias');
  if (bias) {
    args.expectBias(bias, o.x);
    args.expectShape('bias', bias, [o.n]);
  }
  const outShape = [...o.x.shape.slice(0, -1), o.n];
  const given = args.optionalTensor('out');
  if (given) {
    args.expectLike('out', given, o.x, 'x');
    args.expectShape('out', given, outShape);
    args.expectNoAlias('out', given, { x: o.x, weight: o.weight, bias, a: o.a, b: o.b, magnitude: o.magnitude });
  }
  const out = given ?? Tensor.empty(outShape, { dtype: o.x.dtype, device: o.x.device });
  const desc: NativeDoraForward = { ...nativeOperands(op, o), out: Tensor.native(out, op, 'out') };
  if (bias) desc.bias = Tensor.native(bias, op, 'bias');
  return { desc, result: out };
}

function prepareBackward(op: string, input: DoraBackwardArgs): Prepared<NativeDoraBackward, DoraGradients> {
  const args = new Args(op, input);
  const o = operands(args);
  const gradOutput = args.tensor('gradOutput');
  args.expectLike('gradOutput', gradOutput, o.x, 'x');
  args.expectShape('gradOutput', gradOutput, [...o.x.shape.slice(0, -1), o.n]);
  const needInputGrad = args.boolean('needInputGrad', true);
  const like = { dtype: o.x.dtype, device: o.x.device };
  const grads: DoraGradients = {
    gradA: Tensor.empty(o.a.shape, like),
    gradB: Tensor.empty(o.b.shape, like),
    gradMagnitude: Tensor.empty([o.n], { dtype: o.magnitude.dtype, device: o.x.device }),
  };
  if (needInputGrad) grads.gradInput = Tensor.empty(o.x.shape, like);
  const desc: NativeDoraBackward = {
    ...nativeOperands(op, o),
    gradOutput: Tensor.native(gradOutput, op, 'gradOutput'),
    gradA: Tensor.native(grads.gradA, op, 'gradA'),
    gradB: Tensor.native(grads.gradB, op, 'gradB'),
    gradMagnitude: Tensor.native(grads.gradMagnitude, op, 'gradMagnitude'),
  };
  if (grads.gradInput) desc.gradInput = Tensor.native(grads.gradInput, op, 'gradInput');
  return { desc, result: grads };
}

const forwardOp = defineOp('lora.doraForward', 'doraForward', prepareForward);
const backwardOp = defineOp('lora.doraBackward', 'doraBackward', prepareBackward);

/** DoRA forward; returns y [..., N] (`out` when given). */
export function doraForward(args: DoraForwardArgs): Tensor {
  return forwardOp.sync(args);
}

/** doraForward() off the JS thread (on the addon's job thread). */
export function doraForwardAsync(args: DoraForwardArgs): Promise<Tensor> {
  return forwardOp.async(args);
}

/** DoRA backward with the row norm held constant; weight is frozen (no gradWeight). */
export function doraBackward(args: DoraBackwardArgs): DoraGradients {
  return backwardOp.sync(args);
}

/** doraBackward() off the JS thread (on the addon's job thread). */
export function doraBackwardAsync(args: DoraBackwardArgs): Promise<DoraGradients> {
  return backwardOp.async(args);
}
