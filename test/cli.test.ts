/** `npx lora-kernels`: the CLI (lib/cli.ts) as users run it, from the built package. */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { describe, expect, it } from 'vitest';

import { backends } from '../lib/index.js';
import { repoRoot } from './helpers/child.js';

/** The CLI with the normal binary (without this suite's LORA_KERNELS_ADDON and sanitizer preload). */
function cli(...args: string[]) {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env['LORA_KERNELS_ADDON'];
  delete env['LD_PRELOAD'];
  return cliWithEnv(env, ...args);
}

/** The CLI in exactly this environment. */
function cliWithEnv(env: NodeJS.ProcessEnv, ...args: string[]) {
  return spawnSync(process.execPath, [path.join(repoRoot, 'dist/cjs/lib/cli.js'), ...args], { encoding: 'utf8', env, timeout: 60_000 });
}

const STACK_FRAME = /^\s+at /m;

describe('lora-kernels CLI', () => {
  it('info prints the version, the binary, build flags, the SIMD level and CUDA', () => {
    const res = cli('info');
    expect(res.status).toBe(0);
    for (const field of ['version', 'binary', 'build', 'cpu kernels', 'cuda kernels', 'cuda']) expect(res.stdout).toMatch(new RegExp(`^${field}\\s{2,}\\S`, 'm'));
    expect(res.stdout).toMatch(/lora-kernels \d+\.\d+\.\d+/);
    expect(res.stdout).toMatch(/using (avx512|avx2|neon|scalar) with \d+ threads/);
  });

  it('info --json is the same facts as one JSON document', () => {
    const res = cli('info', '--json');
    expect(res.status).toBe(0);
    const info = JSON.parse(res.stdout) as { version: string; build: { version: string; binary: { source: string }; simdLevels: string[] }; backends: { cpu: { simd: string } } };
    expect(info.build.version).toBe(info.version);
    expect(['prebuild', 'local build']).toContain(info.build.binary.source);
    expect(info.build.simdLevels).toContain(info.backends.cpu.simd);
  });

  it('bench --list names every benchmark', () => {
    const res = cli('bench', '--list');
    expect(res.status).toBe(0);
    expect(res.stdout.trim().split('\n')).toEqual(['lora.forward', 'lora.forwardMulti', 'lora.doraForward', 'lora.backward', 'quant.matmul', 'linalg', 'attention.flashLora']);
  });

  it('mistakes are an exit code and a message, never a stack trace', () => {
    const unknownBench = cli('bench', 'lora.sideways');
    expect(unknownBench.status).toBe(1);
    expect(unknownBench.stderr).toMatch(/unknown benchmark\(s\): lora.sideways; available: lora.forward, /);
    const unknownCommand = cli('frobnicate');
    expect(unknownCommand.status).toBe(2);
    expect(unknownCommand.stderr).toMatch(/unknown command frobnicate/);
    expect(cli('build', '--bogus').status).toBe(2);
    expect(cli('bench', '--out').stderr).toMatch(/--out needs a value/);
  });

  it('bench --help lists the options, --device and --quick among them', () => {
    const res = cli('bench', '--help');
    expect(res.status).toBe(0);
    expect(res.stdout).toMatch(/^usage: lora-kernels bench /);
    for (const option of ['--device cpu|cuda', '--quick', '--out DIR', '--list', 'LORA_KERNELS_PYTHON']) expect(res.stdout).toContain(option);
    expect(cli('--help').stdout).toContain('--device cpu|cuda');
  });

  it('bench --device mistakes and a missing CUDA device are a message, never a stack trace', () => {
    const badDevice = cli('bench', '--device', 'gpu');
    expect(badDevice.status).toBe(2);
    expect(badDevice.stderr).toMatch(/--device must be cpu or cuda, got gpu/);
    const quickOnCpu = cli('bench', '--quick');
    expect(quickOnCpu.status).toBe(1);
    expect(quickOnCpu.stderr).toMatch(/--quick is for --device cuda only/);
    // Whatever this suite's addon is (CPU-only, GPU or emulated build), with CUDA turned off.
    const noCuda = cliWithEnv({ ...process.env, LORA_KERNELS_CUDA: 'off' }, 'bench', 'lora.forward', '--device', 'cuda');
    expect(noCuda.status).toBe(1);
    // The reason: turned off by LORA_KERNELS_CUDA, or (a CPU-only build) not compiled in.
    expect(noCuda.stderr).toMatch(/^lora-kernels: --device cuda: no CUDA device: (CUDA is turned off by LORA_KERNELS_CUDA=off|CUDA support was not compiled)/m);
    expect(noCuda.stderr).not.toMatch(STACK_FRAME);
  });

  // This suite's addon (the emulated build in test:emulated, the GPU build in test:gpu): with a
  // CUDA device, every GPU bench runs end to end on tiny shapes; without one, a clean refusal.
  it('bench --device cuda --quick: every GPU table, the goals and JSON lines (or no CUDA device, said plainly)', () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'lk-bench-'));
    try {
      const res = cliWithEnv({ ...process.env }, 'bench', '--device', 'cuda', '--quick', '--out', out);
      const { cuda } = backends();
      if (!cuda.available) {
        expect(res.status).toBe(1);
        expect(res.stderr).toMatch(/^lora-kernels: --device cuda: no CUDA device: /m);
        expect(res.stderr).not.toMatch(STACK_FRAME);
        return;
      }
      expect(res.stderr).not.toMatch(STACK_FRAME);
      expect(res.status).toBe(0);
      for (const bench of ['lora.forward', 'lora.forwardMulti', 'lora.doraForward', 'lora.backward', 'quant.matmul', 'linalg', 'attention.flashLora']) {
        expect(res.stdout).toContain(`== ${bench} on the GPU`);
        const lines = fs.readFileSync(path.join(out, `${bench.replace('.', '_')}_cuda.jsonl`), 'utf8').trim().split('\n');
        for (const line of lines) {
          const row = JSON.parse(line) as Record<string, unknown>;
          expect(row).toMatchObject({ device: 'cuda', quick: true, bench, gpu: { name: cuda.devices[0]!.name } });
          for (const key of ['wallMs', 'eventMs', 'tflops', 'gbps']) expect(row[key]).toBeGreaterThan(0);
        }
      }
      expect(res.stdout).toMatch(/^gpu: .*compute capability \d+\.\d+.*--quick/m);
      expect(res.stdout).toMatch(/^peer: /m);
      expect(res.stdout).toMatch(/^case\s+dtype\s+impl\s+wall ms\s+event ms\s+TFLOP\/s\s+GB\/s\s+vs\s+vs wall ms\s+vs event ms\s+× vs \(event\)\s+× vs \(wall\)\s+goal\s+met$/m);
      expect(res.stdout).toContain('≤ 2.2× torch x@W.T');
      expect(res.stdout).toContain('≤ 1.15× ours single-adapter forward');
      expect(res.stdout).toContain('≤ 0.05× torch.linalg.svd');
      expect(res.stdout).toContain('≤ 1.0× torch.svd_lowrank');
      expect(res.stdout).toContain('≤ 1.225× ours plain flash');
      expect(res.stdout).toMatch(/^multi-agent cache memory .*goal ≤ 0.25×: met\)$/m);
      expect(res.stdout).toMatch(/^\d+ of 44 goals met/m);
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  });

  it('help and --version', () => {
    expect(cli('--help').stdout).toMatch(/^usage: lora-kernels <command>/);
    expect(cli('--version').stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
  });
});
