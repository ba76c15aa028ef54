// `npm run test:emulated` (`npm run build:emulated` stops after the build): builds the emulated-CUDA addon (cuda/*.cu compiled by g++ against
// csrc/simt) and runs the same vitest case lists on its `cuda` device, once per fiber schedule
// (forward, reverse, shuffle): a kernel whose result depends on the order of threads between
// barriers — a race — fails at least one of them.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const run = (args, env = {}) => {
  const res = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit', env: { ...process.env, ...env } });
  if (res.status !== 0) process.exit(res.status ?? 1);
};

if (!process.argv.includes('--no-build')) {
  run([require.resolve('cmake-js/bin/cmake-js'), 'compile', '--out', 'build-emu', '--CDLK_CUDA_EMULATED=ON']);
}
if (process.argv.includes('--build-only')) process.exit(0);
const schedules = (process.env.SIMT_EMU_SCHEDULES ?? 'forward,reverse,shuffle').split(',');
for (const schedule of schedules) {
  console.log(`\n== emulated CUDA, SIMT_EMU_SCHED=${schedule}`);
  run([join(dirname(require.resolve('vitest/package.json')), 'vitest.mjs'), 'run'], {
    LORA_KERNELS_ADDON: join(root, 'build-emu/Release/lora_kernels.node'),
    LK_TEST_DEVICES: 'cuda',
    SIMT_EMU_SCHED: schedule,
  });
}
