/**
 * bitsandbytes 4-bit checkpoints: the tensors bitsandbytes' Linear4bit saves (QuantState.as_dict
 * packed for safetensors) under a module prefix, read into an Nf4Tensor that quant.matmul runs
 * unchanged (the bytes are the same format).
 *
 *   <prefix>.weight                                  uint8, ⌈N·K/2⌉ bytes ([bytes, 1] as bitsandbytes stores it, or flat)
 *   <prefix>.weight.absmax                           float32 [nBlocks]; uint8 [nBlocks] with double quantization
 *   <prefix>.weight.quant_map                        float32 [16]: must be the NF4 code table
 *   <prefix>.weight.nested_absmax                    float32 [⌈nBlocks/256⌉]   (double quantization)
 *   <prefix>.weight.nested_quant_map                 float32 [256]             (double quantization)
 *   <prefix>.weight.quant_state.bitsandbytes__nf4    uint8: UTF-8 JSON { quant_type: "nf4", blocksize, dtype,
 *                                                    shape: [N, K], nested_blocksize: 256, nested_dtype: "float32",
 *                                                    nested_offset }
 *
 * Everything is checked strictly against the JSON (sizes, dtypes, the code table, block sizes we
 * can run); a violation is ERR_FORMAT naming the key, an FP4 checkpoint ERR_UNSUPPORTED.
 */
import type { DType } from '../dtype.js';
import { argumentError, describeValue, LoraKernelsError } from '../errors.js';
import { BLOCK_SIZE_TEXT, isBlockSize, NF4_NESTED_BLOCK, type Nf4Tensor, nf4Blocks, type QuantDType } from '../ops/quant.js';
import { NF4_CODE } from '../ops/quant_tables.js';
import { Tensor } from '../tensor.js';
import { shapeText } from '../validate.js';

const OP = 'bnb.loadNf4';
const QUANT_DTYPES: Record<string, QuantDType> = { float32: 'float32', float16: 'float16', bfloat16: 'bfloat16' };

/**
 * The NF4 weight of module `prefix` (e.g. 'model.layers.0.self_attn.q_proj'; '' for top-level
 * keys) from a map of tensors (safetensors.read's result, or any Map / record). The result shares
 * the tensors (no copy); it lives on their device.
 */
