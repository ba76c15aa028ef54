/**
 * Flash-LoRA-Attention: flash attention over a shared base KV cache plus low-rank adapter caches
 * that are never expanded to full width (LRAgent's split of a multi-agent KV cache). Per sequence
 * b, query head h and its KV head g = h / (Hq / Hk), with ℓ = adapterIds[b]:
 *
 *   k = kBase[b, :, g] + kLowRank[b]·kLoraB[ℓ, g]      v = vBase[b, :, g] + vLowRank[b]·vLoraB[ℓ, g]
 *   out = softmax(softmaxScale·q·kᵀ)·v                  lse = log Σ exp(softmaxScale·q·kᵀ)  (float32)
 *
 * computed as O = P·vBase + (P·vLowRank)·vLoraB: the r-wide products cost r/D of the base ones and
 * the adapter caches stay [B, Sk, r]. vLowRank is scale·X·A_v of the layer's input X (shared by
 * all heads); vLoraB is lora_B split per KV head. The key path is for keys that are not rotated
 * (RoPE does not commute with the low-rank split). Causal masks align bottom-right (query i of Sq
 * sees keys j ≤ i + Sk − Sq, as in a KV cache); a query that sees no key gets out = 0 and
 * lse = −∞. adapterIds −1 runs a sequence on the base caches alone.
 */
import { FLOAT_DTYPES } from '../dtype.js';
import { argumentError, describeValue } from '../errors.js';
import type { NativeFlashLora, NativeFlashLoraBackward } from '../native.js';
import { Tensor } from '../tensor.js';
import { Args, type HostVector, shapeText } from '../validate.js';
import { defineOp, type Prepared } from './define.js';

/** The head dims the kernels are compiled for. */
export const FLASH_LORA_HEAD_DIMS: readonly number[] = [32, 64, 80, 96, 128, 256];
/** The largest rank of a low-rank cache. */
export const FLASH_LORA_MAX_RANK = 128;

export interface FlashLoraArgs {
  /** Queries [B, Sq, Hq, D], float32, float16 or bfloat16; D in FLASH_LORA_HEAD_DIMS. */
  q: Tensor;
  /** Shared base keys [B, Sk, Hk, D] (Hq % Hk = 0: grouped-query attention). */
  kBase: Tensor;
  /** Shared base values [B, Sk, Hk, D]. */
  vBase: Tensor;
  /** Low-rank value cache [B, Sk, r] (1 ≤ r ≤ 128), with vLoraB. */
  vLowRank?: Tensor;
  /** Per-adapter, per-KV-head up-projection [L, Hk, r, D]. */
  vLoraB?: Tensor;
  /** Low-rank key cache [B, Sk, rk], with kLoraB [L, Hk, rk, D] (keys that are not rotated). */
  kLowRank?: Tensor;
  kLoraB?: Tensor;
  /**
   * The adapter of each sequence, int32 [B] (a Tensor on q's device, an Int32Array or numbers); −1: none.
   * Default 0. Ids outside −1…L−1 are ERR_ARGUMENT, except in a CUDA tensor, which is not read back
   * on the host: there such a sequence runs on the base caches alone.
   */
  adapterIds?: Tensor | Int32Array | readonly number[];
  /** Causal mask aligned bottom-right. Default false. */
  causal?: boolean;
  /** Default 1/√D. */
  softmaxScale?: number;
  /** Where to write out [B, Sq, Hq, D] (q's dtype) and lse [B, Hq, Sq] (float32). */
  out?: Tensor;
  lse?: Tensor;
}

export interface FlashLoraResult {
  out: Tensor;
  lse: Tensor;
}

export interface FlashLoraBackwardArgs extends Omit<FlashLoraArgs, 'out' | 'lse'> {
  /** The forward's results. */
  out: Tensor;
  lse: Tensor;
  /** dL/dout [B, Sq, Hq, D]. */
  gradOut: Tensor;
  /** Where to write any of the gradients (each like its input, not overlapping an input); the rest are allocated. */
  gradients?: Partial<FlashLoraGradients>;
}

