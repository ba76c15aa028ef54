/**
 * lora.backward, W frozen.
 *
 * CPU (`--device cpu`): the prefill shape M=512, K=N=4096, r=16, float32.
 * FLOPs: gradInput's g·W is 2·M·N·K = 17.2 GFLOP; the five low-rank products (T, dT, gradB, gradA,
 * dT·A) add 2·M·r·(3K + 2N) = 0.34 GFLOP. Bytes (compulsory): g, x, W, A, B read once, gradInput,
 * gradA, gradB written once (~88 MiB, 64 of them W). Compute-bound: ~75 ms at the 2-core peak.
 *
 * Compared in the same run:
 *  - ours fused: one lora.backward call;
 *  - ours unfused: the same math as five separate calls of our forward kernel (T = x·Aᵀ,
 *    dT = g·(sB), gradB = gᵀ·(sT), gradA = dTᵀ·x, and gradInput = g·W + dT·A as one forward with
 *    an adapter), with every transposed operand prepared once outside the timer — a lower bound
 *    for an unfused sequence: it reads g three times and x twice;
 *  - torch autograd of x@W.T + s·(x@A.T)@B.T with requires_grad on x, A, B only: the backward
 *    alone (the graph is recorded once, untimed, and kept for every timed call).
 * Goal: ours fused ≤ 1.0 × torch's backward.
 *
 * GPU (`--device cuda`): bfloat16 at M=4096, K=N=4096, r=16: 137 GFLOP in g·W plus 2.7 GFLOP of
 * low-rank products (~0.18 ms at cuBLAS's ~770 TFLOP/s on an H200); compulsory bytes
 * 2·(M·N + 2·M·K + N·K + 2·r·(K+N)) = 128 MiB (~28 µs at 4.8 TB/s): compute-bound. Against torch's
 * autograd backward on the same GPU (one big GEMM, the skinny ones and their adds): goal ≤ 2.2×
 * on mma.sync, ≤ 0.8× where the engine runs wgmma (gradInput's g·W through the transpose bit).
 */
import { lora, Tensor } from '../lib/index.js';
import {
  type BenchDevice, gbps, gflops, gpuDevice, gpuDims, type Measurement, type PeerTask, peerRef, printTable, reportGpu, runTorchPeer, timeGpu, timeOurs,
  writeResults,
} from './common.js';

const M = 512;
const K = 4096;
const N = 4096;
const R = 16;
const SCALE = 0.5;

/** The [cols, rows] transpose of a row-major float32 [rows, cols] tensor (setup only, untimed). */
function transposed(t: Tensor, scale = 1): Tensor {
  const [rows, cols] = t.shape as [number, number];
  const src = t.toFloat32();
  const dst = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) dst[j * rows + i] = scale * src[i * cols + j]!;
  return Tensor.from(dst, [cols, rows]);
}

