/**
 * PEFT LoRA adapters: a folder with `adapter_config.json` (a serialized `LoraConfig`) and
 * `adapter_model.safetensors`.
 *
 * Key names, as PEFT's `get_peft_model_state_dict` saves them: `base_model.model.<module>.lora_A.weight`
 * ([r, in]), `.lora_B.weight` ([out, r]) and, for DoRA, `.lora_magnitude_vector` ([out]; the
 * ".weight" of PEFT's newer DoRA layer is dropped on save to keep the old format). Tools that save
 * a raw model state dict keep an adapter name segment (`.lora_A.default.weight`,
 * `.lora_magnitude_vector.default.weight`): both forms are read. Everything else (modules_to_save,
 * trained biases, lora_embedding_A/B of embedding layers, ...) is returned in `others` under its
 * full key.
 *
 * The rank and scale per module follow PEFT's LoraModel: rank_pattern and alpha_pattern are looked
 * up separately, each key a regular expression that must match the whole module name or a suffix
 * of it after a dot (`re.match(rf"(.*\.)?({key})$", module)`), the first matching key in the
 * config's order wins, else r / lora_alpha; scale = alpha / r, or alpha / sqrt(r) with use_rslora.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { type DType, FLOAT_DTYPES, isFloatingPoint } from '../dtype.js';
import { argumentError, describeValue, LoraKernelsError } from '../errors.js';
import { type Device, Tensor } from '../tensor.js';
import { read as readSafetensors, writeFile as writeSafetensors } from './safetensors.js';

/** The LoraConfig fields of adapter_config.json that this package reads and writes. */
export interface PeftLoraConfigFields {
  peft_type: 'LORA';
  r: number;
  lora_alpha: number;
  target_modules: string[] | string | null;
  use_rslora: boolean;
  use_dora: boolean;
  rank_pattern: Record<string, number>;
  alpha_pattern: Record<string, number>;
  lora_dropout: number;
  bias: 'none' | 'all' | 'lora_only';
  fan_in_fan_out: boolean;
  inference_mode: boolean;
  init_lora_weights: boolean | string;
  task_type: string | null;
  base_model_name_or_path: string | null;
}

/** adapter_config.json: the fields above and any others, as read. */
export interface PeftLoraConfig extends PeftLoraConfigFields {
  [key: string]: unknown;
}

/** One adapted Linear module: lora_A.weight [r, in], lora_B.weight [out, r], PEFT's scale, DoRA's magnitude [out]. */
export interface PeftLayer {
  a: Tensor;
  b: Tensor;
  scale: number;
  rank: number;
  magnitude?: Tensor;
}

export interface PeftAdapter {
  config: PeftLoraConfig;
  /** By module name (the key without `base_model.model.` and the LoRA suffix). */
  layers: Map<string, PeftLayer>;
  /** Every other tensor of the file, by its full key. */
  others: Map<string, Tensor>;
}

export interface PeftLoadOptions {
  /** Convert every floating-point tensor (integer ones stay as they are). */
  dtype?: 'float32' | 'float16' | 'bfloat16';
  device?: Device;
}

/** What saveAdapter writes: `rank` defaults to a's first dimension; config fields override the derived ones. */
export interface PeftSaveArgs {
  config?: Partial<PeftLoraConfigFields> & Record<string, unknown>;
  layers: Map<string, Omit<PeftLayer, 'rank'> & { rank?: number }> | Record<string, Omit<PeftLayer, 'rank'> & { rank?: number }>;
  others?: Map<string, Tensor> | Record<string, Tensor>;
}

const CONFIG_FILE = 'adapter_config.json';
const WEIGHTS_FILE = 'adapter_model.safetensors';
const PICKLE_FILE = 'adapter_model.bin';
const PREFIX = 'base_model.model.';

/** LoraConfig's defaults for the fields read here (a config written by an older PEFT may lack some). */
const CONFIG_DEFAULTS: Omit<PeftLoraConfigFields, 'peft_type'> = {
  r: 8, lora_alpha: 8, target_modules: null, use_rslora: false, use_dora: false, rank_pattern: {}, alpha_pattern: {},
  lora_dropout: 0, bias: 'none', fan_in_fan_out: false, inference_mode: false, init_lora_weights: true, task_type: null,
  base_model_name_or_path: null,
};

