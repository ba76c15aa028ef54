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
    expect(fs.existsSync(path.join(root, 'dist/cjs/index.d.ts'))).toBe(true);
    expect(fs.readFileSync(path.join(root, 'dist/esm/index.d.ts'), 'utf8')).toContain("export * from '../cjs/index.js'");
  });
});

describe('the native loader', () => {
  it('refuses a stale binary that lacks an op of this version, with a rebuild hint', () => {
    const fs = require('node:fs') as typeof import('node:fs');
    const os = require('node:os') as typeof import('node:os');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lk-stale-'));
    const stale = path.join(dir, 'stale.js');
    fs.writeFileSync(stale, 'module.exports = { backends() { return {}; } };\n');
    const script = `
      try { require(${JSON.stringify(root)}).backends(); console.log('loaded'); }
      catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }`;
    // The child loads only stale.js, never an addon: no sanitizer runtime is needed there.
    const env: NodeJS.ProcessEnv = { ...process.env, LORA_KERNELS_ADDON: stale };
    delete env['LD_PRELOAD'];
    const out = execFileSync(process.execPath, ['-e', script], { encoding: 'utf8', env });
    const res = JSON.parse(out.trim()) as { code: string; message: string };
    expect(res.code).toBe('ERR_UNSUPPORTED');
    expect(res.message).toMatch(/older than this package \(missing deviceAlloc, .*\); rebuild it with "npm run build:native"/);
  });
});
