/**
 * lora.compress and lora.merge: a LoRA update re-expressed at another rank, the best one in the
 * Frobenius norm (Eckart–Young), through linalg.svdProduct (the SVD of b·a without forming the
 * N × K product):
 *
 *   compress({ a, b }, rank):            b'·a' = SVD_rank(b·a)
 *   merge([{ a_i, b_i }], [w_i], rank):  b'·a' = SVD_rank(Σ w_i·b_i·a_i)
 *                                                = SVD_rank([w_1·b_1 … w_n·b_n]·[a_1; …; a_n])
 *
 * with the singular values split evenly, b' = U·sqrt(Σ) [N, rank], a' = sqrt(Σ)·Vh [rank, K]
 * (scale 1: apply the adapters' own scales through the weights of merge). Inputs are float32,
 * float16 or bfloat16 (all one dtype and device); the factorization runs in float32 on their
 * device (half factors converted through the host) and the results come back in their dtype.
 *
 * Merging stacks the factors, a concatenation the native ops do not offer: it is done on the
 * host, where CUDA factors make a round trip. They are small: (N + K)·Σr_i values (4096², 4
 * adapters of rank 16: 2 MiB), against the N·K·Σr_i flops of forming the sum densely. The split
 * by √σ happens on the host too ((N + K)·rank values, see splitFactors in linalg.ts).
 */
import { FLOAT_DTYPES } from '../dtype.js';
import { argumentError, describeValue } from '../errors.js';
import { type Device, Tensor } from '../tensor.js';
import { Args, shapeText } from '../validate.js';
import { float32Of, release, splitFactors, svdProduct, tensorOf } from './linalg.js';
import type { QuantDType } from './quant.js';

/** One LoRA adapter's factors: a = lora_A.weight [r, K], b = lora_B.weight [N, r]. */
export interface LoraFactors {
  a: Tensor;
  b: Tensor;
}

interface Adapters {
  adapters: LoraFactors[];
  n: number;
  k: number;
  ranks: number[];
  dtype: QuantDType;
  device: Device;
}

/** Adapters of one dtype, device, N and K (`names[i]` names adapter i in messages). */
function validateAdapters(op: string, adapters: readonly unknown[], names: string[]): Adapters {
  let first: { a: Tensor; n: number; k: number } | undefined;
  const ranks: number[] = [];
  adapters.forEach((adapter, i) => {
    const name = names[i]!;
    if (adapter === null || typeof adapter !== 'object') {
      throw argumentError('ERR_ARGUMENT', op, name, 'an object { a, b }', describeValue(adapter));
    }
    const { a, b } = adapter as Record<string, unknown>;
    const args = new Args(op, { [`${name}.a`]: a, [`${name}.b`]: b });
    const at = args.tensor(`${name}.a`, { dtypes: FLOAT_DTYPES });
    const bt = args.tensor(`${name}.b`);
    args.expectLike(`${name}.b`, bt, at, `${name}.a`);
    if (first) args.expectLike(`${name}.a`, at, first.a, `${names[0]}.a`);
    if (at.shape.length !== 2 || at.shape[0]! < 1 || at.shape[1]! < 1 || (first && at.shape[1] !== first.k)) {
      throw argumentError('ERR_SHAPE', op, `${name}.a.shape`, first ? `[r, ${first.k}] (r ≥ 1, K of ${names[0]})` : '[r, K] with r, K ≥ 1', shapeText(at.shape));
    }
    const r = at.shape[0]!;
    if (bt.shape.length !== 2 || bt.shape[1] !== r || bt.shape[0]! < 1 || (first && bt.shape[0] !== first.n)) {
      throw argumentError('ERR_SHAPE', op, `${name}.b.shape`, first ? `[${first.n}, ${r}] (N of ${names[0]}, r of ${name}.a)` : `[N, ${r}] (N ≥ 1, r of ${name}.a)`, shapeText(bt.shape));
    }
    first ??= { a: at, n: bt.shape[0]!, k: at.shape[1]! };
    ranks.push(r);
  });
  const { a, n, k } = first!;
  return { adapters: adapters as LoraFactors[], n, k, ranks, dtype: a.dtype as QuantDType, device: a.device };
}

