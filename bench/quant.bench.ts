/**
 * quant.matmul: y = x·deq(W)ᵀ + bias + gate·scale·(x·aᵀ)·bᵀ over a packed NF4 or ternary weight.
 *
 * CPU (`--device cpu`): K = N = 4096, r = 16, float32 x; decode M=1 and M=16, prefill M=512.
 * Weights: NF4 with blocks of 64 and float32 absmax (8 MiB of codes + 1 MiB of absmax: 4.5 bits
 * per weight), NF4 double-quantized (decode only: 8-bit absmax codes, ~4.13 bits), ternary
 * (4 codes per byte: 4 MiB, 2 bits).
 * FLOPs: 2·M·N·K + 2·M·r·(K+N), as lora.forward. Bytes (compulsory): x, the packed weight (codes
 * and absmax), A, B read once, y written once; "packed GB/s" counts the weight's bytes alone, the
 * traffic a decode call is bound by.
 * Compared in the same run: torch's float32 `x @ W.T` (the peer; it reads the 64 MiB float32
 * weight: ~7.5 ms at M=1 on this 2-core EPYC, ~9 GB/s) and our float32 lora.forward with the same
 * adapter at the same shape.
 * Goals (2-core CPU): decode M=1 NF4 ≥ 3× faster than torch's float32 GEMV (≤ 0.33×), ternary
 * ≥ 6× (≤ 0.167×): 9 MiB resp. 4 MiB instead of 64 MiB from DRAM; prefill M=512 ≤ 1.1× our
 * float32 lora.forward (the decode of every weight panel must hide behind the ~17 GFLOP GEMM).
 *
 * GPU (`--device cuda`): bf16 x, K = N = 4096, r = 16; decode M=1 and M=16 (NF4, NF4
 * double-quantized, ternary), prefill M=4096 (NF4, ternary). Decode is a GEMV over 9 MiB (NF4) or
 * 4 MiB (ternary) of packed bytes, ~2 µs resp. ~1 µs at an H200's ~4.8 TB/s: the goal is the
 * packed bytes read at ≥ 75% (NF4) / ≥ 70% (ternary) of the device-to-device copy bandwidth
 * measured in the same run (a 512 MiB copy, read + write, so from DRAM); as a GpuComparison: ours
 * ≤ 1.0× the time the packed bytes take at that fraction of the copy bandwidth. Note that the
 * event batches call back to back, and 9 MiB fit in an H200's 50 MB L2. Prefill (137 GFLOP) runs
 * the GEMM engine with a dequantizing operand loader: goal ≤ 1.25× our bf16 lora.forward at the
 * same shape. torch's bf16 x@W.T is printed beside each, without a goal.
 */
import { dtypeSize } from '../lib/dtype.js';
import { type DType, lora, quant, type QuantizedTensor, Tensor } from '../lib/index.js';
import { quantizedParts } from '../lib/ops/quant.js';
import {
  type BenchDevice, gbps, gflops, gpuDims, type GpuComparison, type GpuMeasurement, type Measurement, type PeerTask, peerRef, printTable,
  reportGpu, runTorchPeer, timeGpu, timeOurs, writeResults,
} from './common.js';

const K = 4096;
const N = 4096;
const R = 16;
const SCALE = 0.5;

type Format = 'nf4' | 'nf4-dq' | 'ternary';
const FORMAT_LABEL: Record<Format, string> = { nf4: 'NF4 (block 64)', 'nf4-dq': 'NF4 (block 64, double-quant)', ternary: 'ternary' };

function quantizeAs(format: Format, w: Tensor): QuantizedTensor {
  if (format === 'ternary') return quant.ternary.quantize(w);
  return quant.nf4.quantize(w, { blockSize: 64, doubleQuant: format === 'nf4-dq' });
}

/** The bytes a quantized weight occupies: codes, absmax (or its codes and nested tables). */
function packedBytes(q: QuantizedTensor): number {
  return Object.values(quantizedParts(q)).reduce((sum, t) => sum + t.numel * dtypeSize(t.dtype), 0);
}

interface CpuCase {
  label: 'decode' | 'prefill';
  m: number;
  formats: Format[];
}

const CPU_CASES: CpuCase[] = [
  { label: 'decode', m: 1, formats: ['nf4', 'nf4-dq', 'ternary'] },
  { label: 'decode', m: 16, formats: ['nf4', 'nf4-dq', 'ternary'] },
  { label: 'prefill', m: 512, formats: ['nf4', 'ternary'] },
];

/** The CPU goals (see the header): the reference row's impl prefix and the largest ratio allowed. */
function cpuGoal(label: string, m: number, format: Format): { vs: 'torch' | 'lora'; ratio: number; text: string } | undefined {
  if (label === 'decode' && m === 1) {
    return format === 'ternary' ? { vs: 'torch', ratio: 1 / 6, text: '≥ 6× faster than torch x@W.T' } : { vs: 'torch', ratio: 1 / 3, text: '≥ 3× faster than torch x@W.T' };
  }
  if (label === 'prefill') return { vs: 'lora', ratio: 1.1, text: '≤ 1.1× our lora.forward' };
  return undefined;
}

