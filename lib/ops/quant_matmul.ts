/**
 * A linear layer on a quantized base weight (NF4 or ternary, lib/ops/quant.ts) with a low-rank
 * correction (QLoRA, HGF, LQ-LoRA), in one pass over the packed weight, which is never dequantized
 * to memory:
 *
 *   y = x·deq(weight)ᵀ + bias + gate·scale·(x·aᵀ)·bᵀ        gate: a number or float32 [N] per output
 *
 * and its backward for the frozen quantized weight (training the correction): gradInput, gradA,
 * gradB and, when a gate is given, gradGate. Layouts as lora.forward: x [..., K], a [r, K], b [N, r].
 */
import { FLOAT_DTYPES } from '../dtype.js';
import { argumentError, describeValue } from '../errors.js';
import type { NativeQuantMatmul, NativeQuantMatmulBackward } from '../native.js';
import { Tensor } from '../tensor.js';
import { Args, shapeText } from '../validate.js';
import { defineOp, type Prepared } from './define.js';
import { expectQuantized, nativeQuantized, type QuantDType, type QuantizedTensor, quantizedParts } from './quant.js';
import { int8Dequantize, int8Quantize } from './quant_activations.js';

export interface QuantMatmulArgs {
  /** Input [..., K] in float32, float16 or bfloat16. */
  x: Tensor;
  /** The frozen quantized weight [N, K] (quant.nf4.quantize, quant.ternary.quantize, bnb.loadNf4), on the device of x. */
  weight: QuantizedTensor;
  /** Optional bias [N]: x's dtype, or float32 with float16/bfloat16 x (added before the single rounding). */
  bias?: Tensor;
  /** The correction's lora_A [r, K]; omit a and b together for the quantized layer alone. */
  a?: Tensor;
  /** lora_B [N, r]. */
  b?: Tensor;
  /** Multiplier of the low-rank path (PEFT: lora_alpha / r). Default 1. */
  scale?: number;
  /** Multiplier of the low-rank path: a number, or float32 [N] per output column. Default 1. */
  gate?: number | Tensor;
  /**
   * 'int8': quantize the layer's input per token first (BitNet b1.58's activation quantizer,
   * quant.int8): the whole layer, base and low-rank term, sees x̂ = dequantize(quantize(x)) in x's
   * dtype. Any weight format. matmulBackward takes no such option: its gradients are those of the
   * unquantized layer at x (the straight-through estimator BitNet trains with), so pass it the
   * forward's x. Default 'float' (x as it is).
   */
  activations?: 'float' | 'int8';
  /** Where to write y [..., N]; allocated when absent. Must not overlap an input. */
  out?: Tensor;
}

/** x [..., K] (a float dtype) and the quantized weight [N, K] on its device. */
function inputAndWeight(args: Args, input: { weight?: unknown }): { x: Tensor; weight: QuantizedTensor; k: number; n: number } {
  const op = args.op;
  const x = args.tensor('x', { dtypes: FLOAT_DTYPES });
  if (x.shape.length < 1) throw argumentError('ERR_SHAPE', op, 'x.shape', '[..., K] with at least one dimension', '[]');
  const k = x.shape[x.shape.length - 1]!;
  const weight = expectQuantized(op, 'weight', input.weight);
  const [n, wk] = weight.shape;
  if (wk !== k) throw argumentError('ERR_SHAPE', op, 'weight.shape', `[N, ${k}] (K = x.shape[-1])`, shapeText(weight.shape));
  if (weight.device !== x.device) throw argumentError('ERR_DEVICE', op, 'weight', `on ${x.device} like x`, weight.device);
  return { x, weight, k, n };
}

/** gate: a finite number, or float32 [N] on the device of x. */
function gateOf(args: Args, input: { gate?: unknown }, x: Tensor, n: number): { gate: number; perOutput?: Tensor } {
  if (input.gate instanceof Tensor) {
    const perOutput = args.tensor('gate', { dtypes: ['float32'] });
    if (perOutput.device !== x.device) throw argumentError('ERR_DEVICE', args.op, 'gate', `on ${x.device} like x`, perOutput.device);
    args.expectShape('gate', perOutput, [n]);
    return { gate: 1, perOutput };
  }
  if (input.gate !== undefined && (typeof input.gate !== 'number' || !Number.isFinite(input.gate))) {
    throw argumentError('ERR_ARGUMENT', args.op, 'gate', 'a finite number or a float32 Tensor [N]', describeValue(input.gate));
  }
  return { gate: args.number('gate', 1) };
}

