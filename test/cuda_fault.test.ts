/**
 * A kernel fault (cuda/runtime.cu): reported at the next wait as ERR_CUDA naming the op, whichever
 * wait comes first (synchronize, a read, an async op's completion); after it the device refuses all
 * work with ERR_CUDA naming that op, while the process and the CPU carry on. The fault comes from
 * the test-only native testKernelFault, whose kernel traps: on a GPU that kills the CUDA context
 * for the rest of the process (the SIMT emulator makes its error sticky likewise), so every
 * scenario runs in a child process of its own, against the built package (dist/, made by
 * `pretest`) and this suite's binary.
 */
import { describe, expect, it } from 'vitest';

import { buildInfo } from '../lib/index.js';
import { testDevices } from './helpers/devices.js';
import { repoRoot, runChild } from './helpers/child.js';

interface Failure { code: string; message: string }
interface Report {
  first: Failure | null;
  later: Record<string, Failure | null>;
  stats: { allocatedBytes: number } | null;
  cpu: number[];
}

// `first` is the first wait after the fault; every later call must fail naming the same op.
const SCRIPT = (first: string) => `
  const path = require('node:path');
  const lk = require(${JSON.stringify(repoRoot)});
  const { native } = require(path.join(${JSON.stringify(repoRoot)}, 'dist/cjs/lib/native.js'));
  const failure = (e) => ({ code: e.code, message: e.message });
  const sync = (f) => { try { f(); return null; } catch (e) { return failure(e); } };
  const settled = (p) => p.then(() => null, failure);
  (async () => {
    const x = lk.Tensor.randn([3, 8], { seed: 1, device: 'cuda' });
    const weight = lk.Tensor.randn([5, 8], { seed: 2, device: 'cuda' });
    const y = lk.lora.forward({ x, weight });
    lk.synchronize();  // nothing pending: the next wait covers the faulting op alone
    const first = await (${first});
    const later = {
      synchronize: sync(() => lk.synchronize()),
      toFloat32: sync(() => y.toFloat32()),
      forward: sync(() => lk.lora.forward({ x, weight, out: y })),
      forwardAsync: await settled(lk.lora.forwardAsync({ x, weight, out: y })),
      zeros: sync(() => lk.Tensor.zeros([4], { device: 'cuda' })),
      emptyCache: sync(() => lk.emptyCache()),
      dispose: sync(() => { x.dispose(); weight.dispose(); }),
    };
    const stats = lk.memoryStats();
    const cpu = lk.lora.forward({ x: lk.Tensor.randn([1, 8], { seed: 1 }), weight: lk.Tensor.randn([2, 8], { seed: 2 }) }).shape;
    console.log(JSON.stringify({ first, later, stats, cpu }));
  })();`;

const ALONE = /^CUDA error in test\.kernelFault: .+ \(cudaError\w+\)$/;
const SCENARIOS: [string, string, RegExp][] = [
  ['synchronize()', `(native().testKernelFault(0), sync(() => lk.synchronize()))`, ALONE],
  ['toFloat32()', `(native().testKernelFault(0), sync(() => y.toFloat32()))`, ALONE],
  ['an async op\'s completion', `settled(native().testKernelFaultAsync(0))`, ALONE],
  // Another op queued before the wait: both are named (a GPU may already refuse that op's launch,
  // or its selection of the device, when the fault has happened by then).
  ['synchronize() after another op', `(native().testKernelFault(0), sync(() => { lk.lora.forward({ x, weight, out: y }); lk.synchronize(); }))`,
    /^CUDA error in (test\.kernelFault|lora\.forward \(or one of: test\.kernelFault, lora\.forward since the last wait\)): .+ \(cudaError\w+\)$/],
];

const cuda = testDevices().some((d) => d.device === 'cuda');

describe.skipIf(!cuda)('a kernel fault on cuda', () => {
  const binary = cuda ? buildInfo().binary.path : '';

  it.each(SCENARIOS)('is ERR_CUDA naming the op at the first wait, %s; then the device refuses all work, naming it', (_name, first, named) => {
    // This suite's binary, and the sanitizer runtime it may need (scripts/sanitize.mjs).
    const env = { LORA_KERNELS_ADDON: binary, LORA_KERNELS_CUDA_PROBE: 'in-process', LD_PRELOAD: process.env['LD_PRELOAD'] ?? '' };
    const child = runChild(SCRIPT(first), { env });
    expect(child.signal, child.stderr).toBeNull();
    expect(child.status, child.stderr).toBe(0);
    const report = child.json<Report>();
    expect(report.first).toEqual({ code: 'ERR_CUDA', message: expect.stringMatching(named) });
    const refused = /CUDA device 0 is unusable after an earlier error \(the process must restart to use it again\): CUDA error in \S*( \(or one of: )?test\.kernelFault[,:]/;
    for (const name of ['synchronize', 'toFloat32', 'forward', 'forwardAsync', 'zeros', 'emptyCache']) {
      expect(report.later[name], name).toEqual({ code: 'ERR_CUDA', message: expect.stringMatching(refused) });
    }
    expect(report.later['forward']!.message).toMatch(/^lora\.forward: CUDA device 0 is unusable/);
    expect(report.later['dispose']).toBeNull();
    expect(report.stats?.allocatedBytes).toBeGreaterThanOrEqual(0);
    expect(report.cpu).toEqual([1, 2]);
  });
});