export async function run(device: BenchDevice = 'cpu'): Promise<void> {
  if (device === 'cuda') return runGpu();
  const shape = { m: M, k: K, n: N, r: R };
  const caseName = `prefill M=${M} K=${K} N=${N} r=${R}`;
  const x = Tensor.randn([M, K], { seed: 1 });
  const weight = Tensor.randn([N, K], { seed: 2 });
  const a = Tensor.randn([R, K], { seed: 3 });
  const b = Tensor.randn([N, R], { seed: 4 });
  const gradOutput = Tensor.randn([M, N], { seed: 5 });
  const flops = 2 * M * N * K + 2 * M * R * (3 * K + 2 * N);
  const bytes = 4 * (2 * M * N + 2 * M * K + N * K + 2 * R * (K + N));
  const iterations = 8;

  const out = { gradInput: Tensor.empty([M, K]), gradA: Tensor.empty([R, K]), gradB: Tensor.empty([N, R]) };
  const fused = await timeOurs(`${caseName} fused`, () => lora.backward({ gradOutput, x, weight, a, b, scale: SCALE, out }), { iterations });

  // Unfused operands, prepared once: W as [K, N], s·Bᵀ, Aᵀ, gᵀ, xᵀ, and (s·T)ᵀ, dTᵀ from this input.
  const weightT = transposed(weight);
  const scaledBT = transposed(b, SCALE);
  const aT = transposed(a);
  const gradOutputT = transposed(gradOutput);
  const xT = transposed(x);
  const scaledTT = transposed(lora.forward({ x, weight: a }), SCALE);
  const dTT = transposed(lora.forward({ x: gradOutput, weight: scaledBT }));
  const unfused = await timeOurs(`${caseName} unfused`, () => {
    lora.forward({ x, weight: a });                                    // T = x·Aᵀ            [M, r]
    lora.forward({ x: gradOutput, weight: scaledBT });                 // dT = g·(s·B)        [M, r]
    lora.forward({ x: gradOutputT, weight: scaledTT });                // gradB = gᵀ·(s·T)    [N, r]
    lora.forward({ x: dTT, weight: xT });                              // gradA = dTᵀ·x       [r, K]
    lora.forward({ x: gradOutput, weight: weightT, a: scaledBT, b: aT, scale: 1 }); // g·W + dT·A [M, K]
  }, { iterations });

  const rows: Measurement[] = [
    { bench: 'lora.backward', case: caseName, impl: 'lora-kernels fused', device: 'cpu', dtype: 'float32', ...fused, flops, bytes, shape },
    { bench: 'lora.backward', case: caseName, impl: 'lora-kernels unfused (5 forward calls)', device: 'cpu', dtype: 'float32', ...unfused, flops, bytes: bytes + 4 * (2 * M * N + M * K), shape },
  ];
  const peerTasks: PeerTask[] = [{ id: `${caseName}|lora_backward`, op: 'lora_backward', dtype: 'float32', shape, iterations }];
  const peer = runTorchPeer(peerTasks);
  if (peer) {
    const res = peer.results.get(peerTasks[0]!.id);
    if (res) rows.push({ bench: 'lora.backward', case: caseName, impl: `torch ${peer.env.torch} autograd backward`, device: 'cpu', dtype: 'float32', ...res, flops, bytes, shape });
  }

  const torch = rows.find((r) => r.impl.startsWith('torch'));
  const table = rows.map((row) => [row.impl, row.msMedian, row.msMin, gflops(row), gbps(row),
    row.msMedian / fused.msMedian, torch ? row.msMedian / torch.msMedian : NaN]);
  console.log(caseName + ' float32');
  printTable(['impl', 'ms (median)', 'ms (min)', 'GFLOP/s', 'GB/s', '× ours fused', '× torch backward'], table);
  writeResults('lora.backward', rows.map((row) => ({
    ...row, gflops: gflops(row), gbps: gbps(row), ratioToTorchBackward: torch ? row.msMedian / torch.msMedian : null,
  })), { key: 'ratioToTorchBackward', label: 'torch autograd backward' });
}

async function runGpu(): Promise<void> {
  const device = 'cuda';
  const dtype = 'bfloat16';
  const shape = gpuDims({ m: 4096, k: 4096, n: 4096, r: 16 });
  const { m, k, n, r } = shape;
  const caseName = `M=${m} K=${k} N=${n} r=${r}`;
  const x = Tensor.randn([m, k], { dtype, device, seed: 1 });
  const weight = Tensor.randn([n, k], { dtype, device, seed: 2 });
  const a = Tensor.randn([r, k], { dtype, device, seed: 3 });
  const b = Tensor.randn([n, r], { dtype, device, seed: 4 });
  const gradOutput = Tensor.randn([m, n], { dtype, device, seed: 5 });
  const out = { gradInput: Tensor.empty([m, k], { dtype, device }), gradA: Tensor.empty([r, k], { dtype, device }), gradB: Tensor.empty([n, r], { dtype, device }) };
  const timing = await timeGpu(`${caseName} ${dtype} lora.backward`, () => lora.backward({ gradOutput, x, weight, a, b, scale: SCALE, out }));
  for (const t of [x, weight, a, b, gradOutput, out.gradInput, out.gradA, out.gradB]) t.dispose();
  const ours = {
    bench: 'lora.backward', case: caseName, impl: 'lora.backward', dtype, shape, ...timing,
    flops: 2 * m * n * k + 2 * m * r * (3 * k + 2 * n), bytes: 2 * (m * n + 2 * m * k + n * k + 2 * r * (k + n)),
  };
  const peer = runTorchPeer([{ id: 'backward', op: 'lora_backward', dtype, shape }]);
  const goal = gpuDevice().gemmMainloop === 'wgmma' ? 0.8 : 2.2;
  reportGpu('lora.backward', [{ ours, vs: 'torch autograd backward', ref: peerRef(peer, 'backward'), goal }], peer);
}
