/**
 * lora.forward on the CPU at a decode shape (M=1) and a prefill shape (M=512), K=N=4096, r=16.
 *
 * FLOPs: base 2·M·N·K, low-rank path 2·M·r·(K+N) (0.8% of the base at r=16).
 * Bytes (compulsory traffic): x, W, A, B read once, y written once. At M=1 the 64 MiB float32
 * weight dominates: decode is bandwidth-bound (~4 ms at ~16 GB/s); at M=512 the GEMM is
 * compute-bound (17.2 GFLOP, ~75 ms at ~230 GFLOP/s on two AVX-512 cores).
 *
 * Ratios printed: fused / our base GEMM alone (the cost of the adapter), fused / torch `x @ W.T`
 * (the goal: ≤ 1.10), and torch's own unfused LoRA / torch `x @ W.T`.
 */
import { type DType, lora, Tensor } from '../lib/index.js';
import { gbps, gflops, type Measurement, type PeerTask, printTable, runTorchPeer, timeOurs, writeResults } from './common.js';

const K = 4096;
const N = 4096;
const R = 16;
const SHAPES = [
  { label: 'decode', m: 1 },
  { label: 'prefill', m: 512 },
];
const DTYPES: DType[] = ['float32', 'bfloat16'];

export async function run(): Promise<void> {
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
  if ('note' in peer) console.log(`note: ${peer.note}`);
  else {
    for (const task of peerTasks) {
      const res = peer.results.get(task.id);
      if (!res) continue;
      const [caseName, op] = task.id.split('|') as [string, string];
      const { m, k, n, r } = task.shape as { m: number; k: number; n: number; r: number };
      const flops = 2 * m * n * k + (op === 'lora_unfused' ? 2 * m * r * (k + n) : 0);
      const bytes = 4 * (m * k + n * k + m * n + (op === 'lora_unfused' ? r * (k + n) : 0));
      rows.push({ bench: 'lora.forward', case: caseName, impl: `torch ${peer.version} ${op === 'matmul' ? 'x @ W.T' : 'unfused LoRA'}`, device: 'cpu', dtype: task.dtype, ...res, flops, bytes, shape: task.shape });
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
