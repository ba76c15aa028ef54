// `npm run test:install`: the package as users get it. Packs this checkout (dist/ and the
// prebuilds for this platform must exist: `npm run build:ts`, `npm run prebuild`), checks what the
// tarball holds, installs it into a new temporary project with --ignore-scripts (no install
// script may be needed), then there: `require` and `import` it and run lora.forward against the
// float64 reference, type-check a TypeScript consumer, run `npx lora-kernels info`, check that a
// stale local build in the installed package does not shadow the prebuild, and build from source
// there with `npx lora-kernels build` (skip that with --no-build-from-source).
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { writeStaleCopy } from '../test/helpers/binaries.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const platformDir = `prebuilds/${process.platform}-${process.arch}`;

function die(message) {
  console.error(`\ntest:install FAILED: ${message}\n`);
  process.exit(1);
}

function check(condition, message) {
  if (!condition) die(message);
  console.log(`  ok  ${message}`);
}

function run(cmd, args, opts = {}) {
  const res = spawnSync(cmd, args, { encoding: 'utf8', shell: process.platform === 'win32', ...opts });
  if (res.status !== 0) die(`${cmd} ${args.join(' ')} failed (${res.status ?? res.signal}):\n${res.stdout}\n${res.stderr}`);
  return res;
}

if (!existsSync(join(root, platformDir))) die(`no ${platformDir}/ here: run "npm run prebuild" first`);
if (!existsSync(join(root, 'dist/cjs/lib/index.js'))) die('no dist/: run "npm run build:ts" first');

const work = mkdtempSync(join(tmpdir(), 'lk-install-'));
try {
  console.log(`test:install: packing into ${work}`);
  const packed = JSON.parse(run(npm, ['pack', '--ignore-scripts', '--json', '--pack-destination', work], { cwd: root }).stdout)[0];
  const files = packed.files.map((f) => f.path);
  check(files.some((f) => f.startsWith(`${platformDir}/`) && f.endsWith('.node')), `the tarball has a prebuild in ${platformDir}/`);
  check(!files.some((f) => f.startsWith('build/') || (f.endsWith('.node') && !f.startsWith('prebuilds/'))), 'the tarball has no local build (build/, stray .node)');
  for (const f of ['dist/cjs/lib/index.js', 'dist/cjs/lib/index.d.ts', 'dist/esm/index.js', 'dist/cjs/lib/cli.js', 'dist/cjs/bench/run.js', 'CMakeLists.txt']) {
    check(files.includes(f), `the tarball has ${f}`);
  }
  console.log(`  ..  ${packed.filename}: ${(packed.size / 2 ** 20).toFixed(1)} MiB packed, ${(packed.unpackedSize / 2 ** 20).toFixed(1)} MiB unpacked, ${files.length} files`);

  const project = join(work, 'project');
  mkdirSync(project);
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'lk-install-test', version: '1.0.0', private: true }));
  run(npm, ['install', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline', join(work, packed.filename)], { cwd: project });
  const installed = join(project, 'node_modules', 'lora-kernels');

  const usage = (source) => `
    const { Tensor, lora, reference, buildInfo, backends } = lk;
    const x = Tensor.randn([3, 37], { seed: 1 }), weight = Tensor.randn([29, 37], { seed: 2 });
    const a = Tensor.randn([5, 37], { seed: 3 }), b = Tensor.randn([29, 5], { seed: 4 });
    const y = lora.forward({ x, weight, a, b, scale: 0.5 });
    reference.assertClose(y, reference.lora.forward({ x, weight, a, b, scale: 0.5 }), { dtype: 'float32' });
    console.log(JSON.stringify({ ${source}, shape: y.shape, binary: buildInfo().binary, simd: backends().cpu.simd }));`;
  writeFileSync(join(project, 'use.cjs'), `const lk = require('lora-kernels');${usage("kind: 'require'")}`);
  writeFileSync(join(project, 'use.mjs'), `import * as lk from 'lora-kernels';${usage("kind: 'import'")}`);
  for (const script of ['use.cjs', 'use.mjs']) {
    const out = JSON.parse(run(process.execPath, [script], { cwd: project }).stdout.trim().split('\n').pop());
    check(out.shape.join() === '3,29', `${out.kind}: lora.forward runs and matches the float64 reference (SIMD ${out.simd})`);
    check(out.binary.source === 'prebuild' && out.binary.path.startsWith(installed), `${out.kind}: the prebuild serves (${out.binary.path.slice(installed.length + 1)})`);
  }

  writeFileSync(join(project, 'use.mts'), `import { lora, Tensor, type DType } from 'lora-kernels';\nconst dtype: DType = 'float32';\nconst y: Tensor = lora.forward({ x: Tensor.randn([1, 4], { dtype }), weight: Tensor.randn([2, 4]) });\nexport const n: number = y.shape[0]!;\n`);
  writeFileSync(join(project, 'use.cts'), `import lk = require('lora-kernels');\nexport const shape: readonly number[] = lk.lora.forward({ x: lk.Tensor.randn([1, 4]), weight: lk.Tensor.randn([2, 4]) }).shape;\n`);
  run(process.execPath, [require.resolve('typescript/bin/tsc'), '--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext',
    '--types', 'node', '--typeRoots', join(root, 'node_modules/@types'), 'use.mts', 'use.cts'], { cwd: project });
  check(true, 'a TypeScript consumer type-checks with the shipped .d.ts (import and require, nodenext)');

  const info = run(npm, ['exec', '--no', '--', 'lora-kernels', 'info'], { cwd: project }).stdout;
  check(/binary\s+.*\(prebuild\)/.test(info), '`npx lora-kernels info` runs from the installed bin and names the prebuild');

  const prebuild = join(installed, platformDir, readdirSync(join(installed, platformDir)).find((f) => f.endsWith('.node')));
  mkdirSync(join(installed, 'build', 'Release'), { recursive: true });
  const staleVersion = writeStaleCopy(prebuild, join(installed, 'build', 'Release', 'lora_kernels.node'));
  const stale = run(process.execPath, ['use.cjs'], { cwd: project });
  const staleOut = JSON.parse(stale.stdout.trim().split('\n').pop());
  check(staleOut.binary.source === 'prebuild', `a stale local build (version ${staleVersion}) does not shadow the prebuild`);
  check(/LORA_KERNELS_SKIPPED_BINARY|ignoring .*built for version/.test(stale.stderr) && staleOut.binary.skipped.length === 1,
    'and it is not silent: a process warning and buildInfo().binary.skipped name it');
  rmSync(join(installed, 'build'), { recursive: true, force: true });

  // The one command the loader's error names, in the installed package: a CPU-only build is
  // enough to show that what ships builds (the CUDA sources compile in the prebuild above).
  if (!process.argv.includes('--no-build-from-source')) {
    run(npm, ['exec', '--no', '--', 'lora-kernels', 'build', '--no-cuda'], { cwd: project, stdio: ['ignore', 'inherit', 'inherit'] });
    const local = JSON.parse(run(process.execPath, ['use.cjs'], { cwd: project }).stdout.trim().split('\n').pop());
    check(local.binary.source === 'local build' && local.binary.skipped.length === 0,
      '`npx lora-kernels build` builds from the shipped sources and that build of this version serves');
  }
  console.log('test:install: OK');
} finally {
  rmSync(work, { recursive: true, force: true });
}