function quote(text: string): string {
  return JSON.stringify(text);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

// ---- config ---------------------------------------------------------------------------------

interface Pattern {
  regex: RegExp;
  value: number;
}

type PatternFail = (key: string, why: string) => LoraKernelsError;

/** PEFT's get_pattern_key: the key matches the module name or a dotted suffix of it. */
function compilePatterns(patterns: Record<string, number>, fail: PatternFail): Pattern[] {
  return Object.entries(patterns).map(([key, value]) => {
    try {
      return { regex: new RegExp(`^(.*\\.)?(${key})$`), value };
    } catch (error) {
      throw fail(key, (error as Error).message);
    }
  });
}

function resolve(patterns: Pattern[], module: string, fallback: number): number {
  return patterns.find((p) => p.regex.test(module))?.value ?? fallback;
}

class ConfigRules {
  readonly ranks: Pattern[];
  readonly alphas: Pattern[];

  constructor(readonly config: PeftLoraConfig, fail: PatternFail) {
    this.ranks = compilePatterns(config.rank_pattern, fail);
    this.alphas = compilePatterns(config.alpha_pattern, fail);
  }

  rank(module: string): number {
    return resolve(this.ranks, module, this.config.r);
  }

  scale(module: string, rank: number): number {
    const alpha = resolve(this.alphas, module, this.config.lora_alpha);
    return alpha / (this.config.use_rslora ? Math.sqrt(rank) : rank);
  }
}

type Fail = (subject: string, expected: string, got: string) => LoraKernelsError;

/** Checks the fields this package reads (the rest pass through); null patterns become {}. */
function checkConfig(config: PeftLoraConfig, fail: Fail): PeftLoraConfig {
  if (!Number.isSafeInteger(config.r) || config.r < 1) throw fail('r', 'a positive integer', JSON.stringify(config.r));
  if (typeof config.lora_alpha !== 'number' || !Number.isFinite(config.lora_alpha)) {
    throw fail('lora_alpha', 'a finite number', JSON.stringify(config.lora_alpha));
  }
  for (const key of ['use_rslora', 'use_dora'] as const) {
    if (typeof config[key] !== 'boolean') throw fail(key, 'true or false', JSON.stringify(config[key]));
  }
  for (const [key, valid, expected] of [['rank_pattern', (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 1, 'positive integer'],
    ['alpha_pattern', (v: unknown) => typeof v === 'number' && Number.isFinite(v), 'finite number']] as const) {
    const patterns = config[key] ?? {};
    if (!isObject(patterns)) throw fail(key, `an object of ${expected}s`, JSON.stringify(patterns));
    for (const [k, v] of Object.entries(patterns)) if (!valid(v)) throw fail(`${key}[${quote(k)}]`, `a ${expected}`, JSON.stringify(v));
    config[key] = patterns as Record<string, number>;
  }
  return config;
}

function parseConfig(op: string, file: string): PeftLoraConfig {
  const fail: Fail = (subject, expected, got) => argumentError('ERR_FORMAT', op, `${file}: ${subject}`, expected, got);
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (error) {
    throw fail('the file', 'JSON', (error as Error).message);
  }
  if (!isObject(json)) throw fail('the file', 'a JSON object', describeValue(json));
  if (json['peft_type'] !== 'LORA') {
    throw argumentError('ERR_UNSUPPORTED', op, `${file}: peft_type`, '"LORA" (other PEFT methods are not read)', JSON.stringify(json['peft_type']));
  }
  return checkConfig({ ...CONFIG_DEFAULTS, ...json } as PeftLoraConfig, fail);
}

// ---- keys -----------------------------------------------------------------------------------

type Part = 'a' | 'b' | 'bias' | 'magnitude';

const PARTS: [RegExp, Part][] = [
  [/^(.+)\.lora_A(?:\.[^.]+)?\.weight$/, 'a'],
  [/^(.+)\.lora_B(?:\.[^.]+)?\.weight$/, 'b'],
  [/^(.+)\.lora_B(?:\.[^.]+)?\.bias$/, 'bias'],
  [/^(.+)\.lora_magnitude_vector(?:\.[^.]+)?\.weight$/, 'magnitude'],
  [/^(.+)\.lora_magnitude_vector(?:\.[^.]+)?$/, 'magnitude'],
];

const PART_NAME: Record<Part, string> = { a: 'lora_A.weight', b: 'lora_B.weight', bias: 'lora_B.bias', magnitude: 'lora_magnitude_vector' };

/** The module and LoRA part a key names, or undefined for any other tensor. */
function parseKey(key: string): { module: string; part: Part } | undefined {
  const name = key.startsWith(PREFIX) ? key.slice(PREFIX.length) : key;
  for (const [regex, part] of PARTS) {
    const match = regex.exec(name);
    if (match) return { module: match[1]!, part };
  }
  return undefined;
}

function shapeText(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

function castFloat(t: Tensor, dtype: DType | undefined): Tensor {
  if (dtype === undefined || t.dtype === dtype || !isFloatingPoint(t.dtype)) return t;
  return Tensor.from(t.toFloat32(), t.shape, { dtype });
}

function place(t: Tensor, opts: PeftLoadOptions): Tensor {
  const cast = castFloat(t, opts.dtype);
  if (opts.device === undefined || opts.device === 'cpu') return cast;
  const moved = cast.to(opts.device);
  cast.dispose();
  return moved;
}

/**
 * Loads a PEFT LoRA adapter folder. Each Linear module's lora_A / lora_B (and DoRA magnitude)
 * become one layer with PEFT's scale; the rank comes from the tensor shapes and must agree with
 * the config. Only `adapter_model.safetensors` is read: a pickled `adapter_model.bin` is never
 * loaded (ERR_UNSUPPORTED). Inconsistent files are ERR_FORMAT naming the file and module.
 */
export function loadAdapter(dir: string, opts: PeftLoadOptions = {}): PeftAdapter {
  const op = 'peft.loadAdapter';
  if (typeof dir !== 'string' || dir === '') throw argumentError('ERR_ARGUMENT', op, 'dir', 'an adapter folder', describeValue(dir));
  if (opts === null || typeof opts !== 'object') throw argumentError('ERR_ARGUMENT', op, 'opts', 'an object', describeValue(opts));
  if (opts.dtype !== undefined && !FLOAT_DTYPES.includes(opts.dtype)) {
    throw argumentError('ERR_DTYPE', op, 'opts.dtype', `one of ${FLOAT_DTYPES.join(', ')}`, describeValue(opts.dtype));
  }
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) {
    throw argumentError('ERR_ARGUMENT', op, 'dir', 'an adapter folder', `${quote(dir)} (${fs.existsSync(dir) ? 'not a folder' : 'no such folder'})`);
  }
  const configFile = path.join(dir, CONFIG_FILE);
  const weightsFile = path.join(dir, WEIGHTS_FILE);
  if (!fs.existsSync(configFile)) throw argumentError('ERR_FORMAT', op, dir, `a folder with ${CONFIG_FILE}`, `no ${configFile}`);
  if (!fs.existsSync(weightsFile)) {
    if (fs.existsSync(path.join(dir, PICKLE_FILE))) {
      throw argumentError('ERR_UNSUPPORTED', op, dir, `a folder with ${WEIGHTS_FILE} (safetensors is required)`,
        `only ${path.join(dir, PICKLE_FILE)}, a pickle file, which is never loaded: convert it with safetensors.torch.save_file`);
    }
    throw argumentError('ERR_FORMAT', op, dir, `a folder with ${WEIGHTS_FILE}`, `no ${weightsFile}`);
  }
  const config = parseConfig(op, configFile);
  const rules = new ConfigRules(config, (key, why) => argumentError('ERR_FORMAT', op, `${configFile}: pattern ${quote(key)}`, 'a regular expression JavaScript compiles', why));
  const tensors = readSafetensors(weightsFile);
  const fail = (module: string, subject: string, expected: string, got: string) =>
    argumentError('ERR_FORMAT', op, `${weightsFile}: module ${quote(module)}: ${subject}`, expected, got);

  const parts = new Map<string, Partial<Record<Part, { key: string; tensor: Tensor }>>>();
  const others = new Map<string, Tensor>();
  for (const [key, tensor] of tensors) {
    const parsed = parseKey(key);
    if (!parsed) {
      others.set(key, tensor);
      continue;
    }
    const found = parts.get(parsed.module) ?? {};
    const previous = found[parsed.part];
    if (previous) throw fail(parsed.module, PART_NAME[parsed.part], 'one tensor (one adapter per file)', `${quote(previous.key)} and ${quote(key)}`);
    found[parsed.part] = { key, tensor };
    parts.set(parsed.module, found);
  }

  // Every module is checked before any tensor is converted or moved.
  const checked: { module: string; a: Tensor; b: Tensor; magnitude?: Tensor; rank: number }[] = [];
  for (const [module, { a, b, bias, magnitude }] of parts) {
    if (bias) {
      throw argumentError('ERR_UNSUPPORTED', op, `${weightsFile}: module ${quote(module)}`, 'LoRA without a lora_B bias (lora_bias is not applied here)', quote(bias.key));
    }
    if (!a || !b) {
      const present = [a, b, magnitude].filter((p) => p).map((p) => quote(p!.key)).join(', ');
      throw fail(module, 'tensors', 'lora_A.weight and lora_B.weight', `only ${present}`);
    }
    if (a.tensor.shape.length !== 2 || b.tensor.shape.length !== 2) {
      throw argumentError('ERR_UNSUPPORTED', op, `${weightsFile}: module ${quote(module)}`, 'a Linear LoRA layer (2-D lora_A and lora_B)',
        `lora_A ${shapeText(a.tensor.shape)} and lora_B ${shapeText(b.tensor.shape)}`);
    }
    const [rank, inFeatures] = a.tensor.shape as [number, number];
    const outFeatures = b.tensor.shape[0]!;
    if (b.tensor.shape[1] !== rank) {
      throw fail(module, 'lora_B.weight', `[out, ${rank}] for lora_A.weight ${shapeText(a.tensor.shape)}`, shapeText(b.tensor.shape));
    }
    const configRank = rules.rank(module);
    if (configRank !== rank) {
      throw argumentError('ERR_FORMAT', op, `${configFile}: the rank of module ${quote(module)} (r or rank_pattern)`,
        `${rank} as in lora_A.weight [${rank}, ${inFeatures}]`, String(configRank));
    }
    if (magnitude && !config.use_dora) throw fail(module, 'lora_magnitude_vector', 'absent (use_dora is false in the config)', quote(magnitude.key));
    if (!magnitude && config.use_dora) throw fail(module, 'lora_magnitude_vector', 'present (use_dora is true in the config)', 'none');
    if (magnitude && (magnitude.tensor.shape.length !== 1 || magnitude.tensor.shape[0] !== outFeatures)) {
      throw fail(module, 'lora_magnitude_vector', `[${outFeatures}] like lora_B.weight's rows`, shapeText(magnitude.tensor.shape));
    }
    checked.push({ module, a: a.tensor, b: b.tensor, rank, ...(magnitude ? { magnitude: magnitude.tensor } : {}) });
  }
  const layers = new Map<string, PeftLayer>();
  for (const { module, a, b, magnitude, rank } of checked) {
    const layer: PeftLayer = { a: place(a, opts), b: place(b, opts), scale: rules.scale(module, rank), rank };
    if (magnitude) layer.magnitude = place(magnitude, opts);
    layers.set(module, layer);
  }
  for (const [key, tensor] of others) others.set(key, place(tensor, opts));
  return { config, layers, others };
}

// ---- saving ---------------------------------------------------------------------------------

function entriesOf<T>(op: string, argument: string, value: unknown): [string, T][] {
  if (value instanceof Map) return [...value.entries()] as [string, T][];
  if (isObject(value)) return Object.entries(value) as [string, T][];
  throw argumentError('ERR_ARGUMENT', op, argument, 'a Map or an object by name', describeValue(value));
}

/** The value most layers have (ties: the smallest), the config default that needs the fewest patterns. */
function commonest(values: number[]): number {
  const counts = new Map<number, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  return [...counts].sort((x, y) => y[1] - x[1] || x[0] - y[0])[0]?.[0] ?? CONFIG_DEFAULTS.r;
}

/** scale·r (or scale·sqrt(r)) back to alpha: an integer alpha, as PEFT configs hold, comes back exactly. */
function alphaOf(scale: number, rank: number, rslora: boolean): number {
  const alpha = scale * (rslora ? Math.sqrt(rank) : rank);
  const integer = Math.round(alpha);
  return Math.abs(alpha - integer) <= 1e-9 * Math.max(1, Math.abs(alpha)) ? integer : alpha;
}

/** A rank_pattern / alpha_pattern key that matches exactly this module (PEFT's '^' idiom, dots escaped). */
function exactPattern(module: string): string {
  return `^${module.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`;
}

function sortedKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortedKeys);
  if (!isObject(value)) return value;
  return Object.fromEntries(Object.keys(value).sort().map((key) => [key, sortedKeys(value[key])]));
}

