/**
 * bnb.loadNf4 on a bitsandbytes 4-bit checkpoint built here byte by byte: the keys and layouts
 * bitsandbytes' Linear4bit saves (FORMATS.md; QuantState.as_dict(packed=True)): the codes as uint8
 * [⌈N·K/2⌉, 1], absmax float32 or (double quantization) uint8 with nested_absmax / nested_quant_map,
 * quant_map, and the quant_state JSON as a uint8 tensor whose shape is the original [N, K].
 */
import { describe, expect, it } from 'vitest';

import { bnb, type Device, type Nf4Tensor, quant, reference, safetensors, Tensor } from '../lib/index.js';
import { NF4_CODE } from '../lib/ops/quant_tables.js';
import { poisoned, testDevices } from './helpers/devices.js';
import { expectError } from './helpers/errors.js';

const PREFIX = 'model.layers.3.mlp.down_proj';
const STATE = 'weight.quant_state.bitsandbytes__nf4';

const utf8 = (text: string) => Tensor.from(new TextEncoder().encode(text), [Buffer.byteLength(text)], { dtype: 'uint8' });

/** The quant_state JSON bitsandbytes writes for `q` (its non-tensor fields). */
function quantState(q: Nf4Tensor): Record<string, unknown> {
  const state: Record<string, unknown> = { quant_type: 'nf4', blocksize: q.blockSize, dtype: q.dtype, shape: [...q.shape] };
  if (!(q.absmax instanceof Tensor)) Object.assign(state, { nested_blocksize: 256, nested_dtype: 'float32', nested_offset: q.absmax.offset });
  return state;
}

/** The checkpoint's tensors for module `prefix` holding `q` (host tensors), as bitsandbytes lays them out. */
function checkpoint(q: Nf4Tensor, prefix = PREFIX, state: Record<string, unknown> = quantState(q)): Record<string, Tensor> {
  const key = (suffix: string) => (prefix ? `${prefix}.${suffix}` : suffix);
  const host = (t: Tensor) => (t.device === 'cpu' ? t : t.to('cpu'));
  const tensors: Record<string, Tensor> = {
    [key('weight')]: host(q.packed).reshape([q.packed.numel, 1]),
    [key('weight.quant_map')]: Tensor.from(NF4_CODE.slice(), [16]),
    [key(STATE)]: utf8(JSON.stringify(state)),
  };
  if (q.absmax instanceof Tensor) {
    tensors[key('weight.absmax')] = host(q.absmax);
  } else {
    tensors[key('weight.absmax')] = host(q.absmax.code);
    tensors[key('weight.nested_absmax')] = host(q.absmax.nestedAbsmax);
    tensors[key('weight.nested_quant_map')] = host(q.absmax.nestedCode);
  }
  // The layer's other tensors sit next to it in a real file.
  tensors[prefix ? `${prefix}.bias` : 'bias'] = Tensor.randn([q.shape[0]], { seed: 3 });
  return tensors;
}

const bits = (t: Tensor) => Array.from(t.toArray() as ArrayLike<number>);

function expectSameWeight(got: Nf4Tensor, want: Nf4Tensor, device: Device): void {
  expect(got.format).toBe('nf4');
  expect(got.shape).toEqual(want.shape);
  expect(got.blockSize).toBe(want.blockSize);
  expect(got.dtype).toBe(want.dtype);
  expect(got.device).toBe(device);
  expect(got.packed.shape).toEqual([want.packed.numel]);
  expect(bits(got.packed)).toEqual(bits(want.packed));
  if (want.absmax instanceof Tensor) {
    expect(got.absmax).toBeInstanceOf(Tensor);
    expect(bits(got.absmax as Tensor)).toEqual(bits(want.absmax));
  } else {
    const nested = got.absmax as Exclude<Nf4Tensor['absmax'], Tensor>;
    expect(nested.offset).toBe(want.absmax.offset);
    expect(bits(nested.code)).toEqual(bits(want.absmax.code));
    expect(bits(nested.nestedAbsmax)).toEqual(bits(want.absmax.nestedAbsmax));
    expect(bits(nested.nestedCode)).toEqual(bits(want.absmax.nestedCode));
  }
}

