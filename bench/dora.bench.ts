/**
 * lora.doraForward at K=N=4096, r=16, against our lora.forward (the same fused GEMM without the
 * norm pass) and PyTorch's PEFT-style DoRA forward (norm of W + s·B·A, then
 * (m / norm) ⊙ (x@W.T + s·(x@A.T)@B.T)) in the same run.
 *
 * CPU (`--device cpu`): float32, decode (M=1) and prefill (M=512).
 * FLOPs: the LoRA forward 2·M·N·K + 2·M·r·(K+N), plus the norms 2·N·K·r (0.54 GFLOP: 3% of the
 * M=512 GEMM, but 16× the M=1 GEMV). Bytes (compulsory): x, W, A, B, m read once, y written
 * once; the norm pass reads W a second time, so decode (bandwidth-bound) should cost about 2×
 * lora.forward and prefill (compute-bound) about 1.03-1.06×.
 *
 * GPU (`--device cuda`): bfloat16 at M=4096: 137 GFLOP in the GEMM (~0.18 ms at cuBLAS's
 * ~770 TFLOP/s on an H200) plus 0.54 GFLOP of norms; the norm pass reads the 32 MiB weight once
 * more (~7 µs at 4.8 TB/s): goal ≤ 1.15× our lora.forward; and the ratio to torch's PEFT-style
 * DoRA (it materialises W + s·B·A, 32 MiB written and read, besides the unfused LoRA).
 */
import { lora, Tensor } from '../lib/index.js';
import {
  type BenchDevice, gbps, gflops, gpuDims, type Measurement, type PeerTask, peerRef, printTable, reportGpu, runTorchPeer, timeGpu, timeOurs,
  writeResults,
} from './common.js';

const K = 4096;
const N = 4096;
const R = 16;
const SHAPES = [
  { label: 'decode', m: 1 },
  { label: 'prefill', m: 512 },
];

export async function run(device: BenchDevice = 'cpu'): Promise<void> {
  if (device === 'cuda') return runGpu();
  const rows: Measurement[] = [];
  const peerTasks: PeerTask[] = [];
  const dtype = 'float32';
  for (const { label, m } of SHAPES) {
    const shape = { m, k: K, n: N, r: R };
    const loraFlops = 2 * m * N * K + 2 * m * R * (K + N);
    const doraFlops = loraFlops + 2 * N * K * R;
    const loraBytes = 4 * (m * K + N * K + m * N + R * (K + N));
    const x = Tensor.randn([m, K], { seed: 1 });
    const weight = Tensor.randn([N, K], { seed: 2 });
    const a = Tensor.randn([R, K], { seed: 3 });
    const b = Tensor.randn([N, R], { seed: 4 });
    const magnitude = Tensor.randn([N], { seed: 5 });
    const out = Tensor.empty([m, N]);
    const caseName = `${label} M=${m} K=${K} N=${N} r=${R}`;
    const iterations = m === 1 ? 30 : 8;
    const dora = await timeOurs(`${caseName} doraForward`, () => lora.doraForward({ x, weight, a, b, magnitude, scale: 0.5, out }), { iterations });
    const fused = await timeOurs(`${caseName} lora.forward`, () => lora.forward({ x, weight, a, b, scale: 0.5, out }), { iterations });
    rows.push({ bench: 'lora.doraForward', case: caseName, impl: 'lora-kernels doraForward', device: 'cpu', dtype, ...dora, flops: doraFlops, bytes: loraBytes + 4 * N, shape });
    rows.push({ bench: 'lora.doraForward', case: caseName, impl: 'lora-kernels lora.forward', device: 'cpu', dtype, ...fused, flops: loraFlops, bytes: loraBytes, shape });
    peerTasks.push({ id: `${caseName}|dora_peft`, op: 'dora_peft', dtype, shape, iterations });
  }

  const peer = runTorchPeer(peerTasks);
  if (peer) {
    for (const task of peerTasks) {
      const res = peer.results.get(task.id);
      if (!res) continue;
      const ours = rows.find((r) => r.case === task.id.split('|')[0] && r.impl === 'lora-kernels doraForward')!;
      rows.push({ ...ours, impl: `torch ${peer.env.torch} PEFT-style DoRA`, ...res });
    }
  }

  const table: (string | number)[][] = [];
  const summaries: Record<string, unknown>[] = [];
  for (const row of rows) {
    const loraRow = rows.find((r) => r.case === row.case && r.impl === 'lora-kernels lora.forward')!;
    const torch = rows.find((r) => r.case === row.case && r.impl.startsWith('torch'));
    const ratios = { ratioToLoraForward: row.msMedian / loraRow.msMedian, ratioToTorchDora: torch ? row.msMedian / torch.msMedian : null };
    table.push([row.case, row.impl, row.msMedian, row.msMin, gflops(row), gbps(row), ratios.ratioToLoraForward, ratios.ratioToTorchDora ?? NaN]);
    summaries.push({ ...row, gflops: gflops(row), gbps: gbps(row), ...ratios });
  }
  printTable(['case', 'impl', 'ms (median)', 'ms (min)', 'GFLOP/s', 'GB/s', '× our lora.forward', '× torch DoRA'], table);
  writeResults('lora.doraForward', summaries as (Measurement & Record<string, unknown>)[], { key: 'ratioToTorchDora', label: 'torch PEFT-style DoRA' });
}

async function runGpu(): Promise<void> {
  const device = 'cuda';
  const dtype = 'bfloat16';
  const shape = gpuDims({ m: 4096, k: 4096, n: 4096, r: 16 });
  const { m, k, n, r } = shape;
  const caseName = `M=${m} K=${k} N=${n} r=${r}`;
  const loraFlops = 2 * m * n * k + 2 * m * r * (k + n);
  const loraBytes = 2 * (m * k + n * k + m * n + r * (k + n));
  const x = Tensor.randn([m, k], { dtype, device, seed: 1 });
  const weight = Tensor.randn([n, k], { dtype, device, seed: 2 });
  const a = Tensor.randn([r, k], { dtype, device, seed: 3 });
  const b = Tensor.randn([n, r], { dtype, device, seed: 4 });
  const magnitude = Tensor.randn([n], { dtype, device, seed: 5 });
  const out = Tensor.empty([m, n], { dtype, device });
  const dora = {
    bench: 'lora.doraForward', case: caseName, impl: 'lora.doraForward', dtype, shape, flops: loraFlops + 2 * n * k * r, bytes: loraBytes + 2 * n,
    ...await timeGpu(`${caseName} ${dtype} doraForward`, () => lora.doraForward({ x, weight, a, b, magnitude, scale: 0.5, out })),
  };
  const fused = {
    bench: 'lora.doraForward', case: caseName, impl: 'lora.forward', dtype, shape, flops: loraFlops, bytes: loraBytes,
    ...await timeGpu(`${caseName} ${dtype} lora.forward`, () => lora.forward({ x, weight, a, b, scale: 0.5, out })),
  };
  for (const t of [x, weight, a, b, magnitude, out]) t.dispose();
  const peer = runTorchPeer([{ id: 'dora', op: 'dora_peft', dtype, shape }]);
  reportGpu('lora.doraForward', [
    { ours: dora, vs: 'ours lora.forward', ref: fused, goal: 1.15 },
    { ours: dora, vs: 'torch PEFT-style DoRA', ref: peerRef(peer, 'dora') },
  ], peer);
}
