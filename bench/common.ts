/**
 * Shared benchmark plumbing: tinybench timing with a progress line, FLOP/byte accounting, the
 * PyTorch peer (timed in the same run, in a child process), the printed tables and JSON lines.
 * A benchmark never fails a test run and never asserts a speed. The runner (bench/run.ts, the
 * `lora-kernels bench` CLI) sets the device, where results go, and collects every row for its
 * final table.
 *
 * On the GPU (`--device cuda`) every op is timed twice (timeGpu): wall time per call with a device
 * synchronize (what one blocking call costs), and CUDA events around a batch of back-to-back calls
 * (the GPU's time per call when calls are queued, launch gaps included). The peer times torch with
 * the same protocol and plan on the same GPU. Each GPU row compares one of our timings with a
 * reference (torch, or another of ours) on the event time and states the issue's goal, if any.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Bench } from 'tinybench';

import { backends } from '../lib/index.js';
import { packageRoot } from '../lib/loader.js';
import { callNative } from '../lib/native.js';

export type BenchDevice = 'cpu' | 'cuda';

export interface Measurement {
  bench: string;
  case: string;
  impl: string;
  device: string;
  dtype: string;
  msMedian: number;
  msMin: number;
  runs: number;
  flops: number;
  bytes: number;
  shape: Record<string, number>;
}

/** A row of the runner's final table: a measurement and its ratio to the bench's peer. */
export interface SummaryRow extends Measurement {
  gflops: number;
  gbps: number;
  peer: string;
  ratioToPeer: number | null;
}

/**
 * One run of benchmarks: the device, --quick, where JSON lines go (none: printed only), the rows
 * so far (CPU measurements, GPU comparisons), the progress line, the peer's python (found once)
 * why the peer cannot run on a device (once known, it is not started again) and what the CPU peer
 * last ran on (its BLAS goes into every CPU row written).
 */
export const session: {
  device: BenchDevice;
  quick: boolean;
  resultsDir: string | undefined;
  rows: SummaryRow[];
  comparisons: GpuComparisonRow[];
  stage: string;
  python: string | undefined;
  peerUnavailable: Map<BenchDevice, string>;
  peerEnv?: PeerEnv;
} = {
  device: 'cpu',
  quick: false,
  resultsDir: undefined,
  rows: [],
  comparisons: [],
  stage: '',
  python: undefined,
  peerUnavailable: new Map(),
};

/**
 * Progress on stderr: while a timing runs, a live line (on a terminal) with the elapsed time;
 * when it ends, one line with its median. tinybench awaits between iterations, so the timer
 * gets to run.
 */
function startProgress(label: string): (line: string) => void {
  const stream = process.stderr;
  const started = Date.now();
  const head = `${session.stage} ${label}`;
  const timer = stream.isTTY
    ? setInterval(() => stream.write(`\r\x1b[K${head} … ${((Date.now() - started) / 1000).toFixed(0)} s`), 250)
    : undefined;
  return (line) => {
    if (timer) clearInterval(timer);
    stream.write(`${stream.isTTY ? '\r\x1b[K' : ''}${head}: ${line}\n`);
  };
}

/** Times `fn` with tinybench: warm-up, then at least `iterations` runs or `timeMs`. */
export async function timeOurs(label: string, fn: () => unknown, opts: { iterations?: number; timeMs?: number } = {}) {
  const done = startProgress(label);
  const bench = new Bench({ iterations: opts.iterations ?? 10, time: opts.timeMs ?? 1000, warmupIterations: 2, warmupTime: 0 });
  bench.add(label, fn);
  await bench.run();
  const result = bench.tasks[0]!.result;
  if (result.state !== 'completed') {
    done(result.state);
    throw new Error(`${label}: benchmark ${result.state}`);
  }
  done(`${result.latency.p50.toFixed(2)} ms median of ${result.latency.samplesCount} runs`);
  return { msMedian: result.latency.p50, msMin: result.latency.min, runs: result.latency.samplesCount };
}

/**
 * How GPU timings are taken, ours (timeGpu) and the peer's (torch_peer.py time_cuda) alike; sent
 * to the peer with each task, hence the peer's snake_case. `iterations` wall samples at least and
 * for `min_time_ms` at least, after `warmup` calls; then `event_repeats` batches of
 * clamp(⌈event_batch_ms / wall median⌉, min_batch, max_batch) calls between two CUDA events.
 */
