/**
 * lora.forwardMulti: 1, 8 and 64 adapters, uniform and Zipf popularity, K=N=4096, r=16, against
 * the single-adapter lora.forward (one adapter for the whole batch), timed in the same run.
 *
 * CPU (`--device cpu`): a decode shape (M=1) and a prefill shape (M=512), float32, also against
 * our base GEMM alone.
 * FLOPs: base 2·M·N·K plus the low-rank path 2·M·r·(K+N), the same for one adapter or many.
 * Bytes (compulsory traffic): x, W read once, y written once, plus r·(K+N) per adapter USED by
 * the batch (64 adapters at r=16: 32 MiB, half the weight's 64 MiB — at M=1 only one is used).
 * Napkin math at M=512: 17.3 GFLOP at ~200 GFLOP/s ≈ 87 ms; reading 64 adapters once is ~1-2 ms,
 * the per-run expand adds ~1-2 ms: goal ≤ 1.15× the single-adapter forward.
 *
 * GPU (`--device cuda`): bfloat16 at M=1024: 34.6 GFLOP (~45 µs at cuBLAS's ~770 TFLOP/s on an
 * H200); bytes 2·(M·K + N·K + M·N) = 48 MiB plus 256 KiB per adapter used (64: 16 MiB more,
 * ~3.5 µs at 4.8 TB/s). Goal ≤ 1.15× our single-adapter forward; also against torch's gather +
 * bmm (A[ids] and B[ids] gathered per row, 2 × 128 MiB written and read again, two bmm, the
 * scales, plus the base GEMM) with the same ids and scales (made here, sent to the peer).
 */
import { lora, Tensor } from '../lib/index.js';
import {
  type BenchDevice, gbps, gflops, gpuDims, type GpuMeasurement, type Measurement, type PeerTask, peerRef, printTable, reportGpu, runTorchPeer,
  timeGpu, timeOurs, writeResults,
} from './common.js';

const K = 4096;
const N = 4096;
const R = 16;
const MS = [1, 512];
const ADAPTERS = [1, 8, 64];
const POPULARITY = ['uniform', 'zipf'] as const;

// Seeded ids: uniform, or Zipf with exponent 1.2 (adapter 0 takes ~25% of the rows at L=64).
function adapterIds(m: number, adapters: number, popularity: (typeof POPULARITY)[number], seed: number): Int32Array {
  let state = seed >>> 0;
  const random = () => ((state = (Math.imul(state, 1664525) + 1013904223) >>> 0) / 4294967296);
  const weights = Array.from({ length: adapters }, (_, l) => (popularity === 'zipf' ? 1 / (l + 1) ** 1.2 : 1));
  const total = weights.reduce((a, b) => a + b, 0);
  return Int32Array.from({ length: m }, () => {
    let u = random() * total;
    for (let l = 0; l < adapters; l++) if ((u -= weights[l]!) <= 0) return l;
    return adapters - 1;
  });
}

export async function run(device: BenchDevice = 'cpu'): Promise<void> {
  if (device === 'cuda') return runGpu();
  const rows: (Measurement & { adapters?: number; distinct?: number; popularity?: string })[] = [];
  const dtype = 'float32';
  const weight = Tensor.randn([N, K], { seed: 2 });
  for (const m of MS) {
    const iterations = m === 1 ? 50 : 8;
    const x = Tensor.randn([m, K], { seed: 1 });
    const out = Tensor.empty([m, N]);
    const shape = { m, k: K, n: N, r: R };
    const baseFlops = 2 * m * N * K;
    const loraFlops = baseFlops + 2 * m * R * (K + N);
    const baseBytes = 4 * (m * K + N * K + m * N);
    const caseName = `M=${m} K=${K} N=${N} r=${R}`;
    const a1 = Tensor.randn([R, K], { seed: 3 });
    const b1 = Tensor.randn([N, R], { seed: 4 });
    const single = await timeOurs(`${caseName} single adapter`, () => lora.forward({ x, weight, a: a1, b: b1, scale: 0.5, out }), { iterations });
    const base = await timeOurs(`${caseName} base GEMM`, () => lora.forward({ x, weight, out }), { iterations });
    rows.push({ bench: 'lora.forwardMulti', case: caseName, impl: 'lora.forward (1 adapter for all rows)', device: 'cpu', dtype, ...single, flops: loraFlops, bytes: baseBytes + 4 * R * (K + N), shape });
    rows.push({ bench: 'lora.forwardMulti', case: caseName, impl: 'lora.forward base GEMM only', device: 'cpu', dtype, ...base, flops: baseFlops, bytes: baseBytes, shape });
    for (const adapters of ADAPTERS) {
      const a = Tensor.randn([adapters, R, K], { seed: 5 });
      const b = Tensor.randn([adapters, N, R], { seed: 6 });
      const scales = Tensor.from(Float32Array.from({ length: adapters }, (_, l) => 0.5 + l / adapters), [adapters]);
      for (const popularity of POPULARITY) {
        if (adapters === 1 && popularity === 'zipf') continue;  // the same ids
        const ids = adapterIds(m, adapters, popularity, 42);
        const distinct = new Set(ids).size;
        const adapterIdsTensor = Tensor.from(ids, [m], { dtype: 'int32' });
        const t = await timeOurs(`${caseName} L=${adapters} ${popularity}`, () => lora.forwardMulti({ x, weight, a, b, scales, adapterIds: adapterIdsTensor, out }), { iterations });
        rows.push({
          bench: 'lora.forwardMulti', case: caseName, impl: `forwardMulti L=${adapters} ${popularity} (${distinct} used)`, device: 'cpu', dtype, ...t,
          flops: loraFlops, bytes: baseBytes + 4 * distinct * R * (K + N), shape, adapters, distinct, popularity,
        });
      }
    }
  }

  const table: (string | number)[][] = [];
  const summaries: Record<string, unknown>[] = [];
  for (const row of rows) {
    const single = rows.find((r) => r.case === row.case && r.impl.startsWith('lora.forward (1 adapter'))!;
    const base = rows.find((r) => r.case === row.case && r.impl === 'lora.forward base GEMM only')!;
    const ratio = row.msMedian / single.msMedian;
    table.push([row.case, row.impl, row.msMedian, row.msMin, gflops(row), gbps(row), ratio, row.msMedian / base.msMedian]);
    summaries.push({ ...row, gflops: gflops(row), gbps: gbps(row), ratioToSingleAdapter: ratio });
  }
  printTable(['case', 'impl', 'ms (median)', 'ms (min)', 'GFLOP/s', 'GB/s', '× single-adapter', '× base GEMM'], table);
  writeResults('lora.forwardMulti', summaries as (Measurement & Record<string, unknown>)[], { key: 'ratioToSingleAdapter', label: 'our single-adapter lora.forward' });
}

