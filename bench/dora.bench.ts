/**
 * lora.doraForward on the CPU at K=N=4096, r=16, float32: decode (M=1) and prefill (M=512),
 * against our lora.forward (the same fused GEMM without the norm pass) and PyTorch's PEFT-style
 * DoRA forward (norm of W + s·B·A, then (m / norm) ⊙ (x@W.T + s·(x@A.T)@B.T)) in the same run.
 *
 * FLOPs: the LoRA forward 2·M·N·K + 2·M·r·(K+N), plus the norms 2·N·K·r (0.54 GFLOP: 3% of the
 * M=512 GEMM, but 16× the M=1 GEMV). Bytes (compulsory): x, W, A, B, m read once, y written
 * once; the norm pass reads W a second time, so decode (bandwidth-bound) should cost about 2×
 * lora.forward and prefill (compute-bound) about 1.03-1.06×.
 */
import { lora, Tensor } from '../lib/index.js';
import { gbps, gflops, type Measurement, type PeerTask, printTable, runTorchPeer, timeOurs, writeResults } from './common.js';

const K = 4096;
const N = 4096;
const R = 16;
const SHAPES = [
  { label: 'decode', m: 1 },
  { label: 'prefill', m: 512 },
];

export async function run(): Promise<void> {
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
  if ('note' in peer) console.log(`note: ${peer.note}`);
  else {
    for (const task of peerTasks) {
      const res = peer.results.get(task.id);
      if (!res) continue;
      const ours = rows.find((r) => r.case === task.id.split('|')[0] && r.impl === 'lora-kernels doraForward')!;
      rows.push({ ...ours, impl: `torch ${peer.version} PEFT-style DoRA`, ...res });
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