export interface GpuTimingPlan {
  warmup: number;
  iterations: number;
  min_time_ms: number;
  event_batch_ms: number;
  min_batch: number;
  max_batch: number;
  event_repeats: number;
}

function gpuPlan(): GpuTimingPlan {
  return session.quick
    ? { warmup: 1, iterations: 2, min_time_ms: 0, event_batch_ms: 0, min_batch: 2, max_batch: 2, event_repeats: 1 }
    : { warmup: 3, iterations: 20, min_time_ms: 100, event_batch_ms: 25, min_batch: 3, max_batch: 1000, event_repeats: 3 };
}

function eventBatch(plan: GpuTimingPlan, wallMs: number): number {
  return Math.min(plan.max_batch, Math.max(plan.min_batch, Math.ceil(plan.event_batch_ms / wallMs)));
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[sorted.length >> 1]!;
}

/** The CUDA device the GPU benchmarks run on ('cuda'). */
const CUDA_DEVICE = 0;

export interface GpuTiming {
  /** Median wall time of one call followed by a device synchronize. */
  wallMs: number;
  wallMinMs: number;
  runs: number;
  /** CUDA-event time per call over `batch` back-to-back calls (median of the batches). */
  eventMs: number;
  batch: number;
  /** The kernels one call launched (native takeOpPlans): which mainloop, tile and split ran. */
  kernels: string;
}

/** Times `fn` (one op call on the CUDA device) by the GPU plan: wall with a synchronize, then CUDA events. */
export async function timeGpu(label: string, fn: () => unknown): Promise<GpuTiming> {
  const plan = gpuPlan();
  const sync = () => callNative((m) => m.deviceSynchronize(CUDA_DEVICE));
  callNative((m) => m.takeOpPlans());
  fn();
  const kernels = callNative((m) => m.takeOpPlans());
  const done = startProgress(label);
  const bench = new Bench({ iterations: plan.iterations, time: plan.min_time_ms, warmupIterations: plan.warmup, warmupTime: 0, throws: true });
  bench.add(label, () => {
    fn();
    sync();
  });
  await bench.run();  // throws: an op's own error (a LoraKernelsError) surfaces as it is
  const result = bench.tasks[0]!.result;
  if (result.state !== 'completed') throw new Error(`${label}: benchmark ${result.state}`);
  const { latency } = result;
  const batch = eventBatch(plan, latency.p50);
  const perCall: number[] = [];
  for (let i = 0; i < plan.event_repeats; i++) {
    const start = callNative((m) => m.eventRecord(CUDA_DEVICE));
    for (let j = 0; j < batch; j++) fn();
    const stop = callNative((m) => m.eventRecord(CUDA_DEVICE));
    sync();
    perCall.push(callNative((m) => m.eventElapsedMs(start, stop)) / batch);
  }
  const eventMs = median(perCall);
  done(`wall ${latency.p50.toFixed(3)} ms (median of ${latency.samplesCount}), events ${eventMs.toFixed(3)} ms per call (${plan.event_repeats} × ${batch} calls)`);
  return { wallMs: latency.p50, wallMinMs: latency.min, runs: latency.samplesCount, eventMs, batch, kernels };
}

/**
 * A GPU case's dimensions: as given, or with --quick each divided by 64 (at least 1): tiny shapes
 * that run the plumbing in seconds, even on the emulated device. Their timings mean nothing.
 */
export function gpuDims<T extends Record<string, number>>(dims: T): T {
  if (!session.quick) return dims;
  return Object.fromEntries(Object.entries(dims).map(([key, v]) => [key, Math.max(1, Math.round(v / 64))])) as T;
}

/** One task for the torch peer; the runner adds the device (and on the GPU the timing plan). */
export interface PeerTask {
  id: string;
  op: 'matmul' | 'lora_unfused' | 'lora_backward' | 'dora_peft' | 'multi_gather_bmm' | 'svd' | 'svd_numpy' | 'svd_lowrank' | 'attention_naive' | 'attention_sdpa';
  dtype: string;
  shape: Record<string, number>;
  /** CPU: timed samples after one warm-up call (default 10). */
  iterations?: number;
  /** matmul on the GPU with float32: TF32 allowed (default false: cuBLAS's exact float32). */
  allow_tf32?: boolean;
  /** multi_gather_bmm: each row's adapter and each adapter's scale, the same as ours. */
  ids?: number[];
  scales?: number[];
}

