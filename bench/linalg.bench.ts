/**
 * linalg: the batched economy SVD (linalg.svd: U, S, Vh of float32 matrices) and the randomized
 * linalg.svdLowRank, against LAPACK (torch, numpy), a JS library (ml-matrix) and, on the GPU,
 * cuSOLVER (torch).
 *
 * CPU (`--device cpu`): linalg.svd of batches 1000×32×32, 256×64×64, 64×128×128 and of one 512×512
 * and one 1024×1024; linalg.svdLowRank of one 4096×4096 at rank 16 (oversample 10, iters 2).
 * Entries are standard normal (the same distribution for every impl, not the same values).
 * Peers in the same run, in the torch peer's child python: torch.linalg.svd(full_matrices=False)
 * and numpy.linalg.svd(full_matrices=False) on float32 (both LAPACK gesdd per matrix: here Debian's
 * OpenBLAS), and torch.svd_lowrank(A, q, niter=2). torch's q is the sketch width and it returns
 * all q triplets; ours sketches rank + oversample columns and keeps the leading rank, so the peer
 * gets q = 16 + 10 = 26: both do the same GEMMs (A·Ω, 2 × (Aᵀ·Q, A·Q) each re-orthonormalized by
 * QR, Qᵀ·A) and one SVD of a 26 × 4096. In this process: ml-matrix's SingularValueDecomposition
 * (float64 JavaScript, a port of JAMA's Golub–Kahan SVD) on the 32×32 batch and the 512²; a 512²
 * takes ~2.4 s, so it runs twice, after the JIT has warmed on the batch, not in a tinybench loop.
 * ml-matrix is a dev dependency: where it is not installed its rows are left out with a note.
 *
 * FLOPs, a convention, the same for every impl: the work Golub & Van Loan (Matrix Computations)
 * give the Golub–Reinsch SVD for Σ, the thin U and V of an m × n, m ≥ n: 14mn² + 8n³ (a wide
 * matrix as its transpose); 22n³ for a square one. It is nominal: one-sided Jacobi does more
 * arithmetic (a sweep over a square n × n with V: n²/2 pairs × (3 dot products + 2 column
 * rotations of length n, + 1 of V) ≈ 9n³, times the sweeps column), so the GFLOP/s compare rows;
 * they are no hardware rate. Per call: 1000×32³ 0.72 GFLOP, 256×64³ 1.48, 64×128³ 2.95, 512² 2.95,
 * 1024² 23.6, 4096² 1512. svdLowRank, l = rank + oversample: the GEMMs 2mnl·(2 + 2·iters), the
 * 2·iters + 1 QRs with their Q formed (4ml² − 4l³/3 each), the small SVD 14nl² + 8l³ and
 * U = Q·U_small 2ml²: 5.23 + 0.06 GFLOP at 4096², l = 26.
 * Bytes (compulsory): the input read, U, S, Vh written, as float32 (ml-matrix's float64 too).
 * Goals (2-core CPU): ≥ 2× faster than torch at 1000×32×32 (ours ≤ 0.5× torch), ≥ 50× faster
 * than ml-matrix at 512² (≤ 0.02×), ≤ 1.5× numpy at 1024². Measured for the issue on this 2-core
 * EPYC (numpy / torch): 1000×32×32 119 / 102 ms, 256×64×64 173 / 132, 64×128×128 266 / 163,
 * 512² 97 / 49, 1024² 490 / 312; torch.svd_lowrank 4096² (q = 16) 116 ms. What the goals ask:
 * 1000×32×32 in ≤ ~51 ms is, at ~8 sweeps × 9·32³, 2.4 GFLOP of Jacobi work at ~47 GFLOP/s, ~10%
 * of the two cores' AVX-512 float32 peak (2 × 2 FMA × 16 lanes × 2 × ~3.5 GHz ≈ 450 GFLOP/s);
 * 1024² in ≤ ~735 ms is ~8 × 9·1024³ = 77 GFLOP at ~105 GFLOP/s: blocked Jacobi with GEMM
 * updates, not column pair by pair; 512² in ≤ ~48 ms against ml-matrix's ~2.4 s. The sweeps
 * column is the mean of the sweeps each matrix took (linalg.svd's `sweeps`), from one call.
 *
 * GPU (`--device cuda`): the same SVD cases plus one 4096×4096, and the svdLowRank; the peer is
 * torch on the same GPU (cuSOLVER). The 4096² SVD runs in a peer of its own: cuSOLVER takes
 * seconds per call there and the peer's time box (LORA_KERNELS_PEER_TIMEOUT_S) is per peer run.
 * Goals: ≥ 3× faster than torch.linalg.svd at 1000×32×32, ≥ 20× at 256×64×64 and 64×128×128,
 * ≥ 2× at 512² and 4096²; svdLowRank ≤ 1.0× torch.svd_lowrank. 1024² is printed without a goal.
 */
