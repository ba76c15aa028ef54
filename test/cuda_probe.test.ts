/**
 * GPU safety: whatever the CUDA driver does (missing, too old, no device, crashing or hanging
 * while it initialises), the host process lives, the CPU path serves, and backends() says why
 * CUDA is off. The misbehaving driver is test/fixtures/fake_libcuda.c, compiled here and put first
 * on LD_LIBRARY_PATH, where cudart_static looks for libcuda.so.1.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';

import { repoRoot, runChild } from './helpers/child.js';

interface Report {
  cuda: { available: boolean; compiled: boolean; reason?: string; devices: unknown[] };
  cpuForward?: number[];
  cudaAlloc?: { code: string; message: string };
}

// Asks about CUDA, runs a CPU op, then tries a CUDA allocation, and reports all three.
const PROBE_SCRIPT = `
  const lk = require(${JSON.stringify(repoRoot)});
  const cuda = lk.backends().cuda;
  const cpuForward = lk.lora.forward({ x: lk.Tensor.randn([2, 7], { seed: 1 }), weight: lk.Tensor.randn([3, 7], { seed: 2 }) }).shape;
  let cudaAlloc;
  try { lk.Tensor.zeros([4], { device: 'cuda' }); } catch (e) { cudaAlloc = { code: e.code, message: e.message }; }
  console.log(JSON.stringify({ cuda, cpuForward, cudaAlloc }));`;

const cudaCompiled = runChild(`console.log(JSON.stringify(require(${JSON.stringify(repoRoot)}).buildInfo().cuda))`)
  .json<{ compiled: boolean; emulated: boolean }>();
const canFakeDriver = process.platform === 'linux' && cudaCompiled.compiled && !cudaCompiled.emulated;

let driverDir = '';
function withDriver(mode: string, env: NodeJS.ProcessEnv = {}) {
  return runChild(PROBE_SCRIPT, { env: { LD_LIBRARY_PATH: driverDir, FAKE_CUDA: mode, ...env } });
}

function expectCpuServes(report: Report, reason: RegExp): void {
  expect(report.cuda.available).toBe(false);
  expect(report.cuda.reason).toMatch(reason);
  expect(report.cpuForward).toEqual([2, 3]);
  expect(report.cudaAlloc?.code).toBe('ERR_DEVICE');
  expect(report.cudaAlloc?.message).toMatch(reason);
}

describe.skipIf(!canFakeDriver)('the CUDA probe with a misbehaving driver (needs a real-CUDA build on Linux)', () => {
  beforeAll(() => {
    driverDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lk-fake-cuda-'));
    execFileSync('cc', ['-shared', '-fPIC', '-o', path.join(driverDir, 'libcuda.so.1'), path.join(repoRoot, 'test/fixtures/fake_libcuda.c')]);
  });

  it('a driver too old for CUDA 13: CPU serves, the reason names both versions', () => {
    expectCpuServes(withDriver('old-driver').json<Report>(), /driver too old for CUDA 13\.\d .*found one for CUDA 12\.4/);
  });

  it('a driver without devices', () => {
    expectCpuServes(withDriver('no-device').json<Report>(), /no CUDA device/);
  });

  it('a driver that crashes in cuInit takes down only the probe process', () => {
    const res = withDriver('crash-init');
    expect(res.status).toBe(0);
    expectCpuServes(res.json<Report>(), /crashed a probe process \(SIGSEGV\)/);
  });

  it('a driver that crashes when asked its version', () => {
    expectCpuServes(withDriver('crash-version').json<Report>(), /crashed a probe process \(SIGSEGV\)/);
  });

  it('a driver that hangs: the probe is abandoned after its timeout', () => {
    const started = Date.now();
    const report = withDriver('hang-init', { LORA_KERNELS_CUDA_PROBE_TIMEOUT_MS: '1500' }).json<Report>();
    expectCpuServes(report, /did not finish initialising within 1500 ms/);
    expect(Date.now() - started).toBeLessThan(30_000);
  });

  it('without the child probe the same driver kills the process: the probe is what keeps the host alive', () => {
    const res = withDriver('crash-init', { LORA_KERNELS_CUDA_PROBE: 'in-process' });
    expect(res.signal).toBe('SIGSEGV');
  });

  it('LORA_KERNELS_CUDA=off never loads the driver', () => {
    const res = withDriver('crash-init', { LORA_KERNELS_CUDA: 'off' });
    expectCpuServes(res.json<Report>(), /turned off by LORA_KERNELS_CUDA=off/);
    expect(res.stderr).not.toContain('[fake libcuda loaded]');
  });

  it('a process that only uses the CPU never probes CUDA', () => {
    const res = runChild(`const lk = require(${JSON.stringify(repoRoot)});
      console.log(JSON.stringify(lk.lora.forward({ x: lk.Tensor.randn([2, 7]), weight: lk.Tensor.randn([3, 7]) }).shape));`,
    { env: { LD_LIBRARY_PATH: driverDir, FAKE_CUDA: 'crash-init' } });
    expect(res.json<number[]>()).toEqual([2, 3]);
    expect(res.stderr).not.toContain('[fake libcuda loaded]');
  });
});

describe('the CUDA probe with the machine\'s own driver (or none)', () => {
  it('finds the devices, or says why there are none, and the CPU serves either way', () => {
    const report = runChild(PROBE_SCRIPT).json<Report>();
    expect(report.cpuForward).toEqual([2, 3]);
    if (report.cuda.available) {
      expect(report.cuda.devices.length).toBeGreaterThan(0);
      expect(report.cudaAlloc).toBeUndefined();
    } else {
      expect(report.cuda.reason).toMatch(cudaCompiled.compiled ? /no CUDA driver found|no CUDA device|driver too old|probe process/ : /not compiled/);
      expect(report.cudaAlloc?.code).toBe('ERR_DEVICE');
    }
  });
});
