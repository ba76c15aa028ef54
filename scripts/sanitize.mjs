// `npm run test:sanitize`: the vitest suites under sanitizers, for both devices of the emulated
// build (the CPU kernels and thread pool, and the CUDA kernels on the SIMT emulator).
//
//   asan  AddressSanitizer + UBSan (fatal: -fno-sanitize-recover=all), fibers backend: build-asan/
//   tsan  ThreadSanitizer, threads backend (one OS thread per CUDA thread): build-tsan/
// Each runs the suites, then the GEMM engine's suite again as an sm_90 (the wgmma mainloop).
//
// Each configuration is its own cmake-js out folder (LK_SANITIZE, see CMakeLists.txt). node is not
// instrumented: the sanitizer runtime is LD_PRELOADed into the vitest worker processes only
// (test/simt/vitest.sanitize.mts), which load the addon. Reports go to build-sanitize/<step>/; the
// step fails on a test failure, a non-zero exit, or any report file holding a sanitizer report.
// TSan reports inside node / V8 internals are suppressed by test/simt/tsan.supp (never our code).
//
//   node scripts/sanitize.mjs [asan] [tsan] [--no-build]      (default: both)
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
const vitest = join(dirname(require.resolve('vitest/package.json')), 'vitest.mjs');
const CXX = process.env.CXX || 'g++';

const args = process.argv.slice(2);
const build = !args.includes('--no-build');
const picked = args.filter((a) => !a.startsWith('--'));
for (const p of picked) {
  if (p !== 'asan' && p !== 'tsan') {
    console.error(`sanitize: unknown step '${p}' (asan, tsan)`);
    process.exit(2);
  }
}
const steps = picked.length ? picked : ['asan', 'tsan'];

function runtime(name) {
  const res = spawnSync(CXX, [`-print-file-name=${name}`], { encoding: 'utf8' });
  const path = res.stdout?.trim();
  if (res.status !== 0 || !path || !path.startsWith('/')) {
    console.error(`sanitize: ${CXX} does not know ${name} (install the compiler's sanitizer runtimes, e.g. libasan8 libubsan1 libtsan2)`);
    process.exit(2);
  }
  return path;
}

const CONFIGS = {
  asan: {
    title: 'AddressSanitizer + UndefinedBehaviorSanitizer (fibers backend)',
    out: 'build-asan',
    // -O1 (the sanitizers' usual level): UBSan's checks double g++'s time at -O3, and this build was
    // the longest step of CI (825 s at -O3 on 2 cores); the tests run a little slower.
    cmake: ['--CDLK_CUDA_EMULATED=ON', '--CDLK_SIMT_BACKEND=fibers', '--CDLK_SANITIZE=address,undefined', '--CDCMAKE_CXX_FLAGS_RELEASE=-O1 -DNDEBUG'],
    preload: () => `${runtime('libasan.so')} ${runtime('libubsan.so')}`,
    env: (logs) => ({
      // node leaks by design; the OOM tests ask for absurd sizes and expect ERR_OUT_OF_MEMORY.
      ASAN_OPTIONS: `detect_leaks=0:allocator_may_return_null=1:log_path=${logs}/asan${symbolizerOption}`,
      UBSAN_OPTIONS: `halt_on_error=1:print_stacktrace=1:log_path=${logs}/ubsan${symbolizerOption}`,
    }),
  },
  tsan: {
    title: 'ThreadSanitizer (threads backend)',
    out: 'build-tsan',
    // The CLI suite runs every GPU benchmark end to end in a child process: with one OS thread per
    // CUDA thread that is minutes of the same kernels the op suites run here anyway. init.loftq
    // (340 s under TSan) and bnb.loadNf4 (20 s) only compose ops whose own suites run here: host-side
    // TypeScript over the quantize / dequantize / GEMM kernels, no threads of their own (ASan runs them).
    // lora.compress / merge: the SVD kernels run 512–1024 threads per block with a barrier per
    // Jacobi round (~N per sweep), each an OS thread here: the suite did not finish in 20 min. ASan
    // and the three fiber schedules run them. The linalg suite runs its CPU half (LK_TEST_FOCUSED).
    exclude: ['test/cli.test.ts', 'test/init.test.ts', 'test/bnb.test.ts', 'test/lora_merge.test.ts'],
    cmake: ['--CDLK_CUDA_EMULATED=ON', '--CDLK_SIMT_BACKEND=threads', '--CDLK_SANITIZE=thread'],
    preload: () => runtime('libtsan.so'),
    env: (logs) => ({
      // Suites that read it (test/flash_lora.test.ts) run a small case list of their own.
      LK_TEST_FOCUSED: '1',
      // ignore_noninstrumented_modules: libc interceptors (strcmp, memcpy, malloc) called from
      // node's own uninstrumented code are not race checks of ours; our code is instrumented.
      TSAN_OPTIONS: ['halt_on_error=1', 'report_signal_unsafe=0', 'allocator_may_return_null=1', 'second_deadlock_stack=1',
        'ignore_noninstrumented_modules=1',
        `suppressions=${join(root, 'test/simt/tsan.supp')}`, `log_path=${logs}/tsan`].join(':') + symbolizerOption,
    }),
  },
};