interface CheckedLayer {
  module: string;
  a: Tensor;
  b: Tensor;
  rank: number;
  scale: number;
  magnitude?: Tensor;
}

function checkLayers(op: string, layers: unknown): CheckedLayer[] {
  return entriesOf<unknown>(op, 'layers', layers).map(([module, layer]) => {
    const where = `layers[${quote(String(module))}]`;
    if (typeof module !== 'string' || module === '') throw argumentError('ERR_ARGUMENT', op, 'a module name', 'a non-empty string', describeValue(module));
    if (!isObject(layer)) throw argumentError('ERR_ARGUMENT', op, where, 'an object { a, b, scale, magnitude? }', describeValue(layer));
    const tensor = (name: string, optional: boolean): Tensor | undefined => {
      const t = layer[name];
      if (t === undefined && optional) return undefined;
      if (!(t instanceof Tensor)) throw argumentError('ERR_ARGUMENT', op, `${where}.${name}`, 'a Tensor', describeValue(t));
      if (t.disposed) throw argumentError('ERR_DISPOSED', op, `${where}.${name}`, 'a live tensor', 'a disposed tensor');
      return t;
    };
    const a = tensor('a', false)!;
    const b = tensor('b', false)!;
    const magnitude = tensor('magnitude', true);
    if (a.shape.length !== 2 || a.shape[0]! < 1) throw argumentError('ERR_SHAPE', op, `${where}.a`, '[r, in] with r >= 1', shapeText(a.shape));
    const rank = a.shape[0]!;
    if (b.shape.length !== 2 || b.shape[1] !== rank) throw argumentError('ERR_SHAPE', op, `${where}.b`, `[out, ${rank}]`, shapeText(b.shape));
    if (layer['rank'] !== undefined && layer['rank'] !== rank) {
      throw argumentError('ERR_ARGUMENT', op, `${where}.rank`, `${rank} (a's first dimension) or absent`, describeValue(layer['rank']));
    }
    if (magnitude && (magnitude.shape.length !== 1 || magnitude.shape[0] !== b.shape[0])) {
      throw argumentError('ERR_SHAPE', op, `${where}.magnitude`, `[${b.shape[0]}]`, shapeText(magnitude.shape));
    }
    const scale = layer['scale'];
    if (typeof scale !== 'number' || !Number.isFinite(scale)) throw argumentError('ERR_ARGUMENT', op, `${where}.scale`, 'a finite number', describeValue(scale));
    return { module, a, b, rank, scale, ...(magnitude ? { magnitude } : {}) };
  });
}