function expectLoraA(args: Args, a: Tensor, k: number): void {
  if (a.shape.length !== 2 || a.shape[1] !== k || a.shape[0]! < 1) {
    throw argumentError('ERR_SHAPE', args.op, 'a.shape', `[r, ${k}] (r ≥ 1)`, shapeText(a.shape));
  }
}

function prepareMatmul(op: string, input: QuantMatmulArgs): Prepared<NativeQuantMatmul, Tensor> {
  const args = new Args(op, input);
  const { x, weight, k, n } = inputAndWeight(args, input);
  const activations = input.activations ?? 'float';
  if (activations !== 'float' && activations !== 'int8') {
    throw argumentError('ERR_ARGUMENT', op, 'activations', "'float' or 'int8'", describeValue(activations));
  }
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
  const scale = args.number('scale', 1);
  const { gate, perOutput } = gateOf(args, input, x, n);
  const outShape = [...x.shape.slice(0, -1), n];
  const given = args.optionalTensor('out');
  if (given) {
    args.expectLike('out', given, x, 'x');
    args.expectShape('out', given, outShape);
    args.expectNoAlias('out', given, { x, bias, a, b, gate: perOutput, ...quantizedParts(weight) });
  }
  const out = given ?? Tensor.empty(outShape, { dtype: x.dtype, device: x.device });
  const desc: NativeQuantMatmul = {
    x: Tensor.native(x, op, 'x'), weight: nativeQuantized(weight, op), scale, gate, out: Tensor.native(out, op, 'out'),
  };
  if (bias) desc.bias = Tensor.native(bias, op, 'bias');
  if (a && b) {
    desc.a = Tensor.native(a, op, 'a');
    desc.b = Tensor.native(b, op, 'b');
  }
  if (perOutput) desc.gatePerOutput = Tensor.native(perOutput, op, 'gate');
  if (activations === 'float') return { desc, result: out };
  const xHat = int8Activations(x);
  desc.x = Tensor.native(xHat, op, 'x');
  return { desc, result: out, temporaries: [xHat] };
}

/**
 * activations: 'int8' as two ops before the matmul, x̂ a temporary freed once the matmul is
 * enqueued (CUDA frees in stream order). Napkin math: x is M·K elements, read twice and written as
 * M·K bytes and M scales, then x̂ written and read once more: at decode 4096 floats (16 KiB)
 * against the ~9 MiB of NF4 4096 × 4096 codes and absmax the GEMV streams: free. Both run (CPU) or
 * are enqueued (CUDA) at the call, also for matmulAsync, so x is read in call order like any op's
 * input; on the CPU that is M·K elements on the JS thread (microseconds at decode).
 */
function int8Activations(x: Tensor): Tensor {
  const q = int8Quantize(x);
  try {
    return int8Dequantize(q, { dtype: x.dtype as QuantDType });
  } finally {
    q.values.dispose();
    q.scales.dispose();
  }
}

const matmulOp = defineOp('quant.matmul', 'quantMatmul', prepareMatmul);

/** y [..., N] = x·deq(weight)ᵀ + bias + gate·scale·(x·aᵀ)·bᵀ (`out` when given). */
export function matmul(args: QuantMatmulArgs): Tensor {
  return matmulOp.sync(args);
}

/** matmul() off the JS thread (on the addon's job thread, not libuv's pool). */
export function matmulAsync(args: QuantMatmulArgs): Promise<Tensor> {
  return matmulOp.async(args);
}

export interface QuantMatmulBackwardArgs {
  /** dL/dy [..., N], the leading dimensions of x. */
  gradOutput: Tensor;
  /** The forward's input [..., K]. */
  x: Tensor;
  /** The frozen quantized weight [N, K]: no gradient is computed for it. */
  weight: QuantizedTensor;
  /** lora_A [r, K]. */
  a: Tensor;
  /** lora_B [N, r]. */
  b: Tensor;
  /** The forward's scale. Default 1. */
  scale?: number;
  /** The forward's gate (number or float32 [N]); when given, gradGate is computed too. */
  gate?: number | Tensor;
  /** Compute gradInput = dL/dx. Default true; false for the first layer (saves the g·deq(W) GEMM). */
  needInputGrad?: boolean;
  /** Where to write the gradients (each optional; allocated when absent). Must not overlap an input. */
  out?: { gradInput?: Tensor; gradA?: Tensor; gradB?: Tensor; gradGate?: Tensor };
}