// A report file counts when it holds a report, not just a warning such as "failed to allocate".
const REPORT = /ERROR: (AddressSanitizer|LeakSanitizer|ThreadSanitizer)|WARNING: ThreadSanitizer|runtime error:|SUMMARY: \w+Sanitizer/;

// Symbolization: the addon's functions are hidden symbols, so a runtime without llvm-symbolizer
// (gcc's libtsan falls back to libbacktrace) prints `<null> <null> (lora_kernels.node+0x…)`.
// Use llvm-symbolizer when it is installed, and resolve what is left with binutils' addr2line.
const llvmSymbolizer = spawnSync('sh', ['-c', 'command -v llvm-symbolizer'], { encoding: 'utf8' }).stdout?.trim();
const symbolizerOption = llvmSymbolizer ? `:external_symbolizer_path=${llvmSymbolizer}` : '';
function symbolize(text, addon) {
  return text.replace(/<null> <null> \(lora_kernels\.node\+(0x[0-9a-f]+)\)/g, (whole, offset) => {
    const res = spawnSync('addr2line', ['-f', '-C', '-i', '-e', addon, offset], { encoding: 'utf8' });
    const lines = res.status === 0 ? res.stdout.trim().split('\n') : [];
    if (lines.length < 2 || lines[0] === '??') return whole;
    const where = [];
    for (let i = 0; i + 1 < lines.length; i += 2) where.push(lines[i + 1].replace(`${root}/`, ''));
    const chain = where.slice(0, 3).join(' ← inlined in ') + (where.length > 3 ? ' ← …' : '');
    return `${lines[0]} ${chain} (lora_kernels.node+${offset})`;
  });
}

const timings = [];
let failed = false;
for (const step of steps) {
  const c = CONFIGS[step];
  console.log(`\n== sanitize ${step}: ${c.title}`);
  const t0 = Date.now();
  if (build) {
    const res = spawnSync(process.execPath, [cmakeJs, 'compile', '--out', c.out, ...c.cmake], { cwd: root, stdio: 'inherit' });
    if (res.status !== 0) {
      console.error(`sanitize ${step}: the build failed`);
      process.exit(res.status ?? 1);
    }
  }
  const t1 = Date.now();
  const addon = join(root, c.out, 'Release/lora_kernels.node');
  const logs = join(root, 'build-sanitize', step);
  rmSync(logs, { recursive: true, force: true });
  mkdirSync(logs, { recursive: true });
  const vitestRun = (args, env) => spawnSync(process.execPath, [vitest, 'run', '--config', 'test/simt/vitest.sanitize.mts', ...args], {
    cwd: root,
    stdio: 'inherit',
    env: { ...process.env, LORA_KERNELS_ADDON: addon, LK_SANITIZER_PRELOAD: c.preload(), ...env, ...c.env(logs) },
  });
  // both devices, and fail if the emulated one were missing
  const res = vitestRun((c.exclude ?? []).flatMap((f) => ['--exclude', f]), { LK_TEST_DEVICES: 'cpu,cuda' });
  // The GEMM engine's suite and the attention's Hopper cases once more as a Hopper GPU
  // (SIMT_EMU_CC=9.0): the wgmma kernels' producer / consumer warpgroups and the emulated
  // mbarriers and TMA under the sanitizer.
  const hopper = vitestRun(['test/gemm_engine.test.ts', 'test/flash_lora.test.ts', '-t', 'GEMM engine|sm_90'],
    { LK_TEST_DEVICES: 'cuda', SIMT_EMU_CC: '9.0' });
  const t2 = Date.now();
  const reports = readdirSync(logs).map((f) => ({ f, text: symbolize(readFileSync(join(logs, f), 'utf8'), addon) }));
  const real = reports.filter((r) => REPORT.test(r.text));
  for (const r of reports) {
    console.log(`\n---- ${real.includes(r) ? 'SANITIZER REPORT' : 'sanitizer message'} build-sanitize/${step}/${r.f}\n${r.text}`);
  }
  const ok = res.status === 0 && hopper.status === 0 && real.length === 0;
  if (!ok) failed = true;
  timings.push(`${step}: build ${((t1 - t0) / 1000).toFixed(1)} s, tests ${((t2 - t1) / 1000).toFixed(1)} s, ` +
    `${ok ? 'OK' : `FAILED (vitest exit ${res.status ?? res.signal}, as sm_90 ${hopper.status ?? hopper.signal}, ${real.length} report file(s))`}`);
}
console.log(`\nsanitize:\n  ${timings.join('\n  ')}`);
process.exit(failed ? 1 : 0);