export interface PeerResult {
  msMedian: number;
  msMin: number;
  runs: number;
  /** GPU: CUDA-event time per call (the same protocol as timeGpu). */
  eventMs?: number;
  batch?: number;
}

/** The BLAS under the CPU peer, as torch_peer.py's blas_info found it in the process. */
export interface PeerBlas {
  kind: 'openblas' | 'mkl' | 'blis' | 'atlas' | 'reference' | 'unknown';
  libraries: string[];
  /** OpenBLAS's build string: version, the core type its kernels were picked for. */
  config: string | null;
  /** float32 512³ GEMM through torch: the reference BLAS ran ~6 GFLOP/s, OpenBLAS 90–200 on 2 Zen 4 cores. */
  gemm_gflops: number;
}

/** What ran the peer: torch's version and threads, numpy's version, the BLAS; on the GPU also CUDA, cuBLAS and the GPU it saw. */
export interface PeerEnv {
  torch: string;
  threads: number;
  /** numpy's version in the peer's python (null without numpy; svd_numpy needs it). */
  numpy?: string | null;
  blas?: PeerBlas;
  cuda?: string | null;
  cublas?: string | null;
  gpu?: string;
  capability?: string;
}

/** Below this a peer's 512³ GEMM is not an optimized BLAS's (a warning, and every ratio to it is suspect). */
const SLOW_BLAS_GFLOPS = 10;

/** The peer in one line: torch, its BLAS (the library, OpenBLAS's build string, the GEMM rate) or its GPU stack. */
export function describePeer(env: PeerEnv): string {
  if (env.gpu) return `torch ${env.torch}, CUDA ${env.cuda ?? '?'}, cuBLAS ${env.cublas ?? '?'}, on ${env.gpu} (compute capability ${env.capability})`;
  const blas = env.blas;
  if (!blas) return `torch ${env.torch} (BLAS unknown: an older bench/peers/torch_peer.py)`;
  const library = blas.config ?? (blas.libraries.map((l) => path.basename(l)).join(', ') || 'no BLAS library found in the process');
  return `torch ${env.torch}${env.numpy ? `, numpy ${env.numpy}` : ''}, BLAS: ${blas.kind} (${library}), float32 512³ GEMM ${blas.gemm_gflops.toFixed(1)} GFLOP/s`;
}

/** Says loudly when the CPU peer runs on the reference BLAS (or anything as slow): its ratios would flatter us. */
function warnSlowBlas(env: PeerEnv): void {
  const blas = env.blas;
  if (!blas || (blas.kind !== 'reference' && blas.gemm_gflops >= SLOW_BLAS_GFLOPS)) return;
  const bar = '!'.repeat(100);
  console.log(`${bar}\nWARNING: the torch peer runs on ${blas.kind === 'reference' ? 'the reference BLAS' : 'a slow BLAS'} ` +
    `(${blas.libraries.join(', ') || 'unknown library'}; 512³ GEMM ${blas.gemm_gflops.toFixed(1)} GFLOP/s): every ratio to torch ` +
    `below flatters us by up to ~80×.\nInstall an optimized BLAS for the peer (Debian: apt-get install libopenblas0-pthread) and rerun.\n${bar}`);
}

export interface PeerRun {
  results: Map<string, PeerResult>;
  env: PeerEnv;
}

/**
 * The peer's python: LORA_KERNELS_PYTHON, else the first python3 on PATH that has torch (found
 * without importing it), else /usr/bin/python3 (Debian's python3-torch). Chosen once per run.
 */
function peerPython(): string {
  if (session.python) return session.python;
  const name = process.platform === 'win32' ? 'python3.exe' : 'python3';
  const hasTorch = (python: string) => spawnSync(python, ['-c', 'import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is None)'],
    { stdio: 'ignore', timeout: 30_000 }).status === 0;
  const onPath = (process.env['PATH'] ?? '').split(path.delimiter).filter(Boolean).map((dir) => path.join(dir, name)).filter((f) => fs.existsSync(f));
  session.python = process.env['LORA_KERNELS_PYTHON'] || onPath.find(hasTorch) || '/usr/bin/python3';
  return session.python;
}