export interface FlashLoraGradients {
  gradQ: Tensor;
  gradKBase: Tensor;
  gradVBase: Tensor;
  /** Present with the value path: [B, Sk, r] and [L, Hk, r, D]. */
  gradVLowRank?: Tensor;
  gradVLoraB?: Tensor;
  /** Present with the key path. */
  gradKLowRank?: Tensor;
  gradKLoraB?: Tensor;
}

interface LowRankPath {
  cache: Tensor;
  factor: Tensor;
}

interface Operands {
  q: Tensor;
  kBase: Tensor;
  vBase: Tensor;
  v?: LowRankPath;
  k?: LowRankPath;
  ids?: HostVector;
  causal: boolean;
  softmaxScale: number;
  dims: { batch: number; sq: number; sk: number; hq: number; hk: number; d: number };
}

function lowRankPath(args: Args, o: { q: Tensor; kBase: Tensor }, cacheName: string, factorName: string): LowRankPath | undefined {
  const op = args.op;
  const cache = args.optionalTensor(cacheName);
  const factor = args.optionalTensor(factorName);
  if (!cache && !factor) return undefined;
  if (!cache || !factor) {
    const missing = cache ? factorName : cacheName;
    throw argumentError('ERR_ARGUMENT', op, missing, `given with ${cache ? cacheName : factorName}`, 'undefined');
  }
  args.expectLike(cacheName, cache, o.q, 'q');
  args.expectLike(factorName, factor, o.q, 'q');
  const [batch, sk, hk, d] = o.kBase.shape as [number, number, number, number];
  const r = cache.shape[2] ?? 0;
  if (cache.shape.length !== 3 || cache.shape[0] !== batch || cache.shape[1] !== sk || r < 1 || r > FLASH_LORA_MAX_RANK) {
    throw argumentError('ERR_SHAPE', op, `${cacheName}.shape`, `[${batch}, ${sk}, r] (B, Sk of kBase; 1 ≤ r ≤ ${FLASH_LORA_MAX_RANK})`,
      shapeText(cache.shape));
  }
  const adapters = factor.shape[0] ?? 0;
  if (factor.shape.length !== 4 || adapters < 1 || factor.shape[1] !== hk || factor.shape[2] !== r || factor.shape[3] !== d) {
    throw argumentError('ERR_SHAPE', op, `${factorName}.shape`, `[L, ${hk}, ${r}, ${d}] (L ≥ 1, Hk and D of kBase, r of ${cacheName})`,
      shapeText(factor.shape));
  }
  return { cache, factor };
}

function operands(args: Args): Operands {
  const op = args.op;
  const q = args.tensor('q', { dtypes: FLOAT_DTYPES });
  const [batch, sq, hq, d] = q.shape as [number, number, number, number];
  if (q.shape.length !== 4 || !FLASH_LORA_HEAD_DIMS.includes(d) || hq < 1) {
    throw argumentError('ERR_SHAPE', op, 'q.shape', `[B, Sq, Hq, D] with Hq ≥ 1 and D in {${FLASH_LORA_HEAD_DIMS.join(', ')}}`, shapeText(q.shape));
  }
  const kBase = args.tensor('kBase');
  args.expectLike('kBase', kBase, q, 'q');
  const [, sk, hk] = kBase.shape as [number, number, number, number];
  if (kBase.shape.length !== 4 || kBase.shape[0] !== batch || kBase.shape[3] !== d || sk < 1 || hk < 1 || hq % hk !== 0) {
    throw argumentError('ERR_SHAPE', op, 'kBase.shape', `[${batch}, Sk, Hk, ${d}] (B and D of q, Sk ≥ 1, Hk dividing Hq = ${hq})`,
      shapeText(kBase.shape));
  }
  const vBase = args.tensor('vBase');
  args.expectLike('vBase', vBase, q, 'q');
  args.expectShape('vBase', vBase, kBase.shape);
  const v = lowRankPath(args, { q, kBase }, 'vLowRank', 'vLoraB');
  const k = lowRankPath(args, { q, kBase }, 'kLowRank', 'kLoraB');
  if (v && k && v.factor.shape[0] !== k.factor.shape[0]) {
    throw argumentError('ERR_SHAPE', op, 'kLoraB.shape[0]', `${v.factor.shape[0]} adapters like vLoraB`, String(k.factor.shape[0]));
  }
  const adapters = (v ?? k)?.factor.shape[0] ?? 1;
  const causal = args.boolean('causal', false);
  const softmaxScale = args.number('softmaxScale', 1 / Math.sqrt(d));
  const ids = args.hostVector('adapterIds', {
    dtype: 'int32', length: batch, lengthText: `${batch} (B of q)`, like: q, likeName: 'q', optional: true,
    range: { min: -1, max: adapters - 1, expected: `an integer in −1…${adapters - 1} (L = ${adapters})` },
  });
  return { q, kBase, vBase, v, k, ids, causal, softmaxScale, dims: { batch, sq, sk, hq, hk, d } };
}

