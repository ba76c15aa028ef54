import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { type DType, lora, peft, reference, safetensors, Tensor } from '../lib/index.js';
import { testDevices } from './helpers/devices.js';
import { expectError } from './helpers/errors.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lk-peft-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

let dirCount = 0;
/** A fresh adapter folder holding `config` (an object or raw text) and `tensors`. */
function adapterDir(config: object | string | undefined, tensors: Record<string, Tensor> | undefined): string {
  const dir = path.join(tmp, `adapter-${dirCount++}`);
  fs.mkdirSync(dir);
  if (config !== undefined) fs.writeFileSync(path.join(dir, 'adapter_config.json'), typeof config === 'string' ? config : JSON.stringify(config, null, 2));
  if (tensors !== undefined) safetensors.writeFile(path.join(dir, 'adapter_model.safetensors'), tensors, { format: 'pt' });
  return dir;
}

let seed = 100;
const randn = (shape: number[], dtype: DType = 'float32') => Tensor.randn(shape, { dtype, seed: seed++ });

function bytesOf(t: Tensor): Uint8Array {
  const data = t.toArray();
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

// adapter_config.json as PEFT 0.13's LoraConfig.save_pretrained writes it (sorted keys), for a
// Llama-style model with LoRA on q_proj / v_proj and embed_tokens, lm_head in modules_to_save.
const PEFT_CONFIG = {
  alpha_pattern: { 'layers\\.1\\.self_attn\\.v_proj': 32, v_proj: 64 },
  auto_mapping: null,
  base_model_name_or_path: 'tiny-llama',
  bias: 'lora_only',
  eva_config: null,
  exclude_modules: null,
  fan_in_fan_out: false,
  inference_mode: true,
  init_lora_weights: true,
  layer_replication: null,
  layers_pattern: null,
  layers_to_transform: null,
  loftq_config: {},
  lora_alpha: 16,
  lora_bias: false,
  lora_dropout: 0.05,
  megatron_config: null,
  megatron_core: 'megatron.core',
  modules_to_save: ['lm_head'],
  peft_type: 'LORA',
  r: 8,
  // "_proj" names no module: a key matches the whole name or a suffix after a dot.
  rank_pattern: { _proj: 2, v_proj: 4 },
  revision: null,
  target_modules: ['q_proj', 'v_proj', 'embed_tokens'],
  task_type: 'CAUSAL_LM',
  use_dora: false,
  use_rslora: false,
};

const K = 24;
const Q_OUT = 20;
const V_OUT = 12;

function pefTensors(): Record<string, Tensor> {
  const tensors: Record<string, Tensor> = {};
  for (const layer of [0, 1]) {
    const base = `base_model.model.model.layers.${layer}.self_attn`;
    tensors[`${base}.q_proj.lora_A.weight`] = randn([8, K], 'bfloat16');
    tensors[`${base}.q_proj.lora_B.weight`] = randn([Q_OUT, 8], 'bfloat16');
    tensors[`${base}.v_proj.lora_A.weight`] = randn([4, K], 'bfloat16');
    tensors[`${base}.v_proj.lora_B.weight`] = randn([V_OUT, 4], 'bfloat16');
  }
  tensors['base_model.model.model.layers.0.self_attn.q_proj.bias'] = randn([Q_OUT], 'bfloat16');
  tensors['base_model.model.model.embed_tokens.lora_embedding_A'] = randn([8, 50]);
  tensors['base_model.model.model.embed_tokens.lora_embedding_B'] = randn([K, 8]);
  tensors['base_model.model.lm_head.weight'] = randn([50, K], 'bfloat16');
  tensors['base_model.model.extra.token_ids'] = Tensor.from(BigInt64Array.from([3n, 7n]), [2]);
  return tensors;
}

describe('peft.loadAdapter', () => {
  it('reads a folder with PEFT key names: layers with PEFT scales, every other tensor in others', () => {
    const tensors = pefTensors();
    const adapter = peft.loadAdapter(adapterDir(PEFT_CONFIG, tensors));
    expect([...adapter.layers.keys()].sort()).toEqual([
      'model.layers.0.self_attn.q_proj', 'model.layers.0.self_attn.v_proj', 'model.layers.1.self_attn.q_proj', 'model.layers.1.self_attn.v_proj']);
    const summary = Object.fromEntries([...adapter.layers].map(([m, l]) => [m, [l.rank, l.scale]]));
    expect(summary).toEqual({
      'model.layers.0.self_attn.q_proj': [8, 16 / 8],
      'model.layers.1.self_attn.q_proj': [8, 16 / 8],
      'model.layers.0.self_attn.v_proj': [4, 64 / 4], // alpha_pattern "v_proj"
      'model.layers.1.self_attn.v_proj': [4, 32 / 4], // the first matching alpha_pattern key wins
    });
    for (const [module, layer] of adapter.layers) {
      expect(bytesOf(layer.a)).toEqual(bytesOf(tensors[`base_model.model.${module}.lora_A.weight`]!));
      expect(bytesOf(layer.b)).toEqual(bytesOf(tensors[`base_model.model.${module}.lora_B.weight`]!));
      expect(layer.magnitude).toBeUndefined();
    }
    expect([...adapter.others.keys()].sort()).toEqual([
      'base_model.model.extra.token_ids', 'base_model.model.lm_head.weight', 'base_model.model.model.embed_tokens.lora_embedding_A',
      'base_model.model.model.embed_tokens.lora_embedding_B', 'base_model.model.model.layers.0.self_attn.q_proj.bias']);
    for (const [key, t] of adapter.others) expect(bytesOf(t), key).toEqual(bytesOf(tensors[key]!));
    expect(adapter.config).toEqual(PEFT_CONFIG);
  });

  it('reads keys with an adapter name segment and both DoRA magnitude spellings; fills config defaults', () => {
    const a = randn([3, 10]);
    const b = randn([6, 3]);
    const m = randn([6]);
    const dir = adapterDir({ peft_type: 'LORA', r: 3, lora_alpha: 6, use_dora: true, use_rslora: true }, {
      'base_model.model.down.lora_A.default.weight': a,
      'base_model.model.down.lora_B.default.weight': b,
      'base_model.model.down.lora_magnitude_vector.default.weight': m,
      'up.lora_A.weight': a, 'up.lora_B.weight': b, 'up.lora_magnitude_vector': m,
      'mid.lora_A.weight': a, 'mid.lora_B.weight': b, 'mid.lora_magnitude_vector.weight': m,
    });
    const adapter = peft.loadAdapter(dir);
    expect([...adapter.layers.keys()].sort()).toEqual(['down', 'mid', 'up']);
    for (const layer of adapter.layers.values()) {
      expect([layer.rank, layer.scale]).toEqual([3, 6 / Math.sqrt(3)]);
      expect(bytesOf(layer.magnitude!)).toEqual(bytesOf(m));
    }
    expect(adapter.others.size).toBe(0);
    expect(adapter.config).toMatchObject({ rank_pattern: {}, alpha_pattern: {}, bias: 'none', lora_dropout: 0, target_modules: null });
  });

  it('converts floating-point tensors with dtype and leaves integer ones alone', () => {
    const tensors = pefTensors();
    const adapter = peft.loadAdapter(adapterDir(PEFT_CONFIG, tensors), { dtype: 'float16' });
    for (const layer of adapter.layers.values()) expect([layer.a.dtype, layer.b.dtype]).toEqual(['float16', 'float16']);
    const q = adapter.layers.get('model.layers.0.self_attn.q_proj')!;
    const source = tensors['base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight']!;
    expect(q.a.toArray()).toEqual(Tensor.from(source.toFloat32(), source.shape, { dtype: 'float16' }).toArray());
    expect(adapter.others.get('base_model.model.lm_head.weight')!.dtype).toBe('float16');
    expect(adapter.others.get('base_model.model.extra.token_ids')!.toArray()).toEqual(BigInt64Array.from([3n, 7n]));
  });

  describe.each(testDevices())('applied on $device', ({ device }) => {
    it('lora.forward and lora.doraForward with a loaded adapter match the float64 references', () => {
      const plain = peft.loadAdapter(adapterDir(PEFT_CONFIG, pefTensors()), { dtype: 'float32', device });
      for (const [module, layer] of plain.layers) {
        expect([layer.a.device, layer.b.device]).toEqual([device, device]);
        const n = layer.b.shape[0]!;
        const x = Tensor.randn([5, K], { device, seed: seed++ });
        const weight = Tensor.randn([n, K], { device, seed: seed++ });
        const args = { x, weight, a: layer.a, b: layer.b, scale: layer.scale };
        reference.assertClose(lora.forward(args), reference.lora.forward(args), { dtype: 'float32', label: module });
      }
      const dora = peft.loadAdapter(adapterDir({ peft_type: 'LORA', r: 4, lora_alpha: 8, use_dora: true }, {
        'base_model.model.proj.lora_A.weight': randn([4, 33], 'bfloat16'),
        'base_model.model.proj.lora_B.weight': randn([17, 4], 'bfloat16'),
        'base_model.model.proj.lora_magnitude_vector': randn([17], 'bfloat16'),
      }), { dtype: 'bfloat16', device });
      const layer = dora.layers.get('proj')!;
      const x = Tensor.randn([3, 7, 33], { dtype: 'bfloat16', device, seed: seed++ });
      const weight = Tensor.randn([17, 33], { dtype: 'bfloat16', device, seed: seed++ });
      const args = { x, weight, a: layer.a, b: layer.b, scale: layer.scale, magnitude: layer.magnitude! };
      expect(layer.scale).toBe(2);
      reference.assertClose(lora.doraForward(args), reference.lora.doraForward(args), { dtype: 'bfloat16' });
    });
  });
});

describe('peft.saveAdapter', () => {
  it('round-trips mixed ranks, alpha patterns and others, writing PEFT key names and a LoraConfig', () => {
    const layers = new Map([
      ['model.layers.0.attn.q_proj', { a: randn([8, 16]), b: randn([16, 8]), scale: 2 }],
      ['model.layers.0.attn.k_proj', { a: randn([8, 16]), b: randn([4, 8]), scale: 2 }],
      ['model.layers.0.mlp.up_proj', { a: randn([3, 16]), b: randn([40, 3]), scale: 16 / 3 }],
      ['model.layers.1.attn.q_proj', { a: randn([8, 16]), b: randn([16, 8]), scale: 0.5 }],
    ]);
    const others = { 'base_model.model.score.weight': randn([2, 16]) };
    const dir = path.join(tmp, 'saved-mixed');
    peft.saveAdapter(dir, { layers, others, config: { base_model_name_or_path: 'tiny', task_type: 'CAUSAL_LM' } });

    const text = fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8');
    const written = JSON.parse(text) as Record<string, unknown>;
    expect(Object.keys(written)).toEqual(Object.keys(written).sort());
    expect(text).toContain('\n  "alpha_pattern": {\n');
    expect(written).toEqual({
      alpha_pattern: { '^model\\.layers\\.1\\.attn\\.q_proj': 4 }, base_model_name_or_path: 'tiny', bias: 'none', fan_in_fan_out: false,
      inference_mode: true, init_lora_weights: true, lora_alpha: 16, lora_dropout: 0, peft_type: 'LORA', r: 8,
      rank_pattern: { '^model\\.layers\\.0\\.mlp\\.up_proj': 3 }, target_modules: ['k_proj', 'q_proj', 'up_proj'],
      task_type: 'CAUSAL_LM', use_dora: false, use_rslora: false,
    });
    const file = safetensors.read(path.join(dir, 'adapter_model.safetensors'));
    expect(file.metadata).toEqual({ format: 'pt' });
    expect([...file.keys()].sort()).toEqual([
      'base_model.model.model.layers.0.attn.k_proj.lora_A.weight', 'base_model.model.model.layers.0.attn.k_proj.lora_B.weight',
      'base_model.model.model.layers.0.attn.q_proj.lora_A.weight', 'base_model.model.model.layers.0.attn.q_proj.lora_B.weight',
      'base_model.model.model.layers.0.mlp.up_proj.lora_A.weight', 'base_model.model.model.layers.0.mlp.up_proj.lora_B.weight',
      'base_model.model.model.layers.1.attn.q_proj.lora_A.weight', 'base_model.model.model.layers.1.attn.q_proj.lora_B.weight',
      'base_model.model.score.weight']);

    const loaded = peft.loadAdapter(dir);
    for (const [module, layer] of layers) {
      const got = loaded.layers.get(module)!;
      expect([got.rank, got.scale], module).toEqual([layer.a.shape[0], layer.scale]);
      expect(bytesOf(got.a)).toEqual(bytesOf(layer.a));
      expect(bytesOf(got.b)).toEqual(bytesOf(layer.b));
    }
    expect(bytesOf(loaded.others.get('base_model.model.score.weight')!)).toEqual(bytesOf(others['base_model.model.score.weight']));
    // What was loaded saves again to the same files.
    const again = path.join(tmp, 'saved-again');
    peft.saveAdapter(again, loaded);
    for (const name of ['adapter_config.json', 'adapter_model.safetensors']) {
      expect(fs.readFileSync(path.join(again, name)), name).toEqual(fs.readFileSync(path.join(dir, name)));
    }
  });

  it('round-trips rsLoRA with DoRA on every layer', () => {
    const layers = {
      'enc.0.fc': { a: randn([4, 9]), b: randn([5, 4]), scale: 8 / Math.sqrt(4), magnitude: randn([5]) },
      'enc.1.fc': { a: randn([16, 9]), b: randn([7, 16]), scale: 8 / Math.sqrt(16), magnitude: randn([7]) },
      'enc.2.fc': { a: randn([8, 9]), b: randn([3, 8]), scale: 16 / Math.sqrt(8), magnitude: randn([3]) },
    };
    const dir = path.join(tmp, 'saved-dora');
    peft.saveAdapter(dir, { layers, config: { use_rslora: true } });
    const loaded = peft.loadAdapter(dir);
    expect(loaded.config).toMatchObject({ use_rslora: true, use_dora: true, r: 4, lora_alpha: 8, alpha_pattern: { '^enc\\.2\\.fc': 16 } });
    for (const [module, layer] of Object.entries(layers)) {
      const got = loaded.layers.get(module)!;
      expect(got.scale, module).toBe(layer.scale);
      expect(bytesOf(got.magnitude!)).toEqual(bytesOf(layer.magnitude));
    }
    expect(safetensors.read(path.join(dir, 'adapter_model.safetensors')).has('base_model.model.enc.0.fc.lora_magnitude_vector')).toBe(true);
  });

  it('writes given config fields and checks the layers against them', () => {
    const layers = { 'a.q': { a: randn([2, 4]), b: randn([4, 2]), scale: 3 }, 'b.q': { a: randn([6, 4]), b: randn([4, 6]), scale: 1 } };
    const dir = path.join(tmp, 'saved-given');
    peft.saveAdapter(dir, { layers, config: { r: 2, lora_alpha: 6, rank_pattern: { 'b\\.q': 6 }, lora_dropout: 0.1, target_modules: ['q'] } });
    expect(JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'))).toMatchObject({
      r: 2, lora_alpha: 6, rank_pattern: { 'b\\.q': 6 }, alpha_pattern: {}, lora_dropout: 0.1, target_modules: ['q'] });
    expectError(() => peft.saveAdapter(dir, { layers, config: { r: 2, lora_alpha: 6, rank_pattern: {} } }), 'ERR_ARGUMENT',
      /^peft\.saveAdapter: config \(r, rank_pattern\) for module "b\.q" must be rank 6 like its a, got rank 2$/);
    // Missing pattern fields are derived to fit the layers; given ones must already fit.
    expect(() => peft.saveAdapter(dir, { layers, config: { r: 2, lora_alpha: 5, rank_pattern: { 'b\\.q': 6 } } })).not.toThrow();
    expectError(() => peft.saveAdapter(dir, { layers, config: { r: 2, lora_alpha: 5, rank_pattern: { 'b\\.q': 6 }, alpha_pattern: {} } }), 'ERR_ARGUMENT',
      /^peft\.saveAdapter: layers\["a\.q"\]\.scale must be 2\.5 \(lora_alpha \/ r from the config\), got 3$/);
  });

  it('checks its arguments', () => {
    const ok = { a: randn([2, 4]), b: randn([3, 2]), scale: 1 };
    const dir = path.join(tmp, 'saved-bad');
    const cases: [() => unknown, string, RegExp][] = [
      [() => peft.saveAdapter(dir, { layers: { x: ok, y: { ...ok, magnitude: randn([3]) } } }), 'ERR_ARGUMENT',
        /^peft\.saveAdapter: layers\["x"\]\.magnitude must be a Tensor like layers\["y"\]\.magnitude \(PEFT's use_dora applies to every module\), got undefined$/],
      [() => peft.saveAdapter(dir, { layers: { x: ok }, config: { use_dora: true } }), 'ERR_ARGUMENT',
        /^peft\.saveAdapter: config\.use_dora must be false \(no layer has a magnitude\), got boolean true$/],
      [() => peft.saveAdapter(dir, { layers: { x: { ...ok, b: randn([3, 5]) } } }), 'ERR_SHAPE', /^peft\.saveAdapter: layers\["x"\]\.b must be \[out, 2\], got \[3, 5\]$/],
      [() => peft.saveAdapter(dir, { layers: { x: { ...ok, a: randn([0, 4]) } } }), 'ERR_SHAPE', /layers\["x"\]\.a must be \[r, in\] with r >= 1, got \[0, 4\]$/],
      [() => peft.saveAdapter(dir, { layers: { x: { ...ok, rank: 3 } } }), 'ERR_ARGUMENT', /layers\["x"\]\.rank must be 2 \(a's first dimension\) or absent, got number 3$/],
      [() => peft.saveAdapter(dir, { layers: { x: { ...ok, scale: NaN } } }), 'ERR_ARGUMENT', /layers\["x"\]\.scale must be a finite number, got number NaN$/],
      [() => peft.saveAdapter(dir, { layers: { x: { ...ok, magnitude: randn([4]) } } }), 'ERR_SHAPE', /layers\["x"\]\.magnitude must be \[3\], got \[4\]$/],
      [() => peft.saveAdapter(dir, { layers: { x: { ...ok, a: 5 as never } } }), 'ERR_ARGUMENT', /layers\["x"\]\.a must be a Tensor, got number 5$/],
      [() => peft.saveAdapter(dir, { layers: { x: ok }, others: { 'base_model.model.x.lora_A.weight': ok.a } }), 'ERR_ARGUMENT',
        /^peft\.saveAdapter: a key of others must be a tensor name that names no LoRA tensor \(those come from layers\), got the string "base_model\.model\.x\.lora_A\.weight"$/],
      [() => peft.saveAdapter(dir, { layers: { x: ok }, config: { rank_pattern: { '(': 2 } } }), 'ERR_ARGUMENT', /^peft\.saveAdapter: config pattern "\(" must be a regular expression JavaScript compiles, got /],
      [() => peft.saveAdapter(dir, { layers: { x: ok }, config: { r: 0 } }), 'ERR_ARGUMENT', /^peft\.saveAdapter: config\.r must be a positive integer, got 0$/],
      [() => peft.saveAdapter(dir, 5 as never), 'ERR_ARGUMENT', /^peft\.saveAdapter: the argument must be an object \{ config\?, layers, others\? \}, got number 5$/],
      [() => peft.saveAdapter(dir, { layers: [] as never }), 'ERR_ARGUMENT', /^peft\.saveAdapter: layers must be a Map or an object by name, got an array of length 0$/],
    ];
    for (const [fn, code, message] of cases) expectError(fn, code, message);
    expect(fs.existsSync(dir)).toBe(false);
  });
});

describe('peft.loadAdapter rejects inconsistent folders', () => {
  const lora2 = (module: string, r = 2, out = 3) => ({
    [`base_model.model.${module}.lora_A.weight`]: randn([r, 5]),
    [`base_model.model.${module}.lora_B.weight`]: randn([out, r]),
  });
  const config = { peft_type: 'LORA', r: 2, lora_alpha: 4 };
  const file = (dir: string, name = 'adapter_model.safetensors') => path.join(dir, name).replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

  it('missing files, a pickle-only adapter, a bad config', () => {
    expectError(() => peft.loadAdapter(path.join(tmp, 'nowhere')), 'ERR_ARGUMENT', /^peft\.loadAdapter: dir must be an adapter folder, got ".*nowhere" \(no such folder\)$/);
    const noConfig = adapterDir(undefined, lora2('m'));
    expectError(() => peft.loadAdapter(noConfig), 'ERR_FORMAT', new RegExp(`^peft\\.loadAdapter: .* must be a folder with adapter_config\\.json, got no ${file(noConfig, 'adapter_config.json')}$`));
    const pickle = adapterDir(config, undefined);
    fs.writeFileSync(path.join(pickle, 'adapter_model.bin'), 'PK\x03\x04');
    expectError(() => peft.loadAdapter(pickle), 'ERR_UNSUPPORTED', new RegExp(
      `must be a folder with adapter_model\\.safetensors \\(safetensors is required\\), got only ${file(pickle, 'adapter_model.bin')}, a pickle file, which is never loaded`));
    const empty = adapterDir(config, undefined);
    expectError(() => peft.loadAdapter(empty), 'ERR_FORMAT', new RegExp(`must be a folder with adapter_model\\.safetensors, got no ${file(empty)}$`));
    expectError(() => peft.loadAdapter(adapterDir('{ nope', lora2('m'))), 'ERR_FORMAT', /adapter_config\.json: the file must be JSON, got /);
    expectError(() => peft.loadAdapter(adapterDir({ ...config, peft_type: 'ADALORA' }, lora2('m'))), 'ERR_UNSUPPORTED',
      /adapter_config\.json: peft_type must be "LORA" \(other PEFT methods are not read\), got "ADALORA"$/);
    expectError(() => peft.loadAdapter(adapterDir({ ...config, r: 1.5 }, lora2('m'))), 'ERR_FORMAT', /adapter_config\.json: r must be a positive integer, got 1\.5$/);
    expectError(() => peft.loadAdapter(adapterDir({ ...config, use_dora: 'yes' }, lora2('m'))), 'ERR_FORMAT', /adapter_config\.json: use_dora must be true or false, got "yes"$/);
    expectError(() => peft.loadAdapter(adapterDir({ ...config, rank_pattern: { m: 0 } }, lora2('m'))), 'ERR_FORMAT',
      /adapter_config\.json: rank_pattern\["m"\] must be a positive integer, got 0$/);
    expectError(() => peft.loadAdapter(adapterDir({ ...config, alpha_pattern: { '[': 2 } }, lora2('m'))), 'ERR_FORMAT',
      /adapter_config\.json: pattern "\[" must be a regular expression JavaScript compiles, got /);
    expectError(() => peft.loadAdapter(adapterDir(config, lora2('m')), { dtype: 'int8' as never }), 'ERR_DTYPE',
      /^peft\.loadAdapter: opts\.dtype must be one of float32, float16, bfloat16, got the string "int8"$/);
  });

  it('LoRA tensors that do not fit together or with the config', () => {
    const a = randn([2, 5]);
    const cases: [object, Record<string, Tensor>, string, RegExp][] = [
      [config, { 'base_model.model.m.lora_A.weight': a }, 'ERR_FORMAT',
        /: module "m": tensors must be lora_A\.weight and lora_B\.weight, got only "base_model\.model\.m\.lora_A\.weight"$/],
      [config, { 'base_model.model.m.lora_B.weight': randn([3, 2]) }, 'ERR_FORMAT', /: module "m": tensors must be lora_A\.weight and lora_B\.weight, got only "base_model\.model\.m\.lora_B\.weight"$/],
      [config, { ...lora2('m'), 'base_model.model.m.lora_B.weight': randn([3, 4]) }, 'ERR_FORMAT',
        /: module "m": lora_B\.weight must be \[out, 2\] for lora_A\.weight \[2, 5\], got \[3, 4\]$/],
      [{ ...config, rank_pattern: { m: 4 } }, lora2('x.m'), 'ERR_FORMAT',
        /adapter_config\.json: the rank of module "x\.m" \(r or rank_pattern\) must be 2 as in lora_A\.weight \[2, 5\], got 4$/],
      [config, { ...lora2('m'), 'base_model.model.m.lora_magnitude_vector': randn([3]) }, 'ERR_FORMAT',
        /: module "m": lora_magnitude_vector must be absent \(use_dora is false in the config\), got "base_model\.model\.m\.lora_magnitude_vector"$/],
      [{ ...config, use_dora: true }, lora2('m'), 'ERR_FORMAT', /: module "m": lora_magnitude_vector must be present \(use_dora is true in the config\), got none$/],
      [{ ...config, use_dora: true }, { ...lora2('m'), 'base_model.model.m.lora_magnitude_vector': randn([2]) }, 'ERR_FORMAT',
        /: module "m": lora_magnitude_vector must be \[3\] like lora_B\.weight's rows, got \[2\]$/],
      [config, { ...lora2('m'), 'base_model.model.m.lora_B.bias': randn([3]) }, 'ERR_UNSUPPORTED',
        /: module "m" must be LoRA without a lora_B bias \(lora_bias is not applied here\), got "base_model\.model\.m\.lora_B\.bias"$/],
      [config, { 'base_model.model.conv.lora_A.weight': randn([2, 3, 3, 3]), 'base_model.model.conv.lora_B.weight': randn([4, 2, 1, 1]) }, 'ERR_UNSUPPORTED',
        /: module "conv" must be a Linear LoRA layer \(2-D lora_A and lora_B\), got lora_A \[2, 3, 3, 3\] and lora_B \[4, 2, 1, 1\]$/],
      [config, { ...lora2('m'), 'base_model.model.m.lora_A.other.weight': a }, 'ERR_FORMAT',
        /: module "m": lora_A\.weight must be one tensor \(one adapter per file\), got "base_model\.model\.m\.lora_A\.other\.weight" and "base_model\.model\.m\.lora_A\.weight"$|got "base_model\.model\.m\.lora_A\.weight" and "base_model\.model\.m\.lora_A\.other\.weight"$/],
    ];
    for (const [cfg, tensors, code, message] of cases) {
      const dir = adapterDir(cfg, tensors);
      expectError(() => peft.loadAdapter(dir), code, message);
      expectError(() => peft.loadAdapter(dir), code, new RegExp(`^peft\\.loadAdapter: ${path.join(dir, '').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
    }
  });
});
