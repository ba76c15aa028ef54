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
import { callNative, callNativeAsync, type NativeLoraForwardMulti } from '../native.js';
import { Tensor } from '../tensor.js';
import { Args, shapeText } from '../validate.js';

export interface LoraForwardMultiArgs {
  /** Input [..., K] (T rows after flattening) in float32, float16 or bfloat16. */
  x: Tensor;
  /** Frozen base weight [N, K], same dtype and device as x. */
  weight: Tensor;
  /** Optional bias [N]. */
  bias?: Tensor;
  /** Stacked lora_A weights [L, rMax, K] (adapter l uses rows 0…ranks[l]-1). */
  a: Tensor;
  /** Stacked lora_B weights [L, N, rMax] (adapter l uses columns 0…ranks[l]-1). */
  b: Tensor;
  /** int32 [L], each in 1…rMax; default: every adapter has rank rMax. */
  ranks?: Tensor;
  /** float32 [L]: each adapter's multiplier (PEFT: lora_alpha / r). */
  scales: Tensor;
  /** int32 [T]: the adapter of each row of x, or -1 for the base layer alone. */
  adapterIds: Tensor;
  /** Where to write y [..., N]; allocated when absent. Must not overlap an input. */
  out?: Tensor;
}

function prepareForwardMulti(op: string, input: LoraForwardMultiArgs): { desc: NativeLoraForwardMulti; out: Tensor } {
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
    args.expectLike('bias', bias, x, 'x');
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

  const small = (name: string, dtype: 'int32' | 'float32', length: number, optional: boolean): Tensor | undefined => {
    const t = optional ? args.optionalTensor(name, { dtypes: [dtype] }) : args.tensor(name, { dtypes: [dtype] });
    if (!t) return undefined;
    if (t.device !== x.device) throw argumentError('ERR_DEVICE', op, name, `on ${x.device} like x`, t.device);
    args.expectShape(name, t, [length]);
    return t;
  };
  const ranks = small('ranks', 'int32', numAdapters, true);
  const scales = small('scales', 'float32', numAdapters, false)!;
  const adapterIds = small('adapterIds', 'int32', rows, false)!;
  // Host values are checked here with their index; device values are checked by the op itself.
  if (ranks && ranks.device === 'cpu') {
    ranks.toArray().forEach((r, i) => {
      if (r < 1 || r > rMax) throw argumentError('ERR_ARGUMENT', op, `ranks[${i}]`, `in [1, ${rMax}] (rMax)`, String(r));
    });
  }
  if (adapterIds.device === 'cpu') {
    adapterIds.toArray().forEach((id, t) => {
      if (id < -1 || id >= numAdapters) {
        throw argumentError('ERR_ARGUMENT', op, `adapterIds[${t}]`, `-1 (base only) or an adapter index in [0, ${numAdapters})`, String(id));
      }
    });
  }

  const outShape = [...x.shape.slice(0, -1), n];
  const given = args.optionalTensor('out');
  if (given) {
    args.expectLike('out', given, x, 'x');
    args.expectShape('out', given, outShape);
    args.expectNoAlias('out', given, { x, weight, bias, a, b, ranks, scales, adapterIds });
  }
  const out = given ?? Tensor.empty(outShape, { dtype: x.dtype, device: x.device });
  const desc: NativeLoraForwardMulti = {
    x: Tensor.native(x, op, 'x'),
    weight: Tensor.native(weight, op, 'weight'),
    a: Tensor.native(a, op, 'a'),
    b: Tensor.native(b, op, 'b'),
    scales: Tensor.native(scales, op, 'scales'),
    adapterIds: Tensor.native(adapterIds, op, 'adapterIds'),
    out: Tensor.native(out, op, 'out'),
  };
  if (bias) desc.bias = Tensor.native(bias, op, 'bias');
  if (ranks) desc.ranks = Tensor.native(ranks, op, 'ranks');
  return { desc, out };
}

/** Multi-adapter LoRA forward; returns y [..., N] (`out` when given). */
export function forwardMulti(args: LoraForwardMultiArgs): Tensor {
  const { desc, out } = prepareForwardMulti('lora.forwardMulti', args);
  callNative((m) => m.loraForwardMulti(desc));
  return out;
}

/** forwardMulti() off the JS thread (on the addon's job thread). */
export async function forwardMultiAsync(args: LoraForwardMultiArgs): Promise<Tensor> {
  const { desc, out } = prepareForwardMulti('lora.forwardMultiAsync', args);
  await callNativeAsync((m) => m.loraForwardMultiAsync(desc));
  return out;
}
