/**
 * lora.forward.
 *
 * CPU (`--device cpu`): a decode shape (M=1) and a prefill shape (M=512), K=N=4096, r=16.
 * FLOPs: base 2·M·N·K, low-rank path 2·M·r·(K+N) (0.8% of the base at r=16).
 * Bytes (compulsory traffic): x, W, A, B read once, y written once. At M=1 the 64 MiB float32
 * weight dominates: decode is bandwidth-bound (~4 ms at ~16 GB/s); at M=512 the GEMM is
 * compute-bound (17.2 GFLOP, ~75 ms at ~230 GFLOP/s on two AVX-512 cores).
 * Ratios printed: fused / our base GEMM alone (the cost of the adapter), fused / torch `x @ W.T`
 * (the goal: ≤ 1.10), and torch's own unfused LoRA / torch `x @ W.T`.
 *
 * GPU (`--device cuda`, GPU_CASES): the same FLOPs and bytes. On an H100/H200 class GPU
 * (~990 dense bf16 TFLOP/s, ~4.8 TB/s; cuBLAS reaches ~770 TFLOP/s at 4096³ on an H200):
 *  - prefill bf16/fp16 at M=512, 4096 (137 GFLOP at M=4096: ~0.18 ms) and M=K=N=8192
 *    (1.1 TFLOP: ~1.5 ms), compute-bound: goal ≤ 2.2× torch x@W.T (≥ 45% of cuBLAS) on mma.sync,
 *    ≤ 1.10× where the engine runs wgmma (sm_90 with an sm_90a binary: backends()' gemmMainloop),
 *    and the ratio to torch's unfused LoRA (three GEMMs, an add and a scale);
 *  - decode bf16 M=1 and M=16: the 32 MiB bf16 weight read once, ~7 µs at 4.8 TB/s, so launch
 *    overheads matter: goal ≤ 1.0× torch x@W.T;
 *  - float32 at M=4096 exact (FMA, no tensor cores): goal ≤ 1.25× cuBLAS float32 (TF32 off);
 *    with allowTf32, against torch with TF32 allowed;
 *  - bf16 M=4096 at r=128: the low-rank path is 6% of the FLOPs (0.8% at r=16): goal ≤ 1.15×
 *    our r=16 time, and the ratio to torch's unfused LoRA at r=128;
 *  - our plain base GEMM (r=0: lora.forward without a and b), bf16 M=4096 and M=K=N=8192:
 *    goal ≤ 1.05× torch x@W.T on wgmma (2.2× on mma.sync, as above).
 */
import { type DType, lora, Tensor } from '../lib/index.js';
import {
  type BenchDevice, gbps, gflops, gpuDevice, gpuDims, type GpuComparison, type GpuMeasurement, type Measurement, type PeerTask, peerRef, printTable,
  reportGpu, runTorchPeer, timeGpu, timeOurs, writeResults,
} from './common.js';

const K = 4096;
const N = 4096;
const R = 16;
const SHAPES = [
  { label: 'decode', m: 1 },
  { label: 'prefill', m: 512 },
];
const DTYPES: DType[] = ['float32', 'bfloat16'];