type CpuRow = Measurement & { format?: Format; packedBytes?: number };

export async function run(device: BenchDevice = 'cpu'): Promise<void> {
  if (device === 'cuda') return runGpu();
  const rows: CpuRow[] = [];
  const peerTasks: PeerTask[] = [];
  const dtype = 'float32';
  for (const { label, m, formats } of CPU_CASES) {
    const shape = { m, k: K, n: N, r: R };
    const flops = 2 * m * N * K + 2 * m * R * (K + N);
    const otherBytes = 4 * (m * K + m * N + R * (K + N));
    const x = Tensor.randn([m, K], { dtype, seed: 1 });
    const weight = Tensor.randn([N, K], { dtype, seed: 2 });
    const a = Tensor.randn([R, K], { dtype, seed: 3 });
    const b = Tensor.randn([N, R], { dtype, seed: 4 });
    const out = Tensor.empty([m, N], { dtype });
    const caseName = `${label} M=${m} K=${K} N=${N} r=${R}`;
    const iterations = m === 1 ? 50 : m <= 16 ? 20 : 8;
    for (const format of formats) {
      const q = quantizeAs(format, weight);
      const bytes = packedBytes(q);
      const timing = await timeOurs(`${caseName} quant.matmul ${FORMAT_LABEL[format]}`,
        () => quant.matmul({ x, weight: q, a, b, scale: SCALE, out }), { iterations });
      rows.push({ bench: 'quant.matmul', case: caseName, impl: `quant.matmul ${FORMAT_LABEL[format]}`, device: 'cpu', dtype, ...timing, flops, bytes: otherBytes + bytes, shape, format, packedBytes: bytes });
      quant.dispose(q);
    }
    const fused = await timeOurs(`${caseName} lora.forward float32`, () => lora.forward({ x, weight, a, b, scale: SCALE, out }), { iterations });
    rows.push({ bench: 'quant.matmul', case: caseName, impl: 'lora.forward float32', device: 'cpu', dtype, ...fused, flops, bytes: otherBytes + 4 * N * K, shape });
    peerTasks.push({ id: caseName, op: 'matmul', dtype, shape, iterations });
  }

  const peer = runTorchPeer(peerTasks);
  if (peer) {
    for (const task of peerTasks) {
      const res = peer.results.get(task.id);
      if (!res) continue;
      const { m, k, n } = task.shape as { m: number; k: number; n: number };
      rows.push({ bench: 'quant.matmul', case: task.id, impl: `torch ${peer.env.torch} x @ W.T`, device: 'cpu', dtype, ...res, flops: 2 * m * n * k, bytes: 4 * (m * k + n * k + m * n), shape: task.shape });
    }
  }

  const table: (string | number)[][] = [];
  const summaries: Record<string, unknown>[] = [];
  for (const row of rows) {
    const torchRow = rows.find((r) => r.case === row.case && r.impl.endsWith('x @ W.T'));
    const loraRow = rows.find((r) => r.case === row.case && r.impl === 'lora.forward float32');
    const ratioToTorch = torchRow ? row.msMedian / torchRow.msMedian : null;
    const ratioToLora = loraRow ? row.msMedian / loraRow.msMedian : null;
    const goal = row.format && cpuGoal(row.case.split(' ')[0]!, row.shape['m']!, row.format);
    const goalRatio = goal ? (goal.vs === 'torch' ? ratioToTorch : ratioToLora) : null;
    const goalMet = goal && goalRatio !== null ? goalRatio <= goal.ratio : null;
    const bytesPerWeight = row.packedBytes !== undefined ? row.packedBytes / (N * K) : row.impl.startsWith('quant') ? NaN : 4;
    const packedGbps = row.packedBytes !== undefined ? row.packedBytes / (row.msMedian * 1e6) : NaN;
    table.push([
      row.case, row.impl, row.msMedian, row.msMin, bytesPerWeight, packedGbps, gflops(row), gbps(row), ratioToTorch ?? NaN, ratioToLora ?? NaN,
      goal?.text ?? '', goal ? (goalMet === null ? 'no reference' : goalMet ? 'met' : 'NOT MET') : '',
    ]);
    summaries.push({
      ...row, gflops: gflops(row), gbps: gbps(row), bytesPerWeight, packedGbps: Number.isFinite(packedGbps) ? packedGbps : null,
      ratioToTorchMatmul: ratioToTorch, ratioToLoraForward: ratioToLora, goal: goal?.text ?? null, goalMet,
    });
  }
  printTable(['case', 'impl', 'ms (median)', 'ms (min)', 'bytes/weight', 'packed GB/s', 'GFLOP/s', 'GB/s', '× torch x@W.T', '× our lora.forward', 'goal', 'met'], table);
  const judged = summaries.filter((s) => s['goal']);
  console.log(`${judged.filter((s) => s['goalMet'] === true).length} of ${judged.length} CPU goals met`);
  writeResults('quant.matmul', summaries as (Measurement & Record<string, unknown>)[], { key: 'ratioToTorchMatmul', label: 'torch x @ W.T' });
}

