// `npm run test:emulated` (`npm run build:emulated` stops after the build): builds the emulated-CUDA addon (cuda/*.cu compiled by g++ against
// csrc/simt) and runs the same vitest case lists on its `cuda` device, once per fiber schedule
// (forward, reverse, shuffle): a kernel whose result depends on the order of threads between
// barriers — a race — fails at least one of them. The emulated device reports SIMT_EMU_WORKERS SMs,
// which decides the GEMM engine's tiles and splits: it is pinned to 2 (what CI has anyway), the
// count test/gemm_engine.test.ts's shapes are chosen for. In each schedule the GEMM engine's and
// the attention's suites then run again as a Hopper GPU (SIMT_EMU_CC=9.0): every problem the wgmma
// kernels cover (TMA into swizzled stages, mbarriers, wgmma; cuda/gemm_wgmma.cu,
// cuda/flash_lora_wgmma.cu) runs there, the rest on mma.sync.
// After the schedules, the engine's and the attention suites run once more as a
// Turing GPU (SIMT_EMU_CC=7.5): the FMA mainloop for every dtype (with quant.matmul's dequantizing loader), and flash attention's FMA kernels.
// Before the suites, build-emu/ptx_golden (test/simt/ptx_golden.cu, built with the addon) replays
// the H200 recordings in test/fixtures/gpu-golden/ through the emulated ptx:: wrappers
// (csrc/simt/simt_ptx.h: mma.sync, ldmatrix, cp.async) and checks the emulator's cp.async and
// trap semantics; then build-emu/hopper_golden (test/simt/hopper_golden.cu) replays the wgmma and
// TMA recordings of both files through csrc/simt/simt_hopper.h (mbarrier, TMA, wgmma) with its
// negative tests; any mismatch fails the run.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
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

const goldens = [
  // [program, recordings, what]
  ['ptx_golden', ['ptx_golden.jsonl'], 'emulated ptx:: wrappers against the H200 recordings (test/simt/ptx_golden.cu)'],
  ['hopper_golden', ['ptx_golden.jsonl', 'ptx_golden_tma.jsonl'], 'emulated sm_90 mbarrier / TMA / wgmma against the H200 recordings (test/simt/hopper_golden.cu)'],
];
for (const [program, files, what] of goldens) {
  const golden = join(root, 'build-emu', program);
  const recordings = files.map((f) => join(root, 'test', 'fixtures', 'gpu-golden', f));
  console.log(`\n== ${what}`);
  if (!existsSync(golden)) {
    console.error(`${golden} is missing: build the emulated addon again (npm run build:emulated)`);
    process.exit(1);
  }
  const res = spawnSync(golden, recordings, { cwd: root, encoding: 'utf8', env: { ...process.env, SIMT_EMU_WORKERS: '1' } });
  const lines = `${res.stdout ?? ''}${res.stderr ?? ''}`.trimEnd().split('\n');
  if (res.status !== 0) {
    console.error(lines.join('\n'));
    console.error(`${program} failed (${res.error ?? (res.signal ? `signal ${res.signal}` : `exit ${res.status}`)})`);
    process.exit(res.status || 1);
  }
  const ok = lines.filter((l) => l.startsWith('ok ')).length;
  console.log(`${ok} checks ok; ${lines.find((l) => l.startsWith(`${program}: `) && l.includes('recorded cases')) ?? ''}`);
}
const vitest = join(dirname(require.resolve('vitest/package.json')), 'vitest.mjs');
const emulated = { LORA_KERNELS_ADDON: join(root, 'build-emu/Release/lora_kernels.node'), LK_TEST_DEVICES: 'cuda', SIMT_EMU_WORKERS: '2' };
const schedules = (process.env.SIMT_EMU_SCHEDULES ?? 'forward,reverse,shuffle').split(',');
const hopperSuites = ['test/gemm_engine.test.ts', 'test/lora_linear.test.ts', 'test/lora_backward.test.ts', 'test/dora.test.ts',
  'test/lora_multi.test.ts', 'test/quant_matmul.test.ts', 'test/flash_lora.test.ts'];
for (const schedule of schedules) {
  console.log(`\n== emulated CUDA, SIMT_EMU_SCHED=${schedule}`);
  run([vitest, 'run'], { ...emulated, SIMT_EMU_SCHED: schedule });
  console.log(`\n== emulated CUDA as sm_90 (SIMT_EMU_CC=9.0), SIMT_EMU_SCHED=${schedule}: the GEMM engine's and attention's suites, wgmma where it covers the problem`);
  run([vitest, 'run', ...hopperSuites], { ...emulated, SIMT_EMU_SCHED: schedule, SIMT_EMU_CC: '9.0' });
}
console.log('\n== emulated CUDA as sm_75 (SIMT_EMU_CC=7.5): the GEMM engine\'s and flash attention\'s FMA kernels for every dtype');
run([vitest, 'run', 'test/gemm_engine.test.ts', 'test/lora_linear.test.ts', 'test/lora_backward.test.ts', 'test/quant_matmul.test.ts',
  'test/flash_lora.test.ts'], { ...emulated, SIMT_EMU_CC: '7.5' });