export async function run(device: BenchDevice = 'cpu'): Promise<void> {
  if (device === 'cuda') return runGpu();
  const rows: Measurement[] = [];
  const peerTasks: PeerTask[] = [];
  for (const { label, m } of SHAPES) {
    for (const dtype of DTYPES) {
      const elem = dtype === 'float32' ? 4 : 2;
      const shape = { m, k: K, n: N, r: R };
      const baseFlops = 2 * m * N * K;
      const loraFlops = 2 * m * R * (K + N);
      const baseBytes = elem * (m * K + N * K + m * N);
      const loraBytes = baseBytes + elem * R * (K + N);
      const x = Tensor.randn([m, K], { dtype, seed: 1 });
      const weight = Tensor.randn([N, K], { dtype, seed: 2 });
      const a = Tensor.randn([R, K], { dtype, seed: 3 });
      const b = Tensor.randn([N, R], { dtype, seed: 4 });
      const out = Tensor.empty([m, N], { dtype });
      const caseName = `${label} M=${m} K=${K} N=${N} r=${R}`;
      const iterations = m === 1 ? 50 : 8;
      const fused = await timeOurs(`${caseName} ${dtype} fused`, () => lora.forward({ x, weight, a, b, scale: 0.5, out }), { iterations });
      const base = await timeOurs(`${caseName} ${dtype} base GEMM`, () => lora.forward({ x, weight, out }), { iterations });
      rows.push({ bench: 'lora.forward', case: caseName, impl: 'lora-kernels fused', device: 'cpu', dtype, ...fused, flops: baseFlops + loraFlops, bytes: loraBytes, shape });
      rows.push({ bench: 'lora.forward', case: caseName, impl: 'lora-kernels base GEMM', device: 'cpu', dtype, ...base, flops: baseFlops, bytes: baseBytes, shape });
      if (dtype === 'float32') {
        peerTasks.push({ id: `${caseName}|matmul`, op: 'matmul', dtype, shape, iterations });
        peerTasks.push({ id: `${caseName}|lora_unfused`, op: 'lora_unfused', dtype, shape, iterations });
      }
    }
  }

  const peer = runTorchPeer(peerTasks);
  if (peer) {
    for (const task of peerTasks) {
      const res = peer.results.get(task.id);
      if (!res) continue;
      const [caseName, op] = task.id.split('|') as [string, string];
      const { m, k, n, r } = task.shape as { m: number; k: number; n: number; r: number };
      const flops = 2 * m * n * k + (op === 'lora_unfused' ? 2 * m * r * (k + n) : 0);
      const bytes = 4 * (m * k + n * k + m * n + (op === 'lora_unfused' ? r * (k + n) : 0));
      rows.push({ bench: 'lora.forward', case: caseName, impl: `torch ${peer.env.torch} ${op === 'matmul' ? 'x @ W.T' : 'unfused LoRA'}`, device: 'cpu', dtype: task.dtype, ...res, flops, bytes, shape: task.shape });
    }
  }

  const table: (string | number)[][] = [];
  const summaries: Record<string, unknown>[] = [];
  for (const row of rows) {
    const torchBase = rows.find((r) => r.case === row.case && r.impl.endsWith('x @ W.T'));
    const ours = rows.find((r) => r.case === row.case && r.dtype === row.dtype && r.impl === 'lora-kernels base GEMM');
    table.push([
      `${row.case} ${row.dtype}`, row.impl, row.msMedian, row.msMin, gflops(row), gbps(row),
      ours ? row.msMedian / ours.msMedian : NaN, torchBase ? row.msMedian / torchBase.msMedian : NaN,
    ]);
    summaries.push({ ...row, gflops: gflops(row), gbps: gbps(row), ratioToTorchMatmul: torchBase ? row.msMedian / torchBase.msMedian : null });
  }
  printTable(['case', 'impl', 'ms (median)', 'ms (min)', 'GFLOP/s', 'GB/s', '× our base', '× torch x@W.T'], table);
  writeResults('lora.forward', summaries as (Measurement & Record<string, unknown>)[], { key: 'ratioToTorchMatmul', label: 'torch x @ W.T' });
}

interface GpuForwardCase {
  m: number;
  k: number;
  n: number;
  r: number;
  dtype: DType;
  allowTf32?: boolean;
}

const GPU_CASES: GpuForwardCase[] = [
  ...(['bfloat16', 'float16'] as const).flatMap((dtype) => [
    { m: 512, k: 4096, n: 4096, r: 16, dtype },
    { m: 4096, k: 4096, n: 4096, r: 16, dtype },
    { m: 8192, k: 8192, n: 8192, r: 16, dtype },
  ]),
  { m: 1, k: 4096, n: 4096, r: 16, dtype: 'bfloat16' },
  { m: 16, k: 4096, n: 4096, r: 16, dtype: 'bfloat16' },
  { m: 4096, k: 4096, n: 4096, r: 16, dtype: 'float32' },
  { m: 4096, k: 4096, n: 4096, r: 16, dtype: 'float32', allowTf32: true },
  { m: 4096, k: 4096, n: 4096, r: 128, dtype: 'bfloat16' },
  { m: 4096, k: 4096, n: 4096, r: 0, dtype: 'bfloat16' },
  { m: 8192, k: 8192, n: 8192, r: 0, dtype: 'bfloat16' },
];