async function runGpu(): Promise<void> {
  const device = 'cuda';
  const dtype = 'bfloat16';
  const shape = gpuDims({ m: 1024, k: 4096, n: 4096, r: 16 });
  const { m, k, n, r } = shape;
  const caseName = `M=${m} K=${k} N=${n} r=${r}`;
  const flops = 2 * m * n * k + 2 * m * r * (k + n);
  const baseBytes = 2 * (m * k + n * k + m * n);
  const x = Tensor.randn([m, k], { dtype, device, seed: 1 });
  const weight = Tensor.randn([n, k], { dtype, device, seed: 2 });
  const out = Tensor.empty([m, n], { dtype, device });
  const a1 = Tensor.randn([r, k], { dtype, device, seed: 3 });
  const b1 = Tensor.randn([n, r], { dtype, device, seed: 4 });
  const single = {
    bench: 'lora.forwardMulti', case: caseName, impl: 'lora.forward (1 adapter for all rows)', dtype, shape, flops, bytes: baseBytes + 2 * r * (k + n),
    ...await timeGpu(`${caseName} ${dtype} single adapter`, () => lora.forward({ x, weight, a: a1, b: b1, scale: 0.5, out })),
  };
  const measured: { ours: GpuMeasurement; id: string }[] = [];
  const peerTasks: PeerTask[] = [];
  for (const adapters of ADAPTERS) {
    const a = Tensor.randn([adapters, r, k], { dtype, device, seed: 5 });
    const b = Tensor.randn([adapters, n, r], { dtype, device, seed: 6 });
    const scaleValues = Float32Array.from({ length: adapters }, (_, l) => 0.5 + l / adapters);
    const scales = Tensor.from(scaleValues, [adapters]).to(device);
    for (const popularity of POPULARITY) {
      if (adapters === 1 && popularity === 'zipf') continue;  // the same ids
      const ids = adapterIds(m, adapters, popularity, 42);
      const distinct = new Set(ids).size;
      const adapterIdsTensor = Tensor.from(ids, [m], { dtype: 'int32' }).to(device);
      const impl = `forwardMulti L=${adapters} ${popularity} (${distinct} used)`;
      const timing = await timeGpu(`${caseName} ${dtype} L=${adapters} ${popularity}`,
        () => lora.forwardMulti({ x, weight, a, b, scales, adapterIds: adapterIdsTensor, out }));
      adapterIdsTensor.dispose();
      const ours = { bench: 'lora.forwardMulti', case: caseName, impl, dtype, shape, flops, bytes: baseBytes + 2 * distinct * r * (k + n), ...timing };
      const id = `${adapters}|${popularity}`;
      peerTasks.push({ id, op: 'multi_gather_bmm', dtype, shape: { ...shape, adapters }, ids: [...ids], scales: [...scaleValues] });
      measured.push({ ours, id });
    }
    for (const t of [a, b, scales]) t.dispose();
  }
  for (const t of [x, weight, out, a1, b1]) t.dispose();
  const peer = runTorchPeer(peerTasks);
  reportGpu('lora.forwardMulti', measured.flatMap(({ ours, id }) => [
    { ours, vs: 'ours single-adapter forward', ref: single, goal: 1.15 },
    { ours, vs: 'torch gather+bmm', ref: peerRef(peer, id) },
  ]), peer);
}
