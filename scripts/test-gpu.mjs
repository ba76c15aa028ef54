// `npm run test:gpu`: the vitest case lists on a real CUDA GPU, with the normal nvcc build.
//
// 1. Builds the addon with nvcc into build-gpu/ for the GPU in this machine (its compute
//    capability from nvidia-smi, or LK_CUDA_ARCHS=<list> to choose; a folder of its own, so the
//    everyday build/ is left alone).
// 2. Refuses to go on unless that addon sees a real device: CUDA compiled in, available, not the
//    SIMT emulator. This script never passes on a machine without a GPU.
// 3. Runs every vitest suite with LK_TEST_DEVICES=cuda (test/helpers/devices.ts also fails when
//    the cuda device is missing), i.e. exactly the case lists the emulated build passes in
//    `npm test`: the same results on the GPU are what makes the emulator a trustworthy oracle.
//
//   node scripts/test-gpu.mjs [--no-build] [vitest args...]
//   LORA_KERNELS_ADDON=path node scripts/test-gpu.mjs --no-build     (an addon built elsewhere)
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const args = process.argv.slice(2);
const build = !args.includes('--no-build');
const vitestArgs = args.filter((a) => a !== '--no-build');

function die(message) {
  console.error(`\ntest:gpu FAILED: ${message}\n`);
  process.exit(1);
}

// ---- 1. the nvcc build -----------------------------------------------------------------------------
let addon = process.env.LORA_KERNELS_ADDON ? resolve(process.env.LORA_KERNELS_ADDON) : join(root, 'build-gpu/Release/lora_kernels.node');
if (build) {
  if (process.env.LORA_KERNELS_ADDON) die('LORA_KERNELS_ADDON is set: pass --no-build to test that addon, or unset it');
  let archs = process.env.LK_CUDA_ARCHS;
  if (!archs) {
    const smi = spawnSync('nvidia-smi', ['--query-gpu=compute_cap', '--format=csv,noheader'], { encoding: 'utf8' });
    if (smi.error || smi.status !== 0) {
      die('no NVIDIA GPU here: `nvidia-smi` ' + (smi.error ? 'was not found' : `failed (${(smi.stderr || smi.stdout).trim()})`) +
        '. test:gpu needs a CUDA GPU with its driver (set LK_CUDA_ARCHS=<e.g. 90a> to build anyway).');
    }
    // sm_90 builds as 90a: the Hopper mainloop (wgmma) exists only in that target.
    const caps = [...new Set(smi.stdout.trim().split('\n').map((s) => s.trim().replace('.', '')).filter(Boolean).map((c) => (c === '90' ? '90a' : c)))];
    if (!caps.length) die('nvidia-smi lists no GPU');
    archs = caps.join(';');
  }
  const nvcc = ['/usr/local/cuda/bin/nvcc'].find(existsSync) ?? 'nvcc';
  if (spawnSync(nvcc, ['--version']).status !== 0) die('nvcc (the CUDA toolkit) was not found on PATH or in /usr/local/cuda/bin');
  console.log(`test:gpu: building build-gpu/ with nvcc for sm_${archs.split(';').join(', sm_')}`);
  const res = spawnSync(process.execPath, [require.resolve('cmake-js/bin/cmake-js'), 'compile', '--out', 'build-gpu',
    '--CDLK_CUDA=ON', '--CDLK_CUDA_EMULATED=OFF', `--CDLK_CUDA_ARCHS=${archs}`], { cwd: root, stdio: 'inherit' });
  if (res.status !== 0) die('the nvcc build of the addon failed (see above)');
}
if (!existsSync(addon)) die(`no addon at ${addon} (run without --no-build)`);
if (!existsSync(join(root, 'dist/cjs/lib/index.js'))) die('dist/ is missing: run `npm run build:ts` first');

// ---- 2. a real device, or nothing --------------------------------------------------------------------
const probe = spawnSync(process.execPath, ['-e', 'process.stdout.write(JSON.stringify(require("./").backends()))'], {
  cwd: root, encoding: 'utf8', env: { ...process.env, LORA_KERNELS_ADDON: addon },
});
if (probe.status !== 0) die(`the addon ${addon} does not load:\n${probe.stderr}`);
const { cuda } = JSON.parse(probe.stdout);
console.log(`test:gpu: ${addon}\n  backends().cuda = ${JSON.stringify(cuda)}`);
if (!cuda.compiled) die('this addon was built without CUDA (nvcc was not found when it was built)');
if (cuda.emulated) die('this addon is the SIMT emulator build, not a GPU build: test:gpu only counts results from a real GPU');
if (!cuda.available) die(`CUDA is not available: ${cuda.reason ?? 'no reason given'}`);
if (!cuda.devices?.length) die('CUDA reports no device');

// ---- 3. the case lists on the GPU ------------------------------------------------------------------
const vitest = join(dirname(require.resolve('vitest/package.json')), 'vitest.mjs');
const run = spawnSync(process.execPath, [vitest, 'run', ...vitestArgs], {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, LORA_KERNELS_ADDON: addon, LK_TEST_DEVICES: 'cuda' },
});
if (run.status !== 0) die(`the case lists failed on ${cuda.devices.map((d) => `${d.name} (sm_${String(d.computeCapability).replace('.', '')})`).join(', ')}`);
console.log(`\ntest:gpu: OK on ${cuda.devices.map((d) => d.name).join(', ')}`);