/**
 * Writes a PEFT-loadable adapter folder: adapter_config.json (LoraConfig fields: r, lora_alpha,
 * rank_pattern / alpha_pattern for the layers that differ, target_modules from the module names'
 * last components, use_rslora, use_dora, ...; keys sorted and indented as PEFT writes them) and
 * adapter_model.safetensors with PEFT's key names. Fields given in `config` are written as given
 * (other keys too: they must be ones LoraConfig knows) and must describe the layers: each layer's
 * rank and scale are checked against the written config. PEFT's use_dora applies to every module,
 * so either all layers have a magnitude or none has.
 */
export function saveAdapter(dir: string, args: PeftSaveArgs): void {
  const op = 'peft.saveAdapter';
  if (typeof dir !== 'string' || dir === '') throw argumentError('ERR_ARGUMENT', op, 'dir', 'a folder path', describeValue(dir));
  if (!isObject(args)) throw argumentError('ERR_ARGUMENT', op, 'the argument', 'an object { config?, layers, others? }', describeValue(args));
  const given = args.config ?? {};
  if (!isObject(given)) throw argumentError('ERR_ARGUMENT', op, 'config', 'an object of LoraConfig fields', describeValue(given));
  const layers = checkLayers(op, args.layers);
  const withMagnitude = layers.filter((l) => l.magnitude);
  if (withMagnitude.length && withMagnitude.length < layers.length) {
    const without = layers.find((l) => !l.magnitude)!;
    throw argumentError('ERR_ARGUMENT', op, `layers[${quote(without.module)}].magnitude`,
      `a Tensor like layers[${quote(withMagnitude[0]!.module)}].magnitude (PEFT's use_dora applies to every module)`, 'undefined');
  }
  const useDora = withMagnitude.length > 0;
  if (given.use_dora !== undefined && given.use_dora !== useDora) {
    throw argumentError('ERR_ARGUMENT', op, 'config.use_dora', `${useDora} (${useDora ? 'the layers have magnitudes' : 'no layer has a magnitude'})`, describeValue(given.use_dora));
  }
  if (given.use_rslora !== undefined && typeof given.use_rslora !== 'boolean') {
    throw argumentError('ERR_ARGUMENT', op, 'config.use_rslora', 'true or false', describeValue(given.use_rslora));
  }
  const useRslora = given.use_rslora ?? false;
  const alphas = layers.map((l) => alphaOf(l.scale, l.rank, useRslora));
  const r = given.r ?? commonest(layers.map((l) => l.rank));
  const loraAlpha = given.lora_alpha ?? commonest(alphas);
  const config = checkConfig({
    ...CONFIG_DEFAULTS,
    inference_mode: true,
    target_modules: [...new Set(layers.map((l) => l.module.split('.').pop()!))].sort(),
    ...given,
    peft_type: 'LORA',
    r,
    lora_alpha: loraAlpha,
    use_rslora: useRslora,
    use_dora: useDora,
    rank_pattern: given.rank_pattern ?? Object.fromEntries(layers.filter((l) => l.rank !== r).map((l) => [exactPattern(l.module), l.rank])),
    alpha_pattern: given.alpha_pattern ??
      Object.fromEntries(layers.flatMap((l, i) => (alphas[i] !== loraAlpha ? [[exactPattern(l.module), alphas[i]!]] : []))),
  } as PeftLoraConfig, (subject, expected, got) => argumentError('ERR_ARGUMENT', op, `config.${subject}`, expected, got));
  const rules = new ConfigRules(config, (key, why) => argumentError('ERR_ARGUMENT', op, `config pattern ${quote(key)}`, 'a regular expression JavaScript compiles', why));
  for (const layer of layers) {
    const rank = rules.rank(layer.module);
    if (rank !== layer.rank) {
      throw argumentError('ERR_ARGUMENT', op, `config (r, rank_pattern) for module ${quote(layer.module)}`, `rank ${layer.rank} like its a`, `rank ${rank}`);
    }
    const scale = rules.scale(layer.module, rank);
    if (Math.abs(scale - layer.scale) > 1e-12 * Math.abs(layer.scale)) {
      throw argumentError('ERR_ARGUMENT', op, `layers[${quote(layer.module)}].scale`, `${scale} (lora_alpha / ${useRslora ? 'sqrt(r)' : 'r'} from the config)`, String(layer.scale));
    }
  }

  const tensors = new Map<string, Tensor>();
  for (const layer of layers) {
    tensors.set(`${PREFIX}${layer.module}.lora_A.weight`, layer.a);
    tensors.set(`${PREFIX}${layer.module}.lora_B.weight`, layer.b);
    if (layer.magnitude) tensors.set(`${PREFIX}${layer.module}.lora_magnitude_vector`, layer.magnitude);
  }
  for (const [key, tensor] of entriesOf<unknown>(op, 'others', args.others ?? {})) {
    if (typeof key !== 'string' || key === '' || tensors.has(key) || parseKey(key)) {
      throw argumentError('ERR_ARGUMENT', op, 'a key of others', 'a tensor name that names no LoRA tensor (those come from layers)', describeValue(key));
    }
    if (!(tensor instanceof Tensor)) throw argumentError('ERR_ARGUMENT', op, `others[${quote(key)}]`, 'a Tensor', describeValue(tensor));
    tensors.set(key, tensor);
  }
  let text: string;
  try {
    text = JSON.stringify(sortedKeys(config), null, 2);
  } catch (error) {
    throw argumentError('ERR_ARGUMENT', op, 'config', 'JSON-serializable fields', (error as Error).message);
  }
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (error) {
    throw argumentError('ERR_ARGUMENT', op, 'dir', 'a folder that can be created', `${quote(dir)} (${(error as Error).message})`);
  }
  // PEFT's save_pretrained writes the weights with metadata {"format": "pt"}.
  writeSafetensors(path.join(dir, WEIGHTS_FILE), tensors, { format: 'pt' });
  fs.writeFileSync(path.join(dir, CONFIG_FILE), `${text}\n`);
}
