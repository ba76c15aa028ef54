/** `npx lora-kernels`: the CLI (lib/cli.ts) as users run it, from the built package. */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

import { describe, expect, it } from 'vitest';

import { repoRoot } from './helpers/child.js';

function cli(...args: string[]) {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env['LORA_KERNELS_ADDON'];
  delete env['LD_PRELOAD'];
  return spawnSync(process.execPath, [path.join(repoRoot, 'dist/cjs/lib/cli.js'), ...args], { encoding: 'utf8', env, timeout: 60_000 });
}

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
    expect(res.stdout.trim().split('\n')).toEqual(['lora.forward', 'lora.forwardMulti', 'lora.doraForward', 'lora.backward']);
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

  it('help and --version', () => {
    expect(cli('--help').stdout).toMatch(/^usage: lora-kernels <command>/);
    expect(cli('--version').stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
  });
});
