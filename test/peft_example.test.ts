import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { peft, Tensor } from '../lib/index.js';

const root = path.resolve(__dirname, '..');
// A folder of its own (build-* is ignored by git), not build/ts-examples: runs of the example
// script and of this test never write over each other.
let outDir = '';
let script = '';

function run(args: string[]): string {
  return execFileSync(process.execPath, [script, ...args], { cwd: root, encoding: 'utf8' });
}

/** The table rows as [adapter, module, rank, scale, kind, max |err|, check]. */
function rows(output: string): string[][] {
  return output.trim().split('\n').slice(1, -1).map((line) => line.split(/\s{2,}/));
}

beforeAll(() => {
  outDir = fs.mkdtempSync(path.join(root, 'build-peft-example-'));
  execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', path.join(root, 'tsconfig.examples.json'), '--outDir', outDir], { cwd: root, stdio: 'pipe' });
  script = path.join(outDir, 'examples', 'peft_adapter.js');
});

afterAll(() => {
  if (outDir) fs.rmSync(outDir, { recursive: true, force: true });
});

describe('examples/peft_adapter.ts', () => {
  it('without an argument: writes two synthetic adapters, loads them, and every module matches the reference', () => {
    const output = run([]);
    expect(output).toMatch(/^adapter\s+module\s+rank\s+scale\s+kind\s+max \|err\|\s+check\n/);
    expect(rows(output).map((r) => [r[0], r[1], r[2], r[3], r[4], r[6]])).toEqual([
      ['lora', 'model.layers.0.self_attn.q_proj', '8', '2.0000', 'LoRA', 'ok'],
      ['lora', 'model.layers.0.self_attn.v_proj', '4', '4.0000', 'LoRA', 'ok'],
      ['dora', 'model.layers.0.self_attn.q_proj', '16', '8.0000', 'DoRA', 'ok'],
      ['dora', 'model.layers.0.self_attn.v_proj', '16', '8.0000', 'DoRA', 'ok'],
    ]);
    for (const row of rows(output)) expect(Number(row[5])).toBeLessThan(1e-3);
    expect(output.trim().split('\n').pop()).toBe('all 4 modules match the float64 reference (float32 tolerances)');
  });

  it('with an adapter folder: runs that adapter', () => {
    const dir = path.join(outDir, 'my-adapter');
    peft.saveAdapter(dir, {
      layers: { 'encoder.fc1': { a: Tensor.randn([3, 20], { seed: 1 }), b: Tensor.randn([9, 3], { seed: 2 }), scale: 0.75 } },
    });
    const output = run([dir]);
    expect(rows(output).map((r) => [r[0], r[1], r[2], r[3], r[4], r[6]])).toEqual([['my-adapter', 'encoder.fc1', '3', '0.7500', 'LoRA', 'ok']]);
  });
});
