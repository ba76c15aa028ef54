/** The benchmark runner behind `lora-kernels bench [op...]` and `npm run bench`. */
import { machine, printTable, session, type SummaryRow } from './common.js';
import * as loraLinear from './lora_linear.bench.js';
import * as loraMulti from './lora_multi.bench.js';
import * as dora from './dora.bench.js';
import * as loraBackward from './lora_backward.bench.js';

export const BENCHES: Readonly<Record<string, { run(): Promise<void> }>> = {
  'lora.forward': loraLinear,
  'lora.forwardMulti': loraMulti,
  'lora.doraForward': dora,
  'lora.backward': loraBackward,
};

/**
 * Runs the named benchmarks (all when `names` is empty) in order, each printing its own table,
 * then one final table of every row. JSON lines go to `resultsDir` when given.
 */
export async function runBenchmarks(names: readonly string[], opts: { resultsDir?: string } = {}): Promise<SummaryRow[]> {
  const unknown = names.filter((n) => !(n in BENCHES));
  if (unknown.length) throw new Error(`unknown benchmark(s): ${unknown.join(', ')}; available: ${Object.keys(BENCHES).join(', ')}`);
  const chosen = Object.keys(BENCHES).filter((n) => names.length === 0 || names.includes(n));
  session.resultsDir = opts.resultsDir;
  session.rows = [];
  console.log('machine:', JSON.stringify(machine()));
  for (const [i, name] of chosen.entries()) {
    session.stage = `[${i + 1}/${chosen.length} ${name}]`;
    console.log(`\n== ${name}`);
    await BENCHES[name]!.run();
  }
  console.log('\n== summary');
  printTable(['bench', 'case', 'impl', 'dtype', 'ms (median)', 'GFLOP/s', 'GB/s', '× peer', 'peer'],
    session.rows.map((r) => [r.bench, r.case, r.impl, r.dtype, r.msMedian, r.gflops, r.gbps, r.ratioToPeer ?? NaN, r.peer]));
  return session.rows;
}
