/**
 * Shared benchmark plumbing: tinybench timing with a progress line, FLOP/byte accounting, the
 * PyTorch peer (timed in the same run, in a child process), the printed tables and JSON lines.
 * A benchmark never fails a test run and never asserts a speed. The runner (bench/run.ts, the
 * `lora-kernels bench` CLI) sets where results go and collects every row for its final table.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Bench } from 'tinybench';

import { backends } from '../lib/index.js';
import { packageRoot } from '../lib/loader.js';

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

/** One run of benchmarks: where JSON lines go (none: printed only), the rows so far, the progress line. */
export const session: { resultsDir: string | undefined; rows: SummaryRow[]; stage: string } = {
  resultsDir: undefined,
  rows: [],
  stage: '',
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

export interface PeerTask {
  id: string;
  op: string;
  dtype: string;
  shape: Record<string, number>;
  iterations?: number;
}

export interface PeerResult {
  msMedian: number;
  msMin: number;
  runs: number;
}

/**
 * Runs PyTorch (Debian's python3-torch through /usr/bin/python3) on the tasks. Returns undefined
 * with a note when torch is absent. OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are removed for this
 * child only: they hold OpenBLAS to its AVX2 kernel, and the peer should run at its best.
 */
export function runTorchPeer(tasks: PeerTask[]): { results: Map<string, PeerResult>; version: string } | { note: string } {
  const python = '/usr/bin/python3';
  if (!fs.existsSync(python)) return { note: 'no /usr/bin/python3: peer skipped' };
  const env = { ...process.env };
  delete env['OPENBLAS_CORETYPE'];
  delete env['OPENBLAS_L2_SIZE'];
  const script = path.join(packageRoot(), 'bench/peers/torch_peer.py');
  const done = startProgress(`torch peer (${tasks.length} task${tasks.length === 1 ? '' : 's'})`);
  const run = spawnSync(python, [script], { input: JSON.stringify(tasks), env, encoding: 'utf8', maxBuffer: 1 << 24 });
  done(run.status === 0 ? 'done' : 'failed');
  if (run.status !== 0) {
    const reason = /No module named 'torch'/.test(run.stderr) ? 'python3-torch is not installed' : run.stderr.trim().split('\n').pop();
    return { note: `torch peer skipped: ${reason}` };
  }
  const results = new Map<string, PeerResult>();
  let version = '?';
  for (const line of run.stdout.trim().split('\n')) {
    const rec = JSON.parse(line) as { id?: string; ms_median?: number; ms_min?: number; runs?: number; torch?: string };
    if (rec.torch) version = rec.torch;
    if (rec.id && rec.ms_median !== undefined) results.set(rec.id, { msMedian: rec.ms_median, msMin: rec.ms_min!, runs: rec.runs! });
  }
  return { results, version };
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
  if (!session.resultsDir) return;
  fs.mkdirSync(session.resultsDir, { recursive: true });
  const file = path.join(session.resultsDir, `${bench.replace(/[^a-z0-9]+/gi, '_')}.jsonl`);
  const common = { date: new Date().toISOString(), commit: gitCommit(), machine: machine() };
  fs.appendFileSync(file, rows.map((r) => JSON.stringify({ ...common, ...r })).join('\n') + '\n');
  console.log(`results appended to ${file}`);
}

export function gflops(m: Measurement): number {
  return m.flops / (m.msMedian * 1e6);
}

export function gbps(m: Measurement): number {
  return m.bytes / (m.msMedian * 1e6);
}

/** Prints rows as an aligned text table: text columns left-aligned, number columns right-aligned. */
export function printTable(headers: string[], rows: (string | number)[][]): void {
  const cells = rows.map((r) => r.map((c) => (typeof c === 'number' ? formatNumber(c) : c)));
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((r) => r[i]!.length)));
  const numeric = headers.map((_, i) => rows.some((r) => typeof r[i] === 'number'));
  const line = (r: string[]) => r.map((c, i) => (numeric[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  console.log(line(headers));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const r of cells) console.log(line(r));
}

function formatNumber(v: number): string {
  if (!Number.isFinite(v)) return '—';
  if (Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) >= 10) return v.toFixed(1);
  return v.toFixed(2);
}