/** The references and goals of a GPU case (see the header). */
function gpuComparisons(c: GpuForwardCase, i: number): { vs: string; peerOp?: 'matmul' | 'lora_unfused'; ours?: GpuForwardCase; goal?: number }[] {
  if (c.dtype === 'float32') return [{ vs: `torch x@W.T (TF32 ${c.allowTf32 ? 'on' : 'off'})`, peerOp: 'matmul', ...(c.allowTf32 ? {} : { goal: 1.25 }) }];
  const unfused = { vs: 'torch unfused LoRA', peerOp: 'lora_unfused' as const };
  const wgmma = gpuDevice().gemmMainloop === 'wgmma';
  if (c.r === 0) return [{ vs: 'torch x@W.T', peerOp: 'matmul', goal: wgmma ? 1.05 : 2.2 }];
  if (c.r !== 16) {
    const r16 = GPU_CASES.find((o, j) => j !== i && o.r === 16 && o.m === c.m && o.k === c.k && o.n === c.n && o.dtype === c.dtype)!;
    return [{ vs: 'ours at r=16', ours: r16, goal: 1.15 }, unfused];
  }
  return [{ vs: 'torch x@W.T', peerOp: 'matmul', goal: c.m <= 16 ? 1.0 : wgmma ? 1.1 : 2.2 }, unfused];
}

async function runGpu(): Promise<void> {
  const device = 'cuda';
  const measured = new Map<GpuForwardCase, GpuMeasurement>();
  const peerTasks: PeerTask[] = [];
  for (const [i, c] of GPU_CASES.entries()) {
    const shape = { ...gpuDims({ m: c.m, k: c.k, n: c.n, r: Math.max(c.r, 1) }), ...(c.r === 0 ? { r: 0 } : {}) };
    const { m, k, n, r } = shape;
    const elem = c.dtype === 'float32' ? 4 : 2;
    const x = Tensor.randn([m, k], { dtype: c.dtype, device, seed: 1 });
    const weight = Tensor.randn([n, k], { dtype: c.dtype, device, seed: 2 });
    const adapter = r > 0 ? { a: Tensor.randn([r, k], { dtype: c.dtype, device, seed: 3 }), b: Tensor.randn([n, r], { dtype: c.dtype, device, seed: 4 }) } : {};
    const out = Tensor.empty([m, n], { dtype: c.dtype, device });
    const caseName = `M=${m} K=${k} N=${n} r=${r}`;
    const impl = r === 0 ? 'lora.forward base GEMM' : c.allowTf32 ? 'lora.forward allowTf32' : 'lora.forward';
    const allowTf32 = c.allowTf32 ?? false;
    const timing = await timeGpu(`${caseName} ${c.dtype} ${impl}`, () => lora.forward({ x, weight, ...adapter, scale: 0.5, out, allowTf32 }));
    for (const t of [x, weight, adapter.a, adapter.b, out]) t?.dispose();
    measured.set(c, {
      bench: 'lora.forward', case: caseName, impl, dtype: c.dtype, shape, ...timing,
      flops: 2 * m * n * k + 2 * m * r * (k + n), bytes: elem * (m * k + n * k + m * n + r * (k + n)),
    });
    for (const { peerOp } of gpuComparisons(c, i)) {
      if (peerOp) peerTasks.push({ id: `${i}|${peerOp}`, op: peerOp, dtype: c.dtype, shape, allow_tf32: allowTf32 });
    }
  }
  const peer = runTorchPeer(peerTasks);
  const comparisons: GpuComparison[] = GPU_CASES.flatMap((c, i) => gpuComparisons(c, i).map(({ vs, peerOp, ours, goal }) => ({
    ours: measured.get(c)!, vs, ref: ours ? measured.get(ours) : peerRef(peer, `${i}|${peerOp}`), goal,
  })));
  reportGpu('lora.forward', comparisons, peer);
}
