#!/usr/bin/env node
/**
 * `npx lora-kernels <command>`:
 *   info [--json]                      version, binary, build flags, CPU SIMD level, CUDA devices
 *   bench [op...] [--device cpu|cuda] [--quick] [--out DIR] [--list]
 *                                      the microbenchmarks with a progress line and a final table
 *   build [--cuda-archs LIST] [--no-cuda]
 *                                      builds the native binary from source in the package
 *                                      (CMake ≥ 3.19, a C++17 compiler; nvcc for CUDA)
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { backends, buildInfo } from './backends.js';
import { LoraKernelsError } from './errors.js';
import { packageRoot, packageVersion, platformTag } from './loader.js';

const USAGE = `usage: lora-kernels <command>

  info [--json]                       version, binary in use, build flags, CPU SIMD level, CUDA devices
  bench [op...] [--device cpu|cuda] [--quick] [--out DIR] [--list]
                                      run the microbenchmarks (all, or the named ops) beside PyTorch in the
                                      same run; JSON lines go to DIR (default: bench/results in a source
                                      checkout, else none)
  build [--cuda-archs LIST] [--no-cuda]
                                      build the native binary from source into <package>/build
                                      (CMake >= 3.19 and a C++17 compiler; nvcc for CUDA; LIST like "90"
                                      or "release" for sm_75 ... sm_120)
`;

function fail(message: string, code = 1): never {
  process.stderr.write(`lora-kernels: ${message}\n`);
  process.exit(code);
}

/** `--name value` / `--name=value` from args; removes what it reads. */
function takeOption(args: string[], name: string): string | undefined {
  const i = args.findIndex((a) => a === name || a.startsWith(`${name}=`));
  if (i < 0) return undefined;
  const [arg] = args.splice(i, 1);
  if (arg!.includes('=')) return arg!.slice(name.length + 1);
  const value = args.splice(i, 1)[0];
  if (value === undefined) fail(`${name} needs a value`, 2);
  return value;
}

function takeFlag(args: string[], name: string): boolean {
  const i = args.indexOf(name);
  if (i >= 0) args.splice(i, 1);
  return i >= 0;
}

function gib(bytes: number): string {
  return `${(bytes / 2 ** 30).toFixed(1)} GiB`;
}

function info(args: string[]): void {
  const json = takeFlag(args, '--json');
  if (args.length) fail(`info: unexpected argument ${args[0]}`, 2);
  const build = buildInfo();
  const available = backends();
  if (json) {
    console.log(JSON.stringify({ version: packageVersion(), node: process.versions.node, platform: platformTag(), build, backends: available }, null, 2));
    return;
  }
  const cuda = build.cuda.compiled
    ? `${build.cuda.emulated ? 'emulated on the CPU (SIMT test build)' : `CUDA ${build.cuda.toolkit} for ${build.cuda.archs.map((a) => `sm_${a}`).join(', ')}`}` +
      (build.cuda.wgmma ? ' (with the sm_90a wgmma mainloop)' : '')
    : 'not compiled in';
  const lines: [string, string][] = [
    ['version', `lora-kernels ${packageVersion()} (node ${process.versions.node}, ${platformTag()})`],
    ['binary', `${build.binary.path} (${build.binary.source})`],
    ...build.binary.skipped.map((s): [string, string] => ['skipped', `${s.path}: ${s.reason}`]),
    ['build', `${build.buildType}, ${build.compiler}, Node-API ${build.napiVersion}${build.sanitize ? `, sanitizers ${build.sanitize}` : ''}`],
    ['cpu kernels', `${build.simdLevels.join(', ')} compiled; using ${available.cpu.simd} with ${available.cpu.threads} threads`],
    ['cuda kernels', cuda],
    ['cuda', available.cuda.available ? `${available.cuda.devices.length} device(s)` : `not available: ${available.cuda.reason}`],
    ...available.cuda.devices.map((d, i): [string, string] => [`  cuda:${i}`, `${d.name}, compute capability ${d.computeCapability}, ${gib(d.memoryBytes)}, GEMM mainloop ${d.gemmMainloop}`]),
  ];
  const width = Math.max(...lines.map(([k]) => k.length));
  for (const [k, v] of lines) console.log(`${k.padEnd(width)}  ${v}`);
}