describe.each(testDevices())('bnb.loadNf4 on $device', ({ device }) => {
  // [N, K] = [37, 91]: an odd element count (a padded nibble), 3367 / 64 = 52.6 blocks (a tail
  // block); with blocks of 32, 106 absmax codes. 600 × 130 at 32 has 2438 blocks: ten nested blocks.
  it.each([
    ['float32 absmax, block 64', [37, 91], 64, false, 'float32'],
    ['double-quantized, block 32', [37, 91], 32, true, 'bfloat16'],
    ['double-quantized, ten nested blocks', [600, 130], 32, true, 'float16'],
    ['float32 absmax, block 256', [45, 77], 256, false, 'float16'],
  ] as const)('%s: a safetensors file round trip gives the same weight, which quant.matmul runs unchanged', (_name, shape, blockSize, doubleQuant, dtype) => {
    const w = Tensor.randn([...shape], { seed: shape[1] + blockSize, dtype });
    const q = quant.nf4.quantize(device === 'cpu' ? w : w.to(device), { blockSize, doubleQuant });
    const file = safetensors.write(checkpoint(q));
    const loaded = bnb.loadNf4(safetensors.read(file, { device }), PREFIX);
    expectSameWeight(loaded, q, device);
    // The loaded weight dequantizes to the reference values of the quantized one, in every dtype.
    expect(bits(quant.nf4.dequantize(loaded))).toEqual(bits(Tensor.from(reference.quant.dequantize(q).data, [...shape], { dtype })));
    // …and the fused kernels read it as they read the original: identical bits.
    const x = Tensor.randn([5, shape[1]], { seed: 1, dtype, device });
    const a = Tensor.randn([3, shape[1]], { seed: 2, dtype, device });
    const b = Tensor.randn([shape[0], 3], { seed: 3, dtype, device });
    const y = quant.matmul({ x, weight: loaded, a, b, scale: 0.25, out: poisoned([5, shape[0]], dtype, device) });
    expect(bits(y)).toEqual(bits(quant.matmul({ x, weight: q, a, b, scale: 0.25 })));
    reference.assertClose(y, reference.quant.matmul({ x, weight: q, a, b, scale: 0.25 }), { dtype });
  });

  it('reads a record of tensors and top-level keys (prefix \'\'), and shares the tensors', () => {
    const q = quant.nf4.quantize(Tensor.randn([9, 33], { seed: 4, device }), { blockSize: 32 });
    const tensors = Object.fromEntries(Object.entries(checkpoint(q, '')).map(([k, t]) => [k, device === 'cpu' ? t : t.to(device)]));
    const loaded = bnb.loadNf4(tensors, '');
    expectSameWeight(loaded, q, device);
    expect(loaded.absmax).toBe(tensors['weight.absmax']);
  });
});