function nativeOperands(op: string, o: Operands, temporaries: Tensor[]): Omit<NativeFlashLora, 'out' | 'lse'> {
  const desc: Omit<NativeFlashLora, 'out' | 'lse'> = {
    q: Tensor.native(o.q, op, 'q'),
    kBase: Tensor.native(o.kBase, op, 'kBase'),
    vBase: Tensor.native(o.vBase, op, 'vBase'),
    causal: o.causal,
    softmaxScale: o.softmaxScale,
  };
  if (o.v) {
    desc.vLowRank = Tensor.native(o.v.cache, op, 'vLowRank');
    desc.vLoraB = Tensor.native(o.v.factor, op, 'vLoraB');
  }
  if (o.k) {
    desc.kLowRank = Tensor.native(o.k.cache, op, 'kLowRank');
    desc.kLoraB = Tensor.native(o.k.factor, op, 'kLoraB');
  }
  if (o.ids) desc.adapterIds = o.ids.native(op, 'adapterIds', temporaries);
  return desc;
}

function inputsOf(o: Operands): Record<string, Tensor | undefined> {
  return { q: o.q, kBase: o.kBase, vBase: o.vBase, vLowRank: o.v?.cache, vLoraB: o.v?.factor, kLowRank: o.k?.cache, kLoraB: o.k?.factor };
}

function prepareForward(op: string, input: FlashLoraArgs): Prepared<NativeFlashLora, FlashLoraResult> {
  const args = new Args(op, input);
  const o = operands(args);
  const { batch, sq, hq } = o.dims;
  const outGiven = args.optionalTensor('out');
  const lseGiven = args.optionalTensor('lse');
  if (outGiven) {
    args.expectLike('out', outGiven, o.q, 'q');
    args.expectShape('out', outGiven, o.q.shape);
    args.expectNoAlias('out', outGiven, { ...inputsOf(o), lse: lseGiven });
  }
  if (lseGiven) {
    args.tensor('lse', { dtypes: ['float32'] });
    if (lseGiven.device !== o.q.device) throw argumentError('ERR_DEVICE', op, 'lse', `on ${o.q.device} like q`, lseGiven.device);
    args.expectShape('lse', lseGiven, [batch, hq, sq]);
    args.expectNoAlias('lse', lseGiven, inputsOf(o));
  }
  const result = {
    out: outGiven ?? Tensor.empty(o.q.shape, { dtype: o.q.dtype, device: o.q.device }),
    lse: lseGiven ?? Tensor.empty([batch, hq, sq], { dtype: 'float32', device: o.q.device }),
  };
  const temporaries: Tensor[] = [];
  const desc: NativeFlashLora = {
    ...nativeOperands(op, o, temporaries), out: Tensor.native(result.out, op, 'out'), lse: Tensor.native(result.lse, op, 'lse'),
  };
  return { desc, result, temporaries };
}