import type { Matrix as MlMatrix, SingularValueDecomposition as MlSvd } from 'ml-matrix';

import { linalg, Tensor } from '../lib/index.js';
import {
  type BenchDevice, gbps, gflops, gpuDims, type GpuComparison, type GpuMeasurement, type Measurement, type PeerRun, type PeerTask, peerRef,
  printTable, reportGpu, runTorchPeer, session, timeGpu, timeOurs, writeResults,
} from './common.js';

const BENCH = 'linalg';
const DTYPE = 'float32';

type SvdCase = { batch: number; m: number; n: number };

const SVD_CASES: SvdCase[] = [
  { batch: 1000, m: 32, n: 32 },
  { batch: 256, m: 64, n: 64 },
  { batch: 64, m: 128, n: 128 },
  { batch: 1, m: 512, n: 512 },
  { batch: 1, m: 1024, n: 1024 },
];

/** The GPU's extra case: one 4096² (cuSOLVER's single large matrix). */
const GPU_BIG_CASE: SvdCase = { batch: 1, m: 4096, n: 4096 };

type LowRankCase = { m: number; n: number; rank: number; oversample: number; iters: number };

const LOW_RANK: LowRankCase = { m: 4096, n: 4096, rank: 16, oversample: 10, iters: 2 };
const LOW_RANK_SEED = 7;

/** The cases ml-matrix runs (see the header): the 32×32 batch and the 512². */
const ML_MATRIX_CASES = new Set(['1000×32×32', '512×512']);

/** A batch as batch×m×n, one matrix as m×n. */
function caseName({ batch, m, n }: SvdCase): string {
  return batch === 1 ? `${m}×${n}` : `${batch}×${m}×${n}`;
}

/** The SVD's nominal FLOPs (see the header): 14mn² + 8n³ per matrix, m ≥ n. */
function svdFlops({ batch, m, n }: SvdCase): number {
  const [tall, thin] = m >= n ? [m, n] : [n, m];
  return batch * (14 * tall * thin * thin + 8 * thin ** 3);
}

/** The input read and U [m, k], S [k], Vh [k, n] written, float32, k = min(m, n). */
function svdBytes({ batch, m, n }: SvdCase): number {
  const k = Math.min(m, n);
  return 4 * batch * (m * n + m * k + k + k * n);
}

function lowRankName({ m, n, rank }: LowRankCase): string {
  return `svdLowRank ${m}×${n} rank ${rank}`;
}

function lowRankFlops({ m, n, rank, oversample, iters }: LowRankCase): number {
  const l = rank + oversample;
  const gemms = 2 * m * n * l * (2 + 2 * iters);
  const qrs = (2 * iters + 1) * (4 * m * l * l - (4 * l ** 3) / 3);
  return gemms + qrs + 14 * n * l * l + 8 * l ** 3 + 2 * m * l * l;
}

/** The input read and `kept` triplets written: U [m, kept], S [kept], Vh [kept, n]. */
function lowRankBytes({ m, n }: LowRankCase, kept: number): number {
  return 4 * (m * n + m * kept + kept + kept * n);
}

/** One call of ours, its outputs freed (the peers allocate theirs too). */
function svdOnce(a: Tensor): () => void {
  return () => {
    const { u, s, vh } = linalg.svd(a);
    for (const t of [u, s, vh]) t?.dispose();
  };
}

function lowRankOnce(a: Tensor, opts: LowRankCase): () => void {
  const { rank, oversample, iters } = opts;
  return () => {
    const { u, s, vh } = linalg.svdLowRank(a, { rank, oversample, iters, seed: LOW_RANK_SEED });
    for (const t of [u, s, vh]) t.dispose();
  };
}