/**
 * Times torch on the tasks in a child python (bench/peers/torch_peer.py) on the session's device.
 * Prints a note and returns undefined when it cannot run (no python, no torch, no CUDA in torch:
 * remembered for the rest of the run). Time-boxed (LORA_KERNELS_PEER_TIMEOUT_S, default 600 s on
 * the CPU, 120 s on the GPU): a peer that runs over is killed and the tasks it finished are kept.
 * OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are removed for this child only: they hold OpenBLAS to its
 * AVX2 kernel, and the peer should run at its best; so is LD_PRELOAD.
 */
export function runTorchPeer(tasks: PeerTask[]): PeerRun | undefined {
  const device = session.device;
  const unavailable = session.peerUnavailable.get(device);
  if (unavailable) {
    console.log(`note: ${unavailable}`);
    return undefined;
  }
  const python = peerPython();
  const env = { ...process.env };
  delete env['OPENBLAS_CORETYPE'];
  delete env['OPENBLAS_L2_SIZE'];
  delete env['LD_PRELOAD'];  // a sanitizer runtime preloaded for our addon (test:sanitize) is not for python
  const timeoutS = Number(process.env['LORA_KERNELS_PEER_TIMEOUT_S'] ?? (device === 'cuda' ? 120 : 600));
  const input = tasks.map((task) => ({ ...task, device, ...(device === 'cuda' ? { timing: gpuPlan() } : {}) }));
  const script = path.join(packageRoot(), 'bench/peers/torch_peer.py');
  const done = startProgress(`torch peer (${tasks.length} task${tasks.length === 1 ? '' : 's'}, ${python})`);
  const run = spawnSync(python, [script], {
    input: JSON.stringify(input), env, encoding: 'utf8', maxBuffer: 1 << 24, timeout: timeoutS * 1000, killSignal: 'SIGKILL',
  });
  const failure = (run.error as NodeJS.ErrnoException | undefined)?.code;
  const timedOut = failure === 'ETIMEDOUT';
  done(timedOut ? `stopped after ${timeoutS} s` : run.status === 0 ? 'done' : 'failed');

  let peerEnv: PeerEnv | undefined;
  const results = new Map<string, PeerResult>();
  for (const line of (run.stdout ?? '').split('\n').filter((l) => l.startsWith('{'))) {
    const rec = JSON.parse(line) as PeerEnv & { id?: string; error?: string; ms_median?: number; ms_min?: number; runs?: number; event_ms?: number; batch?: number };
    if (rec.torch) peerEnv = rec;
    else if (rec.error) console.log(`note: torch peer, ${rec.id}: ${rec.error}`);
    else if (rec.id && rec.ms_median !== undefined) {
      results.set(rec.id, { msMedian: rec.ms_median, msMin: rec.ms_min!, runs: rec.runs!, eventMs: rec.event_ms, batch: rec.batch });
    }
  }
  const stderr = (run.stderr ?? '').trim();
  if (peerEnv && device === 'cpu') {
    session.peerEnv = peerEnv;
    console.log(`peer: ${describePeer(peerEnv)}`);
    warnSlowBlas(peerEnv);
  }
  if (timedOut) {
    console.log(`note: torch peer stopped after ${timeoutS} s (LORA_KERNELS_PEER_TIMEOUT_S) with ${results.size} of ${tasks.length} tasks timed`);
    return peerEnv && { results, env: peerEnv };
  }
  if (peerEnv) {
    if (run.status !== 0) console.log(`note: torch peer failed after ${results.size} of ${tasks.length} tasks: ${stderr.split('\n').pop() || `exit ${run.status ?? run.signal}`}`);
    return { results, env: peerEnv };
  }

  // It did not start, or cannot serve this device: say why, and do not start it again this run.
  const environmental = failure === 'ENOENT' || run.status === 3 || /No module named 'torch'/.test(stderr);
  const reason = failure === 'ENOENT' ? `${python} was not found (set LORA_KERNELS_PYTHON to a python with torch)`
    : /No module named 'torch'/.test(stderr) ? `${python} has no torch (install it, or set LORA_KERNELS_PYTHON)`
    : stderr.split('\n').pop() || `exit ${run.status ?? run.signal}`;
  const note = `torch peer skipped: ${reason}`;
  if (environmental) session.peerUnavailable.set(device, note);
  console.log(`note: ${note}`);
  return undefined;
}