function rankArg(op: string, rank: unknown, maxRank: number, what: string): number {
  if (!Number.isSafeInteger(rank) || (rank as number) < 1 || (rank as number) > maxRank) {
    throw argumentError('ERR_ARGUMENT', op, 'rank', `an integer from 1 to ${what} = ${maxRank}`, describeValue(rank));
  }
  return rank as number;
}

/** The best rank-`rank` factors of b·a (float32 on `device`), in `dtype`. */
function rerank(b: Tensor, a: Tensor, rank: number, dtype: QuantDType): LoraFactors {
  const [n, k] = [b.shape[0]!, a.shape[1]!];
  const svd = svdProduct(b, a, { rank });
  const parts = splitFactors(svd, 1, dtype);
  release(svd.u, svd.s, svd.vh);
  return { a: tensorOf(parts.a, [rank, k], dtype, b.device), b: tensorOf(parts.b, [n, rank], dtype, b.device) };
}

/**
 * The adapter re-expressed at `rank` (1 … min(N, K, r)): b'·a' is the best rank-`rank`
 * approximation of b·a, singular values split evenly (see the top). Same dtype and device.
 */
export function compress(adapter: LoraFactors, rank: number): LoraFactors {
  const op = 'lora.compress';
  const v = validateAdapters(op, [adapter], ['adapter']);
  const r = v.ranks[0]!;
  rankArg(op, rank, Math.min(v.n, v.k, r), 'min(N, K, r)');
  const a = float32Of(v.adapters[0]!.a), b = float32Of(v.adapters[0]!.b);
  const result = rerank(b, a, rank, v.dtype);
  if (a !== adapter.a) release(a, b);
  return result;
}

/**
 * One adapter of rank `rank` (1 … min(N, K, Σr_i)) whose b'·a' is the best rank-`rank`
 * approximation of Σ weights[i]·b_i·a_i (see the top). Same dtype and device as the adapters.
 */
export function merge(adapters: LoraFactors[], weights: number[], rank: number): LoraFactors {
  const op = 'lora.merge';
  if (!Array.isArray(adapters) || adapters.length === 0) {
    throw argumentError('ERR_ARGUMENT', op, 'adapters', 'a non-empty array of { a, b }', describeValue(adapters));
  }
  const v = validateAdapters(op, adapters, adapters.map((_, i) => `adapters[${i}]`));
  if (!Array.isArray(weights) || weights.length !== adapters.length) {
    throw argumentError('ERR_ARGUMENT', op, 'weights', `an array of ${adapters.length} numbers (one per adapter)`, describeValue(weights));
  }
  weights.forEach((w, i) => {
    if (typeof w !== 'number' || !Number.isFinite(w)) throw argumentError('ERR_ARGUMENT', op, `weights[${i}]`, 'a finite number', describeValue(w));
  });
  const { n, k, ranks } = v;
  const total = ranks.reduce((x, y) => x + y, 0);
  rankArg(op, rank, Math.min(n, k, total), 'min(N, K, Σr)');
  // [w_1·b_1 … w_n·b_n] [N, Σr] and [a_1; …; a_n] [Σr, K] in float32 (each w·b rounded once).
  const bStack = new Float32Array(n * total), aStack = new Float32Array(total * k);
  let offset = 0;
  v.adapters.forEach(({ a, b }, i) => {
    const r = ranks[i]!, w = weights[i]!;
    const bv = b.toFloat32();
    for (let row = 0; row < n; row++) for (let j = 0; j < r; j++) bStack[row * total + offset + j] = w * bv[row * r + j]!;
    aStack.set(a.toFloat32(), offset * k);
    offset += r;
  });
  const onDevice = (values: Float32Array, shape: number[]) => tensorOf(values, shape, 'float32', v.device);
  const bDev = onDevice(bStack, [n, total]), aDev = onDevice(aStack, [total, k]);
  const result = rerank(bDev, aDev, rank, v.dtype);
  release(bDev, aDev);
  return result;
}
