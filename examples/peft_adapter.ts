/**
 * Loads a PEFT LoRA adapter and runs it: peft.loadAdapter, then per module lora.forward (or
 * lora.doraForward for DoRA) on random base weights of the right shapes, checked against the
 * float64 references.
 *
 *   npm run example:peft                 synthetic adapters, written with peft.saveAdapter first
 *   node build/ts-examples/examples/peft_adapter.js path/to/adapter   a folder PEFT saved
 *
 * Without an argument it writes two small adapters to a temporary folder: "lora" (q_proj rank 8,
 * v_proj rank 4, so adapter_config.json needs a rank_pattern) and "dora" (both modules with DoRA
 * magnitudes and rsLoRA scaling: PEFT's use_dora applies to every module of an adapter).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { lora, peft, reference, Tensor } from '../lib/index.js';

export interface ModuleResult {
  adapter: string;
  module: string;
  rank: number;
  scale: number;
  dora: boolean;
  maxAbsError: number;
  ok: boolean;
}

const IN_FEATURES = 64;

/** A of PEFT's initial scale (about 1/sqrt(in)); B small but non-zero, as after training (PEFT starts it at 0). */
function syntheticLayer(rank: number, outFeatures: number, scale: number, seed: number, dora: boolean) {
  const a = Tensor.from(Tensor.randn([rank, IN_FEATURES], { seed }).toFloat32().map((v) => v / Math.sqrt(IN_FEATURES)), [rank, IN_FEATURES]);
  const b = Tensor.from(Tensor.randn([outFeatures, rank], { seed: seed + 1 }).toFloat32().map((v) => 0.1 * v), [outFeatures, rank]);
  const magnitude = dora ? Tensor.from(Tensor.randn([outFeatures], { seed: seed + 2 }).toFloat32().map((v) => 1 + 0.1 * v), [outFeatures]) : undefined;
  return { a, b, scale, ...(magnitude ? { magnitude } : {}) };
}

/** Writes the two synthetic adapters into `dir`; returns their folders by name. */
export function writeSyntheticAdapters(dir: string): Map<string, string> {
  const folders = new Map([['lora', path.join(dir, 'lora')], ['dora', path.join(dir, 'dora')]]);
  peft.saveAdapter(folders.get('lora')!, {
    layers: {
      'model.layers.0.self_attn.q_proj': syntheticLayer(8, 48, 16 / 8, 1, false),
      'model.layers.0.self_attn.v_proj': syntheticLayer(4, 32, 16 / 4, 11, false),
    },
    config: { task_type: 'CAUSAL_LM' },
  });
  peft.saveAdapter(folders.get('dora')!, {
    layers: {
      'model.layers.0.self_attn.q_proj': syntheticLayer(16, 48, 32 / Math.sqrt(16), 21, true),
      'model.layers.0.self_attn.v_proj': syntheticLayer(16, 32, 32 / Math.sqrt(16), 31, true),
    },
    config: { use_rslora: true, task_type: 'CAUSAL_LM' },
  });
  return folders;
}

/** Loads the adapter in `dir` and runs each module on random inputs against the reference. */
export function runAdapter(name: string, dir: string, seed = 1): ModuleResult[] {
  const adapter = peft.loadAdapter(dir, { dtype: 'float32' });
  const results: ModuleResult[] = [];
  let s = seed * 1000;
  for (const [module, layer] of adapter.layers) {
    const [outFeatures, inFeatures] = [layer.b.shape[0]!, layer.a.shape[1]!];
    const x = Tensor.randn([4, inFeatures], { seed: s++ });
    const weight = Tensor.randn([outFeatures, inFeatures], { seed: s++ });
    const bias = Tensor.randn([outFeatures], { seed: s++ });
    const args = { x, weight, bias, a: layer.a, b: layer.b, scale: layer.scale };
    const report = layer.magnitude
      ? reference.compareClose(lora.doraForward({ ...args, magnitude: layer.magnitude }), reference.lora.doraForward({ ...args, magnitude: layer.magnitude }), { dtype: 'float32' })
      : reference.compareClose(lora.forward(args), reference.lora.forward(args), { dtype: 'float32' });
    results.push({ adapter: name, module, rank: layer.rank, scale: layer.scale, dora: !!layer.magnitude, maxAbsError: report.maxAbsError, ok: report.ok });
  }
  return results;
}

function table(results: ModuleResult[]): string {
  const rows = [['adapter', 'module', 'rank', 'scale', 'kind', 'max |err|', 'check'],
    ...results.map((r) => [r.adapter, r.module, String(r.rank), r.scale.toFixed(4), r.dora ? 'DoRA' : 'LoRA', r.maxAbsError.toExponential(2), r.ok ? 'ok' : 'FAIL'])];
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((row) => row[c]!.length)));
  return rows.map((row) => row.map((cell, c) => (c === 2 || c === 3 ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!))).join('  ').trimEnd()).join('\n');
}

export function main(argv: string[]): number {
  let results: ModuleResult[];
  if (argv[0] !== undefined) {
    results = runAdapter(path.basename(path.resolve(argv[0])), argv[0]);
  } else {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lk-peft-example-'));
    try {
      results = [...writeSyntheticAdapters(dir)].flatMap(([name, folder], i) => runAdapter(name, folder, i + 1));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  console.log(table(results));
  const failed = results.filter((r) => !r.ok).length;
  console.log(failed ? `${failed} of ${results.length} modules differ from the float64 reference` :
    `all ${results.length} modules match the float64 reference (float32 tolerances)`);
  return failed ? 1 : 0;
}

if (typeof require !== 'undefined' && require.main === module) process.exitCode = main(process.argv.slice(2));