function gitCommit(): string {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: packageRoot(), encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return 'unknown';
  }
}

export function machine() {
  const info = backends();
  return {
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.cpus().length,
    simd: info.cpu.simd,
    threads: info.cpu.threads,
    cuda: info.cuda.available ? info.cuda.devices.map((d) => d.name).join(', ') : `none (${info.cuda.reason})`,
    node: process.versions.node,
  };
}

/**
 * Records the bench's rows for the final table and, when the run has a results folder, appends
 * them as JSON lines to <dir>/<bench>.jsonl with machine and commit. `peer` names the row field
 * holding each row's ratio to the bench's peer, and the peer in words.
 */
export function writeResults(bench: string, rows: (Measurement & Record<string, unknown>)[], peer: { key: string; label: string }): void {
  session.rows.push(...rows.map((r) => ({
    ...r, gflops: gflops(r), gbps: gbps(r), peer: peer.label, ratioToPeer: typeof r[peer.key] === 'number' ? (r[peer.key] as number) : null,
  })));
  appendJsonLines(bench, rows, session.peerEnv ? { peerEnv: session.peerEnv } : {});
}

/** Appends rows to <resultsDir>/<name>.jsonl with the date, commit and machine (when the run has a results folder). */
function appendJsonLines(name: string, rows: object[], extra: object = {}): void {
  if (!session.resultsDir) return;
  fs.mkdirSync(session.resultsDir, { recursive: true });
  const file = path.join(session.resultsDir, `${name.replace(/[^a-z0-9]+/gi, '_')}.jsonl`);
  const common = { date: new Date().toISOString(), commit: gitCommit(), machine: machine(), ...extra };
  fs.appendFileSync(file, rows.map((r) => JSON.stringify({ ...common, ...r })).join('\n') + '\n');
  console.log(`results appended to ${file}`);
}

export function gflops(m: Measurement): number {
  return m.flops / (m.msMedian * 1e6);
}

export function gbps(m: Measurement): number {
  return m.bytes / (m.msMedian * 1e6);
}

/** One of our GPU timings with what it computed: FLOPs and compulsory bytes of the call. */
export interface GpuMeasurement extends GpuTiming {
  bench: string;
  case: string;
  impl: string;
  dtype: string;
  shape: Record<string, number>;
  flops: number;
  bytes: number;
}

/**
 * A row of a GPU table: our measurement against a reference (torch in the same run, or another of
 * our timings), compared on the CUDA-event time; `goal`: ours ≤ goal × the reference.
 */
export interface GpuComparison {
  ours: GpuMeasurement;
  vs: string;
  /** Undefined when the peer did not time it (see the notes). */
  ref: { wallMs: number; eventMs: number } | undefined;
  goal?: number;
}

export interface GpuComparisonRow extends GpuMeasurement {
  tflops: number;
  gbps: number;
  vs: string;
  vsWallMs: number | null;
  vsEventMs: number | null;
  /** ours / reference, CUDA-event times (the goal's measure) and wall times. */
  ratio: number | null;
  ratioWall: number | null;
  goal: string | null;
  goalMet: boolean | null;
}

/** The peer's timing of task `id` as a reference row, when it has one. */
export function peerRef(peer: PeerRun | undefined, id: string): GpuComparison['ref'] {
  const res = peer?.results.get(id);
  return res?.eventMs === undefined ? undefined : { wallMs: res.msMedian, eventMs: res.eventMs };
}

/** The GPU the benchmarks ran on, from backends(). */
export function gpuDevice(): { name: string; computeCapability: string; gemmMainloop: string; emulated: boolean } {
  const { cuda } = backends();
  return { ...cuda.devices[CUDA_DEVICE]!, emulated: cuda.emulated };
}

function goalMet(row: GpuComparisonRow): string {
  if (row.goalMet === null) return row.goal ? 'no reference' : '';
  return row.goalMet ? 'met' : 'NOT MET';
}

/**
 * Prints a bench's GPU table (after a line naming our GPU and the peer's torch, CUDA, cuBLAS and
 * GPU), keeps its rows for the run's goal summary and appends them as JSON lines to
 * <dir>/<bench>_cuda.jsonl. TFLOP/s and GB/s are ours, from the event time.
 */