export interface QuantMatmulGradients {
  /** dL/dx [..., K] = g·deq(W) + (gate ⊙ g)·b·scale·a; absent when needInputGrad is false. */
  gradInput?: Tensor;
  /** dL/da [r, K] = scale·((gate ⊙ g)·b)ᵀ·x. */
  gradA: Tensor;
  /** dL/db [N, r] = scale·(gate ⊙ g)ᵀ·(x·aᵀ). */
  gradB: Tensor;
  /** dL/dgate, float32: [N] for a per-output gate, [1] for a number; present when a gate was given. */
  gradGate?: Tensor;
}

function prepareBackward(op: string, input: QuantMatmulBackwardArgs): Prepared<NativeQuantMatmulBackward, QuantMatmulGradients> {
  const args = new Args(op, input);
  const { x, weight, k, n } = inputAndWeight(args, input);
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
  const scale = args.number('scale', 1);
  const { gate, perOutput } = gateOf(args, input, x, n);
  const needInputGrad = args.boolean('needInputGrad', true);
  const out = input.out ?? {};
  if (typeof out !== 'object' || out === null) throw argumentError('ERR_ARGUMENT', op, 'out', 'an object of gradient tensors', typeof out);
  const outArgs = new Args(op, out);
  const inputs = { gradOutput, x, a, b, gate: perOutput, ...quantizedParts(weight) };
  const target = (name: keyof NonNullable<QuantMatmulBackwardArgs['out']>, shape: readonly number[], dtype = x.dtype): Tensor => {
    const given = outArgs.optionalTensor(name);
    if (!given) return Tensor.empty(shape, { dtype, device: x.device });
    if (given.dtype !== dtype) throw argumentError('ERR_DTYPE', op, `out.${name}`, dtype, given.dtype);
    if (given.device !== x.device) throw argumentError('ERR_DEVICE', op, `out.${name}`, `on ${x.device} like x`, given.device);
    outArgs.expectShape(`out.${name}`, given, shape);
    outArgs.expectNoAlias(`out.${name}`, given, inputs);
    return given;
  };
  const grads: QuantMatmulGradients = { gradA: target('gradA', [r, k]), gradB: target('gradB', [n, r]) };
  if (needInputGrad) grads.gradInput = target('gradInput', x.shape);
  if (input.gate !== undefined) grads.gradGate = target('gradGate', [perOutput ? n : 1], 'float32');
  const written = [grads.gradInput, grads.gradA, grads.gradB, grads.gradGate].filter((t): t is Tensor => t !== undefined);
  written.forEach((t, i) => written.slice(i + 1).forEach((u) => {
    if (Tensor.overlaps(t, u)) throw argumentError('ERR_ARGUMENT', op, 'out', 'separate gradient tensors', 'overlapping tensors');
  }));
  const desc: NativeQuantMatmulBackward = {
    gradOutput: Tensor.native(gradOutput, op, 'gradOutput'), x: Tensor.native(x, op, 'x'), weight: nativeQuantized(weight, op),
    a: Tensor.native(a, op, 'a'), b: Tensor.native(b, op, 'b'), scale, gate,
    gradA: Tensor.native(grads.gradA, op, 'gradA'), gradB: Tensor.native(grads.gradB, op, 'gradB'),
  };
  if (perOutput) desc.gatePerOutput = Tensor.native(perOutput, op, 'gate');
  if (grads.gradInput) desc.gradInput = Tensor.native(grads.gradInput, op, 'gradInput');
  if (grads.gradGate) desc.gradGate = Tensor.native(grads.gradGate, op, 'gradGate');
  return { desc, result: grads };
}

const backwardOp = defineOp('quant.matmulBackward', 'quantMatmulBackward', prepareBackward);

/**
 * Backward of matmul() for the frozen quantized weight: the gradients of a loss L with respect to
 * a, b, (unless needInputGrad is false) x and (when a gate is given) the gate, from
 * gradOutput = dL/dy. gradInput dequantizes the weight panel by panel on the way into the GEMM,
 * never whole; deterministic on every backend.
 */
export function matmulBackward(args: QuantMatmulBackwardArgs): QuantMatmulGradients {
  return backwardOp.sync(args);
}

/** matmulBackward() off the JS thread. */
export function matmulBackwardAsync(args: QuantMatmulBackwardArgs): Promise<QuantMatmulGradients> {
  return backwardOp.async(args);
}