export function loadNf4(tensors: Map<string, Tensor> | Record<string, Tensor>, prefix: string): Nf4Tensor {
  if (tensors === null || typeof tensors !== 'object') throw argumentError('ERR_ARGUMENT', OP, 'tensors', 'a Map or record of Tensors', describeValue(tensors));
  if (typeof prefix !== 'string') throw argumentError('ERR_ARGUMENT', OP, 'prefix', 'a string (the module name)', describeValue(prefix));
  const map = tensors instanceof Map ? tensors : new Map(Object.entries(tensors));
  const key = (suffix: string) => (prefix ? `${prefix}.${suffix}` : suffix);
  const fail = (subject: string, expected: string, got: string) => argumentError('ERR_FORMAT', OP, subject, expected, got);
  const get = (suffix: string): Tensor => {
    const t = map.get(key(suffix));
    if (t === undefined) throw fail(`tensors[${JSON.stringify(key(suffix))}]`, 'present (a bitsandbytes 4-bit checkpoint)', 'no such key');
    if (!(t instanceof Tensor)) throw fail(key(suffix), 'a Tensor', describeValue(t));
    return t;
  };
  const expect = (suffix: string, dtype: DType, numel: number): Tensor => {
    const t = get(suffix);
    if (t.dtype !== dtype) throw fail(key(suffix), dtype, t.dtype);
    if (t.numel !== numel) throw fail(`${key(suffix)}.shape`, `${numel} elements`, shapeText(t.shape));
    return t;
  };

  const stateKey = [...map.keys()].find((k) => k.startsWith(key('weight.quant_state.bitsandbytes__')));
  if (stateKey === undefined) throw fail(`tensors[${JSON.stringify(key('weight.quant_state.bitsandbytes__nf4'))}]`, 'present (the quant_state JSON)', 'no such key');
  const quantType = stateKey.slice(key('weight.quant_state.bitsandbytes__').length);
  if (quantType !== 'nf4') throw new LoraKernelsError('ERR_UNSUPPORTED', `${OP}: ${stateKey}: only NF4 checkpoints are supported, this one is ${quantType}`);
  const stateTensor = get(stateKey.slice(prefix ? prefix.length + 1 : 0));
  if (stateTensor.dtype !== 'uint8') throw fail(stateKey, 'uint8 (UTF-8 JSON bytes)', stateTensor.dtype);
  let state: Record<string, unknown>;
  try {
    const parsed: unknown = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(stateTensor.toArray() as Uint8Array));
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('not a JSON object');
    state = parsed as Record<string, unknown>;
  } catch (error) {
    throw fail(stateKey, 'UTF-8 JSON of an object', `bytes that are not (${(error as Error).message})`);
  }
  const field = (name: string) => state[name];
  if (field('quant_type') !== 'nf4') throw fail(`${stateKey}.quant_type`, '"nf4"', describeValue(field('quant_type')));
  const blockSize = field('blocksize');
  if (!isBlockSize(blockSize)) throw fail(`${stateKey}.blocksize`, BLOCK_SIZE_TEXT, describeValue(blockSize));
  const dtype = QUANT_DTYPES[String(field('dtype'))];
  if (!dtype) throw fail(`${stateKey}.dtype`, 'float32, float16 or bfloat16', describeValue(field('dtype')));
  const shape = field('shape');
  if (!Array.isArray(shape) || shape.length !== 2 || !shape.every((d) => Number.isSafeInteger(d) && d >= 1)) {
    throw fail(`${stateKey}.shape`, '[N, K] with N, K ≥ 1 (a Linear weight)', Array.isArray(shape) ? `[${shape.join(', ')}]` : describeValue(shape));
  }
  const [n, k] = shape as [number, number];
  const blocks = nf4Blocks(n, k, blockSize as number);

  const packed = expect('weight', 'uint8', Math.ceil((n * k) / 2));
  const quantMap = expect('weight.quant_map', 'float32', 16).toFloat32();
  const wrong = quantMap.findIndex((v, i) => !Object.is(v, NF4_CODE[i]));
  if (wrong >= 0) throw fail(`${key('weight.quant_map')}[${wrong}]`, `the NF4 code ${NF4_CODE[wrong]}`, String(quantMap[wrong]));
  const nested = field('nested_offset') !== undefined || map.has(key('weight.nested_absmax'));
  let absmax: Nf4Tensor['absmax'];
  if (!nested) {
    absmax = expect('weight.absmax', 'float32', blocks);
  } else {
    if (field('nested_blocksize') !== NF4_NESTED_BLOCK) throw fail(`${stateKey}.nested_blocksize`, String(NF4_NESTED_BLOCK), describeValue(field('nested_blocksize')));
    if (field('nested_dtype') !== 'float32') throw fail(`${stateKey}.nested_dtype`, '"float32"', describeValue(field('nested_dtype')));
    const offset = field('nested_offset');
    if (typeof offset !== 'number' || !Number.isFinite(offset)) throw fail(`${stateKey}.nested_offset`, 'a finite number', describeValue(offset));
    absmax = {
      code: expect('weight.absmax', 'uint8', blocks),
      nestedAbsmax: expect('weight.nested_absmax', 'float32', Math.ceil(blocks / NF4_NESTED_BLOCK)),
      nestedCode: expect('weight.nested_quant_map', 'float32', 256),
      offset: Math.fround(offset),
    };
  }
  const parts = [packed, ...(absmax instanceof Tensor ? [absmax] : [absmax.code, absmax.nestedAbsmax, absmax.nestedCode])];
  const device = packed.device;
  const elsewhere = parts.find((t) => t.device !== device);
  if (elsewhere) throw argumentError('ERR_DEVICE', OP, 'tensors', `all on one device (${device})`, `some on ${elsewhere.device}`);
  const flat = (t: Tensor) => (t.shape.length === 1 ? t : t.reshape([t.numel]));
  const absmaxFlat = absmax instanceof Tensor ? flat(absmax)
    : { ...absmax, code: flat(absmax.code), nestedAbsmax: flat(absmax.nestedAbsmax), nestedCode: flat(absmax.nestedCode) };
  return { format: 'nf4', shape: [n, k], blockSize: blockSize as number, packed: flat(packed), absmax: absmaxFlat, dtype, device };
}
