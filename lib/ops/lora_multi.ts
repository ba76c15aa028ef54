/**
 * Multi-adapter LoRA linear layer (batched serving, S-LoRA / Punica style): each row of x picks
 * one of L adapters stacked in `a` / `b`, or none.
 *
 *   y_t = x_t·weightᵀ + bias + scales[id]·(x_t·a[id][:r]ᵀ)·b[id][:, :r]ᵀ,   id = adapterIds[t], r = ranks[id]
 *
 * The base GEMM over all rows is shared; the low-rank terms are computed per run of rows that use
 * the same adapter and added to the output tile before its one store (CPU).
 */
import { FLOAT_DTYPES } from '../dtype.js';
import { argumentError } from '../errors.js';
import type { NativeLoraForwardMulti } from '../native.js';
import { Tensor } from '../tensor.js';
import { Args, shapeText } from '../validate.js';
import { defineOp, type Prepared } from './define.js';

export interface LoraForwardMultiArgs {
  /** Input [..., K] (T rows after flattening) in float32, float16 or bfloat16. */
  x: Tensor;
  /** Frozen base weight [N, K], same dtype and device as x. */
  weight: Tensor;
  /** Optional bias [N]: x's dtype, or float32 with float16/bfloat16 x (added before the single rounding). */
  bias?: Tensor;
  /** Stacked lora_A weights [L, rMax, K] (adapter l uses rows 0…ranks[l]-1). */
  a: Tensor;
  /** Stacked lora_B weights [L, N, rMax] (adapter l uses columns 0…ranks[l]-1). */
  b: Tensor;
  /**
   * int32 [L], each in 1…rMax; default: every adapter has rank rMax. Like scales and adapterIds: a
   * Tensor on x's device, or host values (a typed array or numbers). On CUDA, when all three are
   * host values the op reads them on the host and uploads them itself, so it never waits for the
   * GPU; beside a device Tensor they are copied there for the call.
   */
  ranks?: Tensor | Int32Array | readonly number[];
  /** float32 [L]: each adapter's multiplier (PEFT: lora_alpha / r). */
  scales: Tensor | Float32Array | readonly number[];
  /**
   * int32 [T]: the adapter of each row of x, or -1 for the base layer alone. Host values are
   * checked here; a CUDA tensor's are not read back (the op refuses a bad one on the device).
   */
  adapterIds: Tensor | Int32Array | readonly number[];
  /** Where to write y [..., N]; allocated when absent. Must not overlap an input. */
  out?: Tensor;
}

function prepareForwardMulti(op: string, input: LoraForwardMultiArgs): Prepared<NativeLoraForwardMulti, Tensor> {
  const args = new Args(op, input);
  const x = args.tensor('x', { dtypes: FLOAT_DTYPES });
  if (x.shape.length < 1) throw argumentError('ERR_SHAPE', op, 'x.shape', '[..., K] with at least one dimension', '[]');
  const k = x.shape[x.shape.length - 1]!;
  if (k < 1) throw argumentError('ERR_SHAPE', op, 'x.shape', '[..., K] with K ≥ 1', shapeText(x.shape));
  const rows = x.numel / k;
  const weight = args.tensor('weight');
  args.expectLike('weight', weight, x, 'x');
  if (weight.shape.length !== 2 || weight.shape[1] !== k || weight.shape[0]! < 1) {
    throw argumentError('ERR_SHAPE', op, 'weight.shape', `[N, ${k}] (N ≥ 1, K = x.shape[-1])`, shapeText(weight.shape));
  }
  const n = weight.shape[0]!;
  const bias = args.optionalTensor('bias');
  if (bias) {
    args.expectBias(bias, x);
    args.expectShape('bias', bias, [n]);
  }
  const a = args.tensor('a');
  args.expectLike('a', a, x, 'x');
  if (a.shape.length !== 3 || a.shape[2] !== k || a.shape[0]! < 1 || a.shape[1]! < 1) {
    throw argumentError('ERR_SHAPE', op, 'a.shape', `[L, rMax, ${k}] (L ≥ 1, rMax ≥ 1)`, shapeText(a.shape));
  }
  const [numAdapters, rMax] = [a.shape[0]!, a.shape[1]!];
  const b = args.tensor('b');
  args.expectLike('b', b, x, 'x');
  args.expectShape('b', b, [numAdapters, n, rMax]);

  const perAdapter = { length: numAdapters, lengthText: `${numAdapters} (L of a)`, like: x, likeName: 'x' };
  const ranks = args.hostVector('ranks', {
    ...perAdapter, dtype: 'int32', optional: true, range: { min: 1, max: rMax, expected: `in [1, ${rMax}] (rMax)` },
  });
  const scales = args.hostVector('scales', { ...perAdapter, dtype: 'float32' });
  const adapterIds = args.hostVector('adapterIds', {
    dtype: 'int32', length: rows, lengthText: `${rows} (the rows of x)`, like: x, likeName: 'x',
    range: { min: -1, max: numAdapters - 1, expected: `-1 (base only) or an adapter index in [0, ${numAdapters})` },
  });

  const outShape = [...x.shape.slice(0, -1), n];
  const given = args.optionalTensor('out');
  if (given) {
    args.expectLike('out', given, x, 'x');
    args.expectShape('out', given, outShape);
    args.expectNoAlias('out', given, { x, weight, bias, a, b, ranks: ranks?.tensor, scales: scales.tensor, adapterIds: adapterIds.tensor });
  }
  const out = given ?? Tensor.empty(outShape, { dtype: x.dtype, device: x.device });
  const temporaries: Tensor[] = [];
  // All three given as numbers: on CUDA they stay on the host, where the op groups the rows by
  // adapter without reading the ids back from the device (a wait for every queued kernel), and it
  // uploads them with one asynchronous copy. A device Tensor among them: the others go up too.
  const onHost = [ranks, scales, adapterIds].every((v) => !v || v.isNumbers);
  const desc: NativeLoraForwardMulti = {
    x: Tensor.native(x, op, 'x'),
    weight: Tensor.native(weight, op, 'weight'),
    a: Tensor.native(a, op, 'a'),
    b: Tensor.native(b, op, 'b'),
    scales: scales.native(op, 'scales', temporaries, onHost),
    adapterIds: adapterIds.native(op, 'adapterIds', temporaries, onHost),
    out: Tensor.native(out, op, 'out'),
  };
  if (bias) desc.bias = Tensor.native(bias, op, 'bias');
  if (ranks) desc.ranks = ranks.native(op, 'ranks', temporaries, onHost);
  return { desc, result: out, temporaries };
}

const forwardMultiOp = defineOp('lora.forwardMulti', 'loraForwardMulti', prepareForwardMulti);

/** Multi-adapter LoRA forward; returns y [..., N] (`out` when given). */
export function forwardMulti(args: LoraForwardMultiArgs): Tensor {
  return forwardMultiOp.sync(args);
}

/** forwardMulti() off the JS thread (on the addon's job thread). */
export function forwardMultiAsync(args: LoraForwardMultiArgs): Promise<Tensor> {
  return forwardMultiOp.async(args);
}