/** The mean and largest sweeps of one call of ours on `a`. */
function sweepStats(a: Tensor): { sweepsMean: number; sweepsMax: number } {
  const { u, s, vh, sweeps } = linalg.svd(a);
  for (const t of [u, s, vh]) t?.dispose();
  return { sweepsMean: sweeps.reduce((sum, v) => sum + v, 0) / sweeps.length, sweepsMax: Math.max(...sweeps) };
}

function svdInput(c: SvdCase, device?: 'cuda'): Tensor {
  const shape = c.batch === 1 ? [c.m, c.n] : [c.batch, c.m, c.n];
  return Tensor.randn(shape, { dtype: DTYPE, seed: 1, ...(device ? { device } : {}) });
}

// ---- ml-matrix ----------------------------------------------------------------------------------

type MlMatrixModule = { Matrix: typeof MlMatrix; SingularValueDecomposition: typeof MlSvd };

/** ml-matrix (a dev dependency), or why it cannot run. */
async function loadMlMatrix(): Promise<MlMatrixModule | string> {
  try {
    return await import('ml-matrix');
  } catch (error) {
    return `ml-matrix skipped: ${(error as Error).message.split('\n')[0]} (it is a dev dependency: npm install in a source checkout)`;
  }
}

/** The batch as ml-matrix matrices (float64), built once outside the timing. */
function toMlMatrices(ml: MlMatrixModule, a: Tensor, c: SvdCase): MlMatrix[] {
  const data = a.toFloat32();
  const size = c.m * c.n;
  return Array.from({ length: c.batch }, (_, i) => ml.Matrix.from1DArray(c.m, c.n, Array.from(data.subarray(i * size, (i + 1) * size))));
}

/**
 * Times a slow call a few times (`runs`, after `warmup` untimed ones) with a plain clock: ml-matrix
 * takes seconds, where tinybench's loop would take minutes.
 */
function timeFew(label: string, fn: () => void, { warmup, runs }: { warmup: number; runs: number }): Pick<Measurement, 'msMedian' | 'msMin' | 'runs'> {
  for (let i = 0; i < warmup; i++) fn();
  const samples: number[] = [];
  for (let i = 0; i < runs; i++) {
    const started = performance.now();
    fn();
    samples.push(performance.now() - started);
  }
  samples.sort((x, y) => x - y);
  const mid = samples.length >> 1;
  const msMedian = samples.length % 2 ? samples[mid]! : (samples[mid - 1]! + samples[mid]!) / 2;
  process.stderr.write(`${session.stage} ${label}: ${msMedian.toFixed(1)} ms median of ${runs} runs\n`);
  return { msMedian, msMin: samples[0]!, runs };
}

// ---- CPU ----------------------------------------------------------------------------------------

type Peer = 'torch' | 'numpy' | 'ml-matrix';

/** peerKind: which peer timed the row (none: ours), peerEnv: what ran the torch peer's rows. */
type CpuRow = Measurement & { peerKind?: Peer; peerEnv?: PeerRun['env']; sweepsMean?: number; sweepsMax?: number };

/** The CPU goals (see the header), by case: the peer and the largest ratio allowed. */
const CPU_GOALS: Record<string, { vs: Peer; ratio: number; text: string }> = {
  '1000×32×32': { vs: 'torch', ratio: 0.5, text: '≥ 2× faster than torch' },
  '512×512': { vs: 'ml-matrix', ratio: 0.02, text: '≥ 50× faster than ml-matrix' },
  '1024×1024': { vs: 'numpy', ratio: 1.5, text: '≤ 1.5× numpy' },
};

