/**
 * Shared benchmark plumbing: tinybench timing, FLOP/byte accounting, the PyTorch peer (timed in
 * the same run, in a child process), the printed table and JSON lines under bench/results/.
 * A benchmark never fails a test run and never asserts a speed.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Bench } from 'tinybench';

import { backends } from '../lib/index.js';
import { packageRoot } from '../lib/native.js';

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

/** Times `fn` with tinybench: warm-up, then at least `iterations` runs or `timeMs`. */
export async function timeOurs(name: string, fn: () => unknown, opts: { iterations?: number; timeMs?: number } = {}) {
  const bench = new Bench({ iterations: opts.iterations ?? 10, time: opts.timeMs ?? 1000, warmupIterations: 2, warmupTime: 0 });
  bench.add(name, fn);
  await bench.run();
  const result = bench.tasks[0]!.result;
  if (result.state !== 'completed') throw new Error(`${name}: benchmark ${result.state}`);
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
  const run = spawnSync(python, [script], { input: JSON.stringify(tasks), env, encoding: 'utf8', maxBuffer: 1 << 24 });
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

/** Appends the measurements as JSON lines to bench/results/<bench>.jsonl with machine and commit. */
export function writeResults(bench: string, rows: (Measurement & Record<string, unknown>)[]): string {
  const dir = path.join(packageRoot(), 'bench/results');
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${bench.replace(/[^a-z0-9]+/gi, '_')}.jsonl`);
  const common = { date: new Date().toISOString(), commit: gitCommit(), machine: machine() };
  fs.appendFileSync(file, rows.map((r) => JSON.stringify({ ...common, ...r })).join('\n') + '\n');
  return file;
}

export function gflops(m: Measurement): number {
  return m.flops / (m.msMedian * 1e6);
}

export function gbps(m: Measurement): number {
  return m.bytes / (m.msMedian * 1e6);
}

/** Prints rows as an aligned text table. */
export function printTable(headers: string[], rows: (string | number)[][]): void {
  const cells = rows.map((r) => r.map((c) => (typeof c === 'number' ? formatNumber(c) : c)));
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
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