// ---- GPU ----------------------------------------------------------------------------------------

interface GpuQuantCase {
  label: 'decode' | 'prefill';
  m: number;
  format: Format;
}

const GPU_CASES: GpuQuantCase[] = [
  ...([1, 16] as const).flatMap((m) => (['nf4', 'nf4-dq', 'ternary'] as const).map((format) => ({ label: 'decode' as const, m, format }))),
  { label: 'prefill', m: 4096, format: 'nf4' },
  { label: 'prefill', m: 4096, format: 'ternary' },
];

/** The fraction of the copy bandwidth a decode call must read its packed bytes at (see the header). */
const DECODE_BANDWIDTH_GOAL: Record<Format, number> = { nf4: 0.75, 'nf4-dq': 0.75, ternary: 0.7 };

/** The device-to-device copy timed for the decode goals: 512 MiB read and written, from DRAM. */
const COPY_ELEMENTS = 128 * 1024 * 1024;

async function runGpu(): Promise<void> {
  const device = 'cuda';
  const dtype: DType = 'bfloat16';
  const copyShape = gpuDims({ elements: COPY_ELEMENTS });
  const copySrc = Tensor.empty([copyShape.elements], { dtype: 'float32', device });
  const copyTiming = await timeGpu(`copy ${(copyShape.elements * 4) / 2 ** 20} MiB on the device`, () => copySrc.to(device).dispose());
  copySrc.dispose();
  // Read and written: the bytes a copy moves per CUDA-event millisecond.
  const copyBytesPerMs = (2 * copyShape.elements * 4) / copyTiming.eventMs;
  console.log(`copy bandwidth (Tensor.to on the device, ${copyShape.elements * 4} bytes read and written): ${(copyBytesPerMs / 1e6).toFixed(0)} GB/s`);

  const measured: { c: GpuQuantCase; ours: GpuMeasurement; packed: number }[] = [];
  const loraRefs = new Map<string, GpuMeasurement>();
  const peerTasks: PeerTask[] = [];
  for (const c of GPU_CASES) {
    const shape = gpuDims({ m: c.m, k: K, n: N, r: R });
    const { m, k, n, r } = shape;
    const caseName = `${c.label} M=${m} K=${k} N=${n} r=${r}`;
    const x = Tensor.randn([m, k], { dtype, device, seed: 1 });
    const weight = Tensor.randn([n, k], { dtype, device, seed: 2 });
    const a = Tensor.randn([r, k], { dtype, device, seed: 3 });
    const b = Tensor.randn([n, r], { dtype, device, seed: 4 });
    const out = Tensor.empty([m, n], { dtype, device });
    const flops = 2 * m * n * k + 2 * m * r * (k + n);
    const otherBytes = 2 * (m * k + m * n + r * (k + n));
    if (c.label === 'prefill' && !loraRefs.has(caseName)) {
      const timing = await timeGpu(`${caseName} ${dtype} lora.forward`, () => lora.forward({ x, weight, a, b, scale: SCALE, out }));
      loraRefs.set(caseName, { bench: 'quant.matmul', case: caseName, impl: 'lora.forward', dtype, shape, ...timing, flops, bytes: otherBytes + 2 * n * k });
    }
    const q = quantizeAs(c.format, weight);
    const packed = packedBytes(q);
    const timing = await timeGpu(`${caseName} ${dtype} quant.matmul ${FORMAT_LABEL[c.format]}`, () => quant.matmul({ x, weight: q, a, b, scale: SCALE, out }));
    measured.push({ c, packed, ours: { bench: 'quant.matmul', case: caseName, impl: `quant.matmul ${FORMAT_LABEL[c.format]}`, dtype, shape, ...timing, flops, bytes: otherBytes + packed } });
    quant.dispose(q);
    for (const t of [x, weight, a, b, out]) t.dispose();
    if (!peerTasks.some((t) => t.id === caseName)) peerTasks.push({ id: caseName, op: 'matmul', dtype, shape });
  }
  const peer = runTorchPeer(peerTasks);
  const comparisons: GpuComparison[] = [...loraRefs.values()].map((ours) => ({ ours, vs: 'torch x@W.T', ref: peerRef(peer, ours.case) }));
  for (const { c, ours, packed } of measured) {
    if (c.label === 'decode') {
      const fraction = DECODE_BANDWIDTH_GOAL[c.format];
      const atGoalMs = packed / (fraction * copyBytesPerMs);
      const vs = `packed bytes at ${fraction * 100}% of the copy bandwidth (${(copyBytesPerMs / 1e6).toFixed(0)} GB/s)`;
      comparisons.push({ ours, vs, ref: { wallMs: atGoalMs, eventMs: atGoalMs }, goal: 1.0 });
    } else {
      comparisons.push({ ours, vs: 'our lora.forward', ref: loraRefs.get(ours.case), goal: 1.25 });
    }
    comparisons.push({ ours, vs: 'torch x@W.T', ref: peerRef(peer, ours.case) });
  }
  reportGpu('quant.matmul', comparisons, peer);
}