describe('bnb.loadNf4 rejects what is not a bitsandbytes NF4 checkpoint it can run', () => {
  const q = quant.nf4.quantize(Tensor.randn([7, 45], { seed: 5 }), { blockSize: 64 });
  const nested = quant.nf4.quantize(Tensor.randn([7, 45], { seed: 5 }), { blockSize: 64, doubleQuant: true });
  const load = (tensors: Record<string, Tensor>) => () => bnb.loadNf4(tensors, PREFIX);
  const key = (suffix: string) => `${PREFIX}.${suffix}`;
  const without = (t: Record<string, Tensor>, suffix: string) => Object.fromEntries(Object.entries(t).filter(([k]) => k !== key(suffix)));
  const withState = (weight: Nf4Tensor, edit: (state: Record<string, unknown>) => void) => {
    const state = quantState(weight);
    edit(state);
    return checkpoint(weight, PREFIX, state);
  };
  const STATE_KEY = `${PREFIX}.${STATE}`.replace(/\./g, '\\.');
  const cases: [string, () => unknown, string, RegExp][] = [
    ['not a map', () => bnb.loadNf4(null as never, PREFIX), 'ERR_ARGUMENT', /bnb.loadNf4: tensors must be a Map or record of Tensors, got null/],
    ['prefix not a string', () => bnb.loadNf4(checkpoint(q), 3 as never), 'ERR_ARGUMENT', /prefix must be a string \(the module name\), got number 3/],
    ['another module', () => bnb.loadNf4(checkpoint(q), 'model.layers.4.mlp.down_proj'), 'ERR_FORMAT', /"model.layers.4.mlp.down_proj.weight.quant_state.bitsandbytes__nf4"\] must be present \(the quant_state JSON\), got no such key/],
    ['no quant_state', load(without(checkpoint(q), STATE)), 'ERR_FORMAT', /quant_state.bitsandbytes__nf4"\] must be present/],
    ['an FP4 checkpoint', load(Object.fromEntries(Object.entries(checkpoint(q)).map(([k, t]) => [k.replace('__nf4', '__fp4'), t]))), 'ERR_UNSUPPORTED', /only NF4 checkpoints are supported, this one is fp4/],
    ['no packed weight', load(without(checkpoint(q), 'weight')), 'ERR_FORMAT', new RegExp(`tensors\\["${PREFIX.replace(/\./g, '\\.')}\\.weight"\\] must be present`)],
    ['no absmax', load(without(checkpoint(q), 'weight.absmax')), 'ERR_FORMAT', /weight.absmax"\] must be present/],
    ['no quant_map', load(without(checkpoint(q), 'weight.quant_map')), 'ERR_FORMAT', /weight.quant_map"\] must be present/],
    ['no nested_quant_map', load(without(checkpoint(nested), 'weight.nested_quant_map')), 'ERR_FORMAT', /weight.nested_quant_map"\] must be present/],
    ['quant_state not uint8', load({ ...checkpoint(q), [key(STATE)]: Tensor.zeros([4]) }), 'ERR_FORMAT', new RegExp(`${STATE_KEY} must be uint8 \\(UTF-8 JSON bytes\\), got float32`)],
    ['quant_state not JSON', load({ ...checkpoint(q), [key(STATE)]: utf8('{"quant_type": "nf4",') }), 'ERR_FORMAT', /must be UTF-8 JSON of an object, got bytes that are not/],
    ['quant_state a JSON array', load({ ...checkpoint(q), [key(STATE)]: utf8('[1, 2]') }), 'ERR_FORMAT', /must be UTF-8 JSON of an object, got bytes that are not \(not a JSON object\)/],
    ['quant_type fp4 in the JSON', load(withState(q, (s) => { s['quant_type'] = 'fp4'; })), 'ERR_FORMAT', /quant_type must be "nf4", got the string "fp4"/],
    ['blocksize 48', load(withState(q, (s) => { s['blocksize'] = 48; })), 'ERR_FORMAT', /blocksize must be a power of two from 32 to 4096, got number 48/],
    ['blocksize 8192', load(withState(q, (s) => { s['blocksize'] = 8192; })), 'ERR_FORMAT', /blocksize must be a power of two from 32 to 4096, got number 8192/],
    ['blocksize of another weight', load(withState(q, (s) => { s['blocksize'] = 128; })), 'ERR_FORMAT', /weight.absmax.shape must be 3 elements, got \[5\]/],
    ['dtype float64', load(withState(q, (s) => { s['dtype'] = 'float64'; })), 'ERR_FORMAT', /dtype must be float32, float16 or bfloat16, got the string "float64"/],
    ['shape 1-D', load(withState(q, (s) => { s['shape'] = [315]; })), 'ERR_FORMAT', /shape must be \[N, K\] with N, K ≥ 1 \(a Linear weight\), got \[315\]/],
    ['shape of another weight', load(withState(q, (s) => { s['shape'] = [9, 45]; })), 'ERR_FORMAT', /weight.shape must be 203 elements, got \[158, 1\]/],
    ['quant_map not NF4 (FP4\'s)', load({ ...checkpoint(q), [key('weight.quant_map')]: Tensor.from([0, 0.0052, 0.6667, 1, 0.3333, 0.5, 0.1667, 0.25, -0, -0.0052, -0.6667, -1, -0.3333, -0.5, -0.1667, -0.25], [16]) }), 'ERR_FORMAT', /weight.quant_map\[0\] must be the NF4 code -1, got 0/],
    ['quant_map float16', load({ ...checkpoint(q), [key('weight.quant_map')]: Tensor.from(NF4_CODE.slice(), [16], { dtype: 'float16' }) }), 'ERR_FORMAT', /weight.quant_map must be float32, got float16/],
    ['absmax uint8 without nesting', load({ ...checkpoint(q), [key('weight.absmax')]: Tensor.zeros([2], { dtype: 'uint8' }) }), 'ERR_FORMAT', /weight.absmax must be float32, got uint8/],
    ['nested absmax float32', load({ ...checkpoint(nested), [key('weight.absmax')]: Tensor.zeros([5]) }), 'ERR_FORMAT', /weight.absmax must be uint8, got float32/],
    ['nested_absmax count', load({ ...checkpoint(nested), [key('weight.nested_absmax')]: Tensor.zeros([2]) }), 'ERR_FORMAT', /weight.nested_absmax.shape must be 1 elements, got \[2\]/],
    ['nested_quant_map short', load({ ...checkpoint(nested), [key('weight.nested_quant_map')]: Tensor.zeros([16]) }), 'ERR_FORMAT', /weight.nested_quant_map.shape must be 256 elements, got \[16\]/],
    ['nested tensors without nested_offset', load(withState(nested, (s) => { delete s['nested_offset']; })), 'ERR_FORMAT', /nested_offset must be a finite number, got undefined/],
    ['nested_offset a string', load(withState(nested, (s) => { s['nested_offset'] = '0.5'; })), 'ERR_FORMAT', /nested_offset must be a finite number, got the string "0.5"/],
    ['nested_blocksize 128', load(withState(nested, (s) => { s['nested_blocksize'] = 128; })), 'ERR_FORMAT', /nested_blocksize must be 256, got number 128/],
    ['nested_dtype float16', load(withState(nested, (s) => { s['nested_dtype'] = 'float16'; })), 'ERR_FORMAT', /nested_dtype must be "float32", got the string "float16"/],
    ['a value that is not a Tensor', load({ ...checkpoint(q), [key('weight')]: new Uint8Array(158) as never }), 'ERR_FORMAT', /weight must be a Tensor, got a Uint8Array/],
  ];
  it.each(cases)('%s', (_name, fn, code, pattern) => expectError(fn, code, pattern));

  it('parts on different devices are ERR_DEVICE', () => {
    if (!testDevices().some((d) => d.device === 'cuda')) return;
    const tensors = checkpoint(nested);
    tensors[key('weight.nested_absmax')] = tensors[key('weight.nested_absmax')]!.to('cuda');
    expectError(load(tensors), 'ERR_DEVICE', /bnb.loadNf4: tensors must be all on one device \(cpu\), got some on cuda/);
  });
});
