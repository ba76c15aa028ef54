import { execFileSync } from 'node:child_process';
import * as path from 'node:path';

import { describe, expect, it } from 'vitest';

const root = path.resolve(__dirname, '..');

describe('the built package', () => {
  it('loads with import and require, sharing one Tensor class and one addon', () => {
    const script = `
      const { createRequire } = await import('node:module');
      const require = createRequire(${JSON.stringify(path.join(root, 'package.json'))});
      const esm = await import(${JSON.stringify(path.join(root, 'dist/esm/index.js'))});
      const cjs = require(${JSON.stringify(root)});
      const x = esm.Tensor.randn([2, 5], { seed: 1 });
      const y = cjs.lora.forward({ x, weight: cjs.Tensor.randn([3, 5], { seed: 2 }) });
      console.log(JSON.stringify({ same: esm.Tensor === cjs.Tensor, shape: y.shape, simd: esm.backends().cpu.simd,
        defaultExport: typeof esm.default.lora.forward }));
    `;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: root, encoding: 'utf8' });
    const res = JSON.parse(out.trim().split('\n').pop()!) as { same: boolean; shape: number[]; simd: string; defaultExport: string };
    expect(res.same).toBe(true);
    expect(res.shape).toEqual([2, 3]);
    expect(res.defaultExport).toBe('function');
  });

  it('ships type declarations for both entry points', async () => {
    const fs = await import('node:fs');
    expect(fs.existsSync(path.join(root, 'dist/cjs/lib/index.d.ts'))).toBe(true);
    expect(fs.readFileSync(path.join(root, 'dist/esm/index.d.ts'), 'utf8')).toContain("export * from '../cjs/lib/index.js'");
  });
});