function prepareBackward(op: string, input: FlashLoraBackwardArgs): Prepared<NativeFlashLoraBackward, FlashLoraGradients> {
  const args = new Args(op, input);
  const o = operands(args);
  const { batch, sq, hq } = o.dims;
  if (sq < 1) throw argumentError('ERR_SHAPE', op, 'q.shape', '[B, Sq, Hq, D] with Sq ≥ 1', shapeText(o.q.shape));
  const out = args.tensor('out');
  args.expectLike('out', out, o.q, 'q');
  args.expectShape('out', out, o.q.shape);
  const lse = args.tensor('lse', { dtypes: ['float32'] });
  if (lse.device !== o.q.device) throw argumentError('ERR_DEVICE', op, 'lse', `on ${o.q.device} like q`, lse.device);
  args.expectShape('lse', lse, [batch, hq, sq]);
  const gradOut = args.tensor('gradOut');
  args.expectLike('gradOut', gradOut, o.q, 'q');
  args.expectShape('gradOut', gradOut, o.q.shape);
  // Each gradient goes where `gradients` says (checked like an out), else into a new tensor.
  const given = (input.gradients ?? {}) as Partial<Record<keyof FlashLoraGradients, unknown>>;
  const inputs = { ...inputsOf(o), out, lse, gradOut };
  const written: Tensor[] = [];
  const grad = (name: keyof FlashLoraGradients, like: Tensor): Tensor => {
    if (given[name] === undefined) return Tensor.empty(like.shape, { dtype: like.dtype, device: like.device });
    const t = given[name];
    if (!(t instanceof Tensor)) throw argumentError('ERR_ARGUMENT', op, `gradients.${name}`, 'a Tensor', describeValue(t));
    args.expectLike(`gradients.${name}`, t, like, name[4]!.toLowerCase() + name.slice(5));  // gradKBase → kBase
    args.expectShape(`gradients.${name}`, t, like.shape);
    args.expectNoAlias(`gradients.${name}`, t, inputs);
    for (const other of written) {
      if (Tensor.overlaps(t, other)) throw argumentError('ERR_ARGUMENT', op, `gradients.${name}`, 'memory not shared with another gradient', 'an overlapping tensor');
    }
    written.push(t);
    return t;
  };
  const grads: FlashLoraGradients = { gradQ: grad('gradQ', o.q), gradKBase: grad('gradKBase', o.kBase), gradVBase: grad('gradVBase', o.vBase) };
  if (o.v) {
    grads.gradVLowRank = grad('gradVLowRank', o.v.cache);
    grads.gradVLoraB = grad('gradVLoraB', o.v.factor);
  }
  if (o.k) {
    grads.gradKLowRank = grad('gradKLowRank', o.k.cache);
    grads.gradKLoraB = grad('gradKLoraB', o.k.factor);
  }
  const temporaries: Tensor[] = [];
  const desc: NativeFlashLoraBackward = {
    ...nativeOperands(op, o, temporaries),
    out: Tensor.native(out, op, 'out'),
    lse: Tensor.native(lse, op, 'lse'),
    gradOut: Tensor.native(gradOut, op, 'gradOut'),
    gradQ: Tensor.native(grads.gradQ, op, 'gradQ'),
    gradKBase: Tensor.native(grads.gradKBase, op, 'gradKBase'),
    gradVBase: Tensor.native(grads.gradVBase, op, 'gradVBase'),
  };
  for (const name of ['gradVLowRank', 'gradVLoraB', 'gradKLowRank', 'gradKLoraB'] as const) {
    const t = grads[name];
    if (t) desc[name] = Tensor.native(t, op, name);
  }
  return { desc, result: grads, temporaries };
}

const forwardOp = defineOp('attention.flashLora', 'flashLora', prepareForward);
const backwardOp = defineOp('attention.flashLoraBackward', 'flashLoraBackward', prepareBackward);

/** Flash-LoRA-Attention forward: `{ out [B, Sq, Hq, D], lse [B, Hq, Sq] float32 }`. */
export function flashLora(args: FlashLoraArgs): FlashLoraResult {
  return forwardOp.sync(args);
}

/** flashLora() off the JS thread (the addon's job thread; on CUDA, stream-ordered). */
export function flashLoraAsync(args: FlashLoraArgs): Promise<FlashLoraResult> {
  return forwardOp.async(args);
}

/** The gradients of flashLora for every input: P is recomputed from lse, sums accumulate in float32. */
export function flashLoraBackward(args: FlashLoraBackwardArgs): FlashLoraGradients {
  return backwardOp.sync(args);
}

/** flashLoraBackward() off the JS thread. */
export function flashLoraBackwardAsync(args: FlashLoraBackwardArgs): Promise<FlashLoraGradients> {
  return backwardOp.async(args);
}