export async function run(device: BenchDevice = 'cpu'): Promise<void> {
  if (device === 'cuda') return runGpu();
  const rows: CpuRow[] = [];
  const peerTasks: PeerTask[] = [];
  const ml = await loadMlMatrix();
  if (typeof ml === 'string') console.log(`note: ${ml}`);
  for (const c of SVD_CASES) {
    const name = caseName(c);
    const shape = { ...c };
    const flops = svdFlops(c);
    const bytes = svdBytes(c);
    const a = svdInput(c);
    const iterations = c.m >= 512 ? 5 : 10;
    const timing = await timeOurs(`${name} linalg.svd`, svdOnce(a), { iterations });
    const common = { bench: BENCH, case: name, device: 'cpu', flops, bytes, shape };
    rows.push({ ...common, impl: 'linalg.svd', dtype: DTYPE, ...timing, ...sweepStats(a) });
    if (typeof ml !== 'string' && ML_MATRIX_CASES.has(name)) {
      const matrices = toMlMatrices(ml, a, c);
      const svd = () => {
        for (const matrix of matrices) new ml.SingularValueDecomposition(matrix, { autoTranspose: true });
      };
      // The batch: one untimed call warms the JIT (the 512² after it then needs none).
      const mlTiming = timeFew(`${name} ml-matrix`, svd, c.batch > 1 ? { warmup: 1, runs: 3 } : { warmup: 0, runs: 2 });
      rows.push({ ...common, impl: 'ml-matrix SVD (float64)', dtype: 'float64', ...mlTiming, peerKind: 'ml-matrix' });
    }
    a.dispose();
    peerTasks.push({ id: `${name} torch`, op: 'svd', dtype: DTYPE, shape, iterations });
    peerTasks.push({ id: `${name} numpy`, op: 'svd_numpy', dtype: DTYPE, shape, iterations });
  }

  const lowRankCase = lowRankName(LOW_RANK);
  const big = Tensor.randn([LOW_RANK.m, LOW_RANK.n], { dtype: DTYPE, seed: 1 });
  const lowRankTiming = await timeOurs(`${lowRankCase} linalg.svdLowRank`, lowRankOnce(big, LOW_RANK), { iterations: 10 });
  big.dispose();
  rows.push({
    bench: BENCH, case: lowRankCase, impl: 'linalg.svdLowRank', device: 'cpu', dtype: DTYPE, ...lowRankTiming,
    flops: lowRankFlops(LOW_RANK), bytes: lowRankBytes(LOW_RANK, LOW_RANK.rank), shape: { ...LOW_RANK },
  });
  peerTasks.push({ id: `${lowRankCase} torch`, op: 'svd_lowrank', dtype: DTYPE, shape: { ...LOW_RANK }, iterations: 10 });

  const peer = runTorchPeer(peerTasks);
  if (peer) rows.push(...peerRows(peer, peerTasks));
  report(rows);
}

/** The peer's timings as rows: torch.linalg.svd, numpy.linalg.svd, torch.svd_lowrank. */
function peerRows(peer: PeerRun, tasks: PeerTask[]): CpuRow[] {
  return tasks.flatMap((task): CpuRow[] => {
    const res = peer.results.get(task.id);
    if (!res) return [];
    const base = { bench: BENCH, device: 'cpu', dtype: DTYPE, ...res, shape: task.shape, peerEnv: peer.env };
    if (task.op === 'svd_lowrank') {
      const lr = task.shape as LowRankCase;
      const q = lr.rank + lr.oversample;
      const impl = `torch ${peer.env.torch} svd_lowrank (q=${q}, niter=${lr.iters})`;
      return [{ ...base, case: lowRankName(lr), impl, flops: lowRankFlops(lr), bytes: lowRankBytes(lr, q), peerKind: 'torch' }];
    }
    const c = task.shape as SvdCase;
    const peerKind = task.op === 'svd' ? 'torch' : 'numpy';
    const impl = peerKind === 'torch' ? `torch ${peer.env.torch} linalg.svd` : `numpy ${peer.env.numpy ?? ''} linalg.svd`;
    return [{ ...base, case: caseName(c), impl, flops: svdFlops(c), bytes: svdBytes(c), peerKind }];
  });
}