const BENCH_USAGE = `usage: lora-kernels bench [op...] [--device cpu|cuda] [--quick] [--out DIR] [--list]

  op...              lora.forward, lora.forwardMulti, lora.doraForward, lora.backward, quant.matmul,
                     linalg, attention.flashLora (default: all; --list prints them)
  --device cpu|cuda  cpu (default): the CPU case lists. cuda: the GPU case lists on the first CUDA
                     device: per op the wall time per call (with a device synchronize) and the
                     CUDA-event time per call over a batch of back-to-back calls, TFLOP/s and GB/s,
                     torch on the same GPU timed the same way, the ratios and the goals met
  --quick            with --device cuda: tiny shapes and 2 iterations, for plumbing tests only
                     (the timings mean nothing; also runs on the emulated CUDA build; no JSON
                     lines unless --out is given)
  --out DIR          append JSON lines to DIR/<op>.jsonl (cuda: DIR/<op>_cuda.jsonl); default:
                     bench/results in a source checkout, else none
  --list             print the op names

The torch peer runs in python: LORA_KERNELS_PYTHON, else the first python3 on PATH that has
torch, else /usr/bin/python3; it is stopped after LORA_KERNELS_PEER_TIMEOUT_S seconds (default
600 on the CPU, 120 on the GPU), and the run goes on without it when it is missing. Each table
is preceded by what the peer ran on (its BLAS and a 512³ GEMM's GFLOP/s; on a GPU, CUDA and
cuBLAS), with a warning when that is the reference BLAS.
`;

async function bench(args: string[]): Promise<void> {
  if (takeFlag(args, '--help') || takeFlag(args, '-h')) {
    process.stdout.write(BENCH_USAGE);
    return;
  }
  const out = takeOption(args, '--out');
  const device = takeOption(args, '--device') ?? 'cpu';
  if (device !== 'cpu' && device !== 'cuda') fail(`bench: --device must be cpu or cuda, got ${device}`, 2);
  const quick = takeFlag(args, '--quick');
  const { BENCHES, runBenchmarks } = await import('../bench/run.js');
  if (takeFlag(args, '--list')) {
    console.log(Object.keys(BENCHES).join('\n'));
    return;
  }
  const flag = args.find((a) => a.startsWith('-'));
  if (flag) fail(`bench: unknown option ${flag}`, 2);
  const root = packageRoot();
  // A --quick run's timings mean nothing: they go nowhere unless asked for.
  const resultsDir = out ? path.resolve(out) : !quick && fs.existsSync(path.join(root, '.git')) ? path.join(root, 'bench', 'results') : undefined;
  if (!resultsDir) console.log('note: results are printed only; pass --out DIR to keep them as JSON lines');
  try {
    await runBenchmarks(args, { resultsDir, device, quick });
  } catch (error) {
    if (error instanceof LoraKernelsError) throw error;  // main() prints it with its code
    fail((error as Error).message);
  }
}

function build(args: string[]): void {
  const archs = takeOption(args, '--cuda-archs');
  const noCuda = takeFlag(args, '--no-cuda');
  if (args.length) fail(`build: unexpected argument ${args[0]}`, 2);
  const root = packageRoot();
  const cmake = spawnSync('cmake', ['--version'], { encoding: 'utf8' });
  if (cmake.error || cmake.status !== 0) fail('build: CMake (>= 3.19) was not found on PATH; install it and a C++17 compiler, then run this again');
  const cmakeArgs = [require.resolve('cmake-js/bin/cmake-js'), 'compile', '--directory', root, '--out', path.join(root, 'build'),
    ...(archs ? [`--CDLK_CUDA_ARCHS=${archs}`] : []), ...(noCuda ? ['--CDLK_CUDA=OFF'] : [])];
  console.log(`lora-kernels: building from source in ${root}`);
  const res = spawnSync(process.execPath, cmakeArgs, { cwd: root, stdio: 'inherit' });
  if (res.status !== 0) fail(`build: cmake-js failed (exit ${res.status ?? res.signal}); see its output above`);
  // A fresh process loads what was just built, so a broken binary is reported here, not at first use.
  const check = spawnSync(process.execPath, ['-e', `const lk = require(${JSON.stringify(root)}); const b = lk.buildInfo(); console.log(b.binary.path + ' (' + b.binary.source + ')')`], { encoding: 'utf8' });
  if (check.status !== 0) fail(`build: the new binary does not load: ${check.stderr.trim()}`);
  console.log(`lora-kernels: built ${check.stdout.trim()}`);
}

async function main(argv: string[]): Promise<void> {
  const [command, ...args] = argv;
  switch (command) {
    case 'info': return info(args);
    case 'bench': return bench(args);
    case 'build': return build(args);
    case '--version': case '-v': console.log(packageVersion()); return;
    case undefined: case 'help': case '--help': case '-h': process.stdout.write(USAGE); return;
    default: fail(`unknown command ${command}\n\n${USAGE}`, 2);
  }
}

main(process.argv.slice(2)).catch((error: unknown) => {
  if (error instanceof LoraKernelsError) fail(`${error.message}${error.code === 'ERR_UNSUPPORTED' ? '' : ` (${error.code})`}`);
  fail((error as Error).stack ?? String(error));
});