export function reportGpu(bench: string, comparisons: GpuComparison[], peer: PeerRun | undefined): void {
  const gpu = gpuDevice();
  const peerText = peer ? describePeer(peer.env) : 'none (see the note above)';
  console.log(`gpu: ${gpu.name}, compute capability ${gpu.computeCapability}${gpu.emulated ? ' (the SIMT emulator: timings mean nothing)' : ''}` +
    `${session.quick ? '; --quick: tiny shapes, plumbing only' : ''}\npeer: ${peerText}`);
  const rows: GpuComparisonRow[] = comparisons.map(({ ours, vs, ref, goal }) => {
    const ratio = ref ? ours.eventMs / ref.eventMs : null;
    return {
      ...ours, tflops: ours.flops / (ours.eventMs * 1e9), gbps: ours.bytes / (ours.eventMs * 1e6), vs,
      vsWallMs: ref?.wallMs ?? null, vsEventMs: ref?.eventMs ?? null, ratio, ratioWall: ref ? ours.wallMs / ref.wallMs : null,
      goal: goal === undefined ? null : `≤ ${Number.isInteger(goal) ? goal.toFixed(1) : goal}× ${vs}`, goalMet: goal === undefined || ratio === null ? null : ratio <= goal,
    };
  });
  // One of our timings compared with several references: its numbers once, on its first row.
  const table = rows.map((r, i) => {
    const first = i === 0 || comparisons[i - 1]!.ours !== comparisons[i]!.ours;
    return [first ? r.case : '', first ? r.dtype : '', first ? r.impl : '', first ? r.wallMs : '', first ? r.eventMs : '',
      first ? r.tflops : '', first ? r.gbps : '', r.vs, r.vsWallMs ?? NaN, r.vsEventMs ?? NaN, r.ratio ?? NaN, r.ratioWall ?? NaN, r.goal ?? '', goalMet(r)];
  });
  printTable(['case', 'dtype', 'impl', 'wall ms', 'event ms', 'TFLOP/s', 'GB/s', 'vs', 'vs wall ms', 'vs event ms', '× vs (event)', '× vs (wall)', 'goal', 'met'],
    table, { significant: 3 });
  const kernels = new Map(rows.map((r) => [`${r.case} ${r.dtype} ${r.impl}`, r.kernels]));
  for (const [row, plan] of kernels) console.log(`kernels: ${row}: ${plan}`);
  session.comparisons.push(...rows);
  appendJsonLines(`${bench}_cuda`, rows, { device: 'cuda', gpu, peer: peer?.env ?? null, quick: session.quick });
}

/** Prints the run's GPU rows that carry a goal, and how many were met. */
export function printGoals(): void {
  const goals = session.comparisons.filter((r) => r.goal);
  printTable(['bench', 'case', 'dtype', 'impl', 'event ms', 'TFLOP/s', '× vs (event)', 'goal', 'met'],
    goals.map((r) => [r.bench, r.case, r.dtype, r.impl, r.eventMs, r.tflops, r.ratio ?? NaN, r.goal!, goalMet(r)]), { significant: 3 });
  const unjudged = goals.filter((r) => r.goalMet === null).length;
  console.log(`${goals.filter((r) => r.goalMet).length} of ${goals.length} goals met${unjudged ? ` (${unjudged} without a reference timing)` : ''}`);
}

/**
 * Prints rows as an aligned text table: text columns left-aligned, number columns right-aligned.
 * `significant`: numbers below 10 with that many significant digits (GPU times are fractions of
 * a millisecond), instead of two decimals.
 */
export function printTable(headers: string[], rows: (string | number)[][], opts: { significant?: number } = {}): void {
  const cells = rows.map((r) => r.map((c) => (typeof c === 'number' ? formatNumber(c, opts.significant) : c)));
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((r) => r[i]!.length)));
  const numeric = headers.map((_, i) => rows.some((r) => typeof r[i] === 'number'));
  const line = (r: string[]) => r.map((c, i) => (numeric[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  console.log(line(headers));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const r of cells) console.log(line(r));
}

function formatNumber(v: number, significant?: number): string {
  if (!Number.isFinite(v)) return '—';
  if (Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) >= 10) return v.toFixed(1);
  if (significant && v !== 0) return v.toPrecision(significant);
  return v.toFixed(2);
}