/** Prints the CPU table (each of our rows' ratio to every peer, and its goal) and writes the rows. */
function report(rows: CpuRow[]): void {
  const table: (string | number)[][] = [];
  const summaries: Record<string, unknown>[] = [];
  for (const row of rows) {
    const ours = row.peerKind === undefined;
    const ratio = (vs: Peer) => {
      const ref = rows.find((r) => r.case === row.case && r.peerKind === vs);
      return ours && ref ? row.msMedian / ref.msMedian : null;
    };
    const ratios = { torch: ratio('torch'), numpy: ratio('numpy'), 'ml-matrix': ratio('ml-matrix') };
    const goal = ours ? CPU_GOALS[row.case] : undefined;
    const goalRatio = goal ? ratios[goal.vs] : null;
    const goalMet = goal && goalRatio !== null ? goalRatio <= goal.ratio : null;
    const met = goal ? (goalMet === null ? 'no reference' : goalMet ? 'met' : 'NOT MET') : '';
    table.push([
      row.case, row.impl, row.msMedian, row.msMin, String(row.runs), gflops(row), gbps(row), row.sweepsMean ?? NaN,
      ratios.torch ?? NaN, ratios.numpy ?? NaN, ratios['ml-matrix'] ?? NaN, goal?.text ?? '', met,
    ]);
    summaries.push({
      ...row, gflops: gflops(row), gbps: gbps(row),
      ratioToTorch: ratios.torch, ratioToNumpy: ratios.numpy, ratioToMlMatrix: ratios['ml-matrix'], goal: goal?.text ?? null, goalMet,
    });
  }
  const headers = ['case', 'impl', 'ms (median)', 'ms (min)', 'runs', 'GFLOP/s', 'GB/s', 'sweeps (mean)', '× torch', '× numpy', '× ml-matrix', 'goal', 'met'];
  printTable(headers, table);
  const judged = summaries.filter((s) => s['goal']);
  console.log(`${judged.filter((s) => s['goalMet'] === true).length} of ${judged.length} CPU goals met ` +
    '(GFLOP/s: the nominal Golub–Reinsch count, see bench/linalg.bench.ts)');
  writeResults(BENCH, summaries as (Measurement & Record<string, unknown>)[], { key: 'ratioToTorch', label: 'torch (linalg.svd / svd_lowrank)' });
}

// ---- GPU ----------------------------------------------------------------------------------------

/** The GPU goals (see the header), by the full-size case: ours ≤ goal × torch. */
const GPU_GOALS: Record<string, number> = {
  '1000×32×32': 0.333,
  '256×64×64': 0.05,
  '64×128×128': 0.05,
  '512×512': 0.5,
  '4096×4096': 0.5,
};

async function runGpu(): Promise<void> {
  const device = 'cuda';
  const measured: { ours: GpuMeasurement; goal: number | undefined; task: PeerTask }[] = [];
  for (const full of [...SVD_CASES, GPU_BIG_CASE]) {
    const c = gpuDims(full);
    const name = caseName(c);
    const a = svdInput(c, device);
    const timing = await timeGpu(`${name} linalg.svd`, svdOnce(a));
    a.dispose();
    measured.push({
      ours: { bench: BENCH, case: name, impl: 'linalg.svd', dtype: DTYPE, shape: { ...c }, ...timing, flops: svdFlops(c), bytes: svdBytes(c) },
      goal: GPU_GOALS[caseName(full)],
      task: { id: `${name} torch`, op: 'svd', dtype: DTYPE, shape: { ...c } },
    });
  }
  // --quick shrinks the matrix and the rank, not the oversampling nor the power iterations.
  const lr = { ...LOW_RANK, ...gpuDims({ m: LOW_RANK.m, n: LOW_RANK.n, rank: LOW_RANK.rank }) };
  const lrName = lowRankName(lr);
  const big = Tensor.randn([lr.m, lr.n], { dtype: DTYPE, device, seed: 1 });
  const lrTiming = await timeGpu(`${lrName} linalg.svdLowRank`, lowRankOnce(big, lr));
  big.dispose();
  measured.push({
    ours: {
      bench: BENCH, case: lrName, impl: 'linalg.svdLowRank', dtype: DTYPE, shape: { ...lr }, ...lrTiming,
      flops: lowRankFlops(lr), bytes: lowRankBytes(lr, lr.rank),
    },
    goal: 1.0,
    task: { id: `${lrName} torch`, op: 'svd_lowrank', dtype: DTYPE, shape: { ...lr } },
  });

  // The 4096² SVD in a peer run of its own (see the header); the others together.
  const bigId = `${caseName(gpuDims(GPU_BIG_CASE))} torch`;
  const tasks = measured.map((m) => m.task);
  const peer = runTorchPeer(tasks.filter((t) => t.id !== bigId));
  const bigPeer = session.peerUnavailable.has(device) ? undefined : runTorchPeer(tasks.filter((t) => t.id === bigId));
  const comparisons: GpuComparison[] = measured.map(({ ours, goal, task }) => ({
    ours,
    vs: task.op === 'svd' ? 'torch.linalg.svd' : 'torch.svd_lowrank',
    ref: peerRef(task.id === bigId ? bigPeer : peer, task.id),
    ...(goal === undefined ? {} : { goal }),
  }));
  reportGpu(BENCH, comparisons, peer ?? bigPeer);
}
