/** `npm run bench [op]`: runs every benchmark, or the named ones. */
import { machine } from './common.js';
import * as loraLinear from './lora_linear.bench.js';
import * as loraMulti from './lora_multi.bench.js';
import * as dora from './dora.bench.js';
import * as loraBackward from './lora_backward.bench.js';

const BENCHES: Record<string, { run(): Promise<void> }> = {
  'lora.forward': loraLinear,
  'lora.forwardMulti': loraMulti,
  'lora.doraForward': dora,
  'lora.backward': loraBackward,
};

async function main(): Promise<void> {
  const wanted = process.argv.slice(2);
  const unknown = wanted.filter((w) => !(w in BENCHES));
  if (unknown.length) {
    console.error(`unknown benchmark(s): ${unknown.join(', ')}; available: ${Object.keys(BENCHES).join(', ')}`);
    process.exit(2);
  }
  console.log('machine:', JSON.stringify(machine()));
  for (const [name, bench] of Object.entries(BENCHES)) {
    if (wanted.length && !wanted.includes(name)) continue;
    console.log(`\n== ${name}`);
    await bench.run();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
