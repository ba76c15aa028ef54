/** The benchmark runner behind `lora-kernels bench [op...]` and `npm run bench`. */
import { backends } from '../lib/index.js';
import { type BenchDevice, describePeer, machine, printGoals, printTable, session, type SummaryRow, type GpuComparisonRow } from './common.js';
import * as loraLinear from './lora_linear.bench.js';
import * as loraMulti from './lora_multi.bench.js';
import * as dora from './dora.bench.js';
import * as loraBackward from './lora_backward.bench.js';
import * as quantMatmul from './quant.bench.js';
import * as linalgBench from './linalg.bench.js';
import * as flashLora from './flash_lora.bench.js';

export const BENCHES: Readonly<Record<string, { run(device: BenchDevice): Promise<void> }>> = {
  'lora.forward': loraLinear,
  'lora.forwardMulti': loraMulti,
  'lora.doraForward': dora,
  'lora.backward': loraBackward,
  'quant.matmul': quantMatmul,
  linalg: linalgBench,
  'attention.flashLora': flashLora,
};

export interface BenchOptions {
  /** Where JSON lines go; none: printed only. */
  resultsDir?: string;
  /** 'cpu' (default): the CPU case lists; 'cuda': the GPU case lists on the first CUDA device. */
  device?: BenchDevice;
  /** GPU only: tiny shapes and 2 iterations, to check the plumbing (the timings mean nothing). */
  quick?: boolean;
}

/**
 * Runs the named benchmarks (all when `names` is empty) in order, each printing its own table,
 * then one final table of every row (on the GPU: of every goal). JSON lines go to `resultsDir`
 * when given.
 */
export async function runBenchmarks(names: readonly string[], opts: BenchOptions = {}): Promise<SummaryRow[] | GpuComparisonRow[]> {
  const unknown = names.filter((n) => !(n in BENCHES));
  if (unknown.length) throw new Error(`unknown benchmark(s): ${unknown.join(', ')}; available: ${Object.keys(BENCHES).join(', ')}`);
  const device = opts.device ?? 'cpu';
  const quick = opts.quick ?? false;
  if (quick && device !== 'cuda') throw new Error('--quick is for --device cuda only (tiny GPU shapes to check the plumbing)');
  if (device === 'cuda') {
    const { cuda } = backends();
    if (!cuda.available) throw new Error(`--device cuda: no CUDA device: ${cuda.reason ?? 'not available'}`);
    if (cuda.emulated && !quick) {
      throw new Error('--device cuda: the CUDA device is the SIMT emulator (kernels run on the CPU, ~1000× slower than a GPU); ' +
        'only --quick (tiny shapes, plumbing only) runs there');
    }
  }
  const chosen = Object.keys(BENCHES).filter((n) => names.length === 0 || names.includes(n));
  Object.assign(session, { device, quick, resultsDir: opts.resultsDir, rows: [], comparisons: [], python: undefined, peerUnavailable: new Map(), peerEnv: undefined });
  console.log('machine:', JSON.stringify(machine()));
  for (const [i, name] of chosen.entries()) {
    session.stage = `[${i + 1}/${chosen.length} ${name}${device === 'cuda' ? ' cuda' : ''}]`;
    console.log(`\n== ${name}${device === 'cuda' ? ' on the GPU' : ''}`);
    await BENCHES[name]!.run(device);
  }
  if (device === 'cuda') {
    console.log('\n== goals (ours ≤ goal × the reference, CUDA-event time per call)');
    printGoals();
    return session.comparisons;
  }
  console.log('\n== summary');
  printTable(['bench', 'case', 'impl', 'dtype', 'ms (median)', 'GFLOP/s', 'GB/s', '× peer', 'peer'],
    session.rows.map((r) => [r.bench, r.case, r.impl, r.dtype, r.msMedian, r.gflops, r.gbps, r.ratioToPeer ?? NaN, r.peer]));
  if (session.peerEnv) console.log(`torch peer: ${describePeer(session.peerEnv)}`);
  return session.rows;
}
