// Builds the JavaScript that ships: tsc → dist/cjs (CommonJS + .d.ts: lib/ is the API and the
// CLI, bench/ the benchmarks the CLI runs), then a thin ES module facade in dist/esm that
// re-exports the same CommonJS instance, so `import` and `require` share one Tensor class (no
// dual-package hazard) and one native addon.
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
rmSync(join(root, 'dist'), { recursive: true, force: true });
execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', join(root, 'tsconfig.json')], { stdio: 'inherit' });
writeFileSync(join(root, 'dist/cjs/package.json'), JSON.stringify({ type: 'commonjs' }) + '\n');

// The export names come from the compiled module itself; loading it does not load the addon.
const names = Object.keys(require(join(root, 'dist/cjs/lib/index.js'))).filter((n) => n !== '__esModule');
mkdirSync(join(root, 'dist/esm'), { recursive: true });
writeFileSync(join(root, 'dist/esm/package.json'), JSON.stringify({ type: 'module' }) + '\n');
writeFileSync(
  join(root, 'dist/esm/index.js'),
  `import cjs from '../cjs/lib/index.js';\nexport const { ${names.join(', ')} } = cjs;\nexport default cjs;\n`,
);
writeFileSync(join(root, 'dist/esm/index.d.ts'), `export * from '../cjs/lib/index.js';\n`);
