// Every CUDA op once, on small odd shapes, each result checked against the float64 reference:
// the program compute-sanitizer (memcheck, racecheck) and Nsight Compute run on a real GPU
// (../shared/gpu/run.sh), and a fast check of the emulated build. Needs `npm run build:ts`.
//
//   node scripts/gpu-smoke.mjs                                                    (the local build)
//   LORA_KERNELS_ADDON=$PWD/build-emu/Release/lora_kernels.node node scripts/gpu-smoke.mjs
//
// One line per op; every op is tried. Exit 0 when all pass, 1 when any fails, 2 without a CUDA
// device (or a binary that loads).
// Shapes: K and N odd (scalar loads and ragged tiles), plus one with 16-byte aligned rows (vector
// loads); decode M=1 and M=16; forwardMulti with T ≤ 64 (decode) and T > 64 (prefill).
import { createRequire } from 'node:module';

// This runs where a GPU is expected to work; under compute-sanitizer the CUDA probe's child process
// would be a second instrumented Node start-up for nothing.
process.env.LORA_KERNELS_CUDA_PROBE ??= 'in-process';
const require = createRequire(import.meta.url);
const { backends, lora, reference, synchronize, Tensor } = require('..');

const device = 'cuda';
let cuda;
try {
  cuda = backends().cuda;
} catch (error) {
  console.error(`gpu-smoke: ${error.message}`);  // no usable binary
  process.exit(2);
}
if (!cuda.available) {
  console.error(`gpu-smoke: no CUDA device: ${cuda.reason}`);
  process.exit(2);
}
console.log(`gpu-smoke on ${cuda.devices[0].name} (compute capability ${cuda.devices[0].computeCapability}${cuda.emulated ? ', emulated' : ''})`);

let seed = 0;
const randn = (shape, dtype) => Tensor.randn(shape, { dtype, device, seed: ++seed });
/** An output full of NaN: an element a kernel forgets to write fails the comparison. */
const poisoned = (shape, dtype) => Tensor.from(new Float32Array(shape.reduce((p, d) => p * d, 1)).fill(NaN), shape, { dtype }).to(device);
/** Dropout with p = 1/4: 0 or 4/3 (on the LoRA branch only). */
const dropoutMask = (shape, dtype) => {
  const keep = Tensor.randn(shape, { seed: ++seed }).toFloat32();
  return Tensor.from(Array.from(keep, (z) => (z > -0.6745 ? 4 / 3 : 0)), shape, { dtype }).to(device);
};

const checks = [];
/** An op to try: `fn` makes its inputs, runs it and compares (throws on a mismatch). */
const check = (name, fn) => checks.push({ name, fn });
const close = (actual, expected, dtype, label) => reference.assertClose(actual, expected, { dtype, label });

// ---- lora.forward ------------------------------------------------------------------------------------
function forwardCase({ lead, k, n, r, dtype, bias = false, mask = false, allowTf32 = false }) {
  const x = randn([...lead, k], dtype);
  const args = { x, weight: randn([n, k], dtype), scale: 0.75 };
  if (bias) args.bias = randn([n], dtype);
  if (r) Object.assign(args, { a: randn([r, k], dtype), b: randn([n, r], dtype) });
  if (mask) args.dropoutMask = dropoutMask(x.shape, dtype);
  const y = lora.forward({ ...args, allowTf32, out: poisoned([...lead, n], dtype) });
  close(y, reference.lora.forward(args), allowTf32 ? 'tf32' : dtype);
}
const odd = { lead: [3, 13], k: 45, n: 77 };
check('lora.forward float32 base only', () => forwardCase({ ...odd, r: 0, dtype: 'float32' }));
check('lora.forward float32 adapter, bias, dropout mask', () => forwardCase({ ...odd, r: 7, dtype: 'float32', bias: true, mask: true }));
check('lora.forward float32 allowTf32, adapter, bias', () => forwardCase({ ...odd, r: 7, dtype: 'float32', bias: true, allowTf32: true }));
check('lora.forward float16 adapter, bias', () => forwardCase({ ...odd, r: 7, dtype: 'float16', bias: true }));
check('lora.forward bfloat16 adapter, dropout mask', () => forwardCase({ ...odd, r: 7, dtype: 'bfloat16', mask: true }));
check('lora.forward bfloat16 base only, bias', () => forwardCase({ ...odd, r: 0, dtype: 'bfloat16', bias: true }));
check('lora.forward bfloat16 aligned rows [70,128]x[96,128] r=16', () => forwardCase({ lead: [70], k: 128, n: 96, r: 16, dtype: 'bfloat16', bias: true }));
check('lora.forward float32 aligned rows [70,128]x[96,128] r=16', () => forwardCase({ lead: [70], k: 128, n: 96, r: 16, dtype: 'float32' }));
check('lora.forward bfloat16 decode M=1', () => forwardCase({ lead: [1], k: 301, n: 131, r: 5, dtype: 'bfloat16', bias: true }));
check('lora.forward bfloat16 decode M=16', () => forwardCase({ lead: [16], k: 301, n: 131, r: 5, dtype: 'bfloat16', mask: true }));
check('lora.forward float32 decode M=1', () => forwardCase({ lead: [1], k: 301, n: 131, r: 5, dtype: 'float32' }));

// ---- lora.backward -----------------------------------------------------------------------------------
function backwardCase({ lead, k, n, r, dtype, mask = false, needInputGrad = true }) {
  const x = randn([...lead, k], dtype);
  const args = { gradOutput: randn([...lead, n], dtype), x, weight: randn([n, k], dtype), a: randn([r, k], dtype), b: randn([n, r], dtype), scale: 1.5 };
  if (mask) args.dropoutMask = dropoutMask(x.shape, dtype);
  const grads = lora.backward({ ...args, needInputGrad });
  const expected = reference.lora.backward(args);
  close(grads.gradA, expected.gradA, dtype, 'gradA');
  close(grads.gradB, expected.gradB, dtype, 'gradB');
  if (needInputGrad) close(grads.gradInput, expected.gradInput, dtype, 'gradInput');
  else if (grads.gradInput !== undefined) throw new Error('gradInput returned with needInputGrad: false');
}
check('lora.backward float32 dropout mask', () => backwardCase({ ...odd, r: 7, dtype: 'float32', mask: true }));
check('lora.backward bfloat16 needInputGrad=false', () => backwardCase({ ...odd, r: 7, dtype: 'bfloat16', needInputGrad: false }));
check('lora.backward float16 dropout mask, needInputGrad=false', () => backwardCase({ ...odd, r: 3, dtype: 'float16', mask: true, needInputGrad: false }));

// ---- lora.forwardMulti -------------------------------------------------------------------------------
const MIXED_RANKS = [1, 7, 16, 3, 16];
function multiCase({ rows, k, n, dtype }) {
  const adapters = MIXED_RANKS.length;
  const rMax = Math.max(...MIXED_RANKS);
  // Every adapter and base-only rows (-1), in a scattered order.
  const ids = Int32Array.from({ length: rows }, (_, t) => ((t * 7 + 3) % (adapters + 1)) - 1);
  const args = {
    x: randn([rows, k], dtype), weight: randn([n, k], dtype), bias: randn([n], dtype),
    a: randn([adapters, rMax, k], dtype), b: randn([adapters, n, rMax], dtype),
    ranks: Tensor.from(Int32Array.from(MIXED_RANKS), [adapters], { dtype: 'int32' }).to(device),
    scales: Tensor.from(Float32Array.from(MIXED_RANKS, (r, l) => 0.25 + l / 2), [adapters]).to(device),
    adapterIds: Tensor.from(ids, [rows], { dtype: 'int32' }).to(device),
  };
  close(lora.forwardMulti({ ...args, out: poisoned([rows, n], dtype) }), reference.lora.forwardMulti(args), dtype);
}
check('lora.forwardMulti bfloat16 decode T=5, mixed ranks, base-only rows', () => multiCase({ rows: 5, k: 45, n: 77, dtype: 'bfloat16' }));
check('lora.forwardMulti float32 prefill T=70, mixed ranks, base-only rows', () => multiCase({ rows: 70, k: 45, n: 77, dtype: 'float32' }));
check('lora.forwardMulti float16 prefill T=70, mixed ranks, base-only rows', () => multiCase({ rows: 70, k: 45, n: 77, dtype: 'float16' }));

// ---- DoRA --------------------------------------------------------------------------------------------
function doraArgs({ lead, k, n, r, dtype, magnitudeDtype }) {
  const args = { x: randn([...lead, k], dtype), weight: randn([n, k], dtype), a: randn([r, k], dtype), b: randn([n, r], dtype), scale: 0.5 };
  // PEFT's initial magnitude (the row norms of W + s·B·A), off by up to ±25%.
  const norm = reference.lora.doraWeightNorm(args).data;
  const jitter = Tensor.randn([n], { seed: ++seed }).toFloat32();
  args.magnitude = Tensor.from(Array.from(norm, (v, j) => v * (1 + 0.25 * Math.tanh(jitter[j]))), [n], { dtype: magnitudeDtype }).to(device);
  return args;
}
function doraForwardCase(shape) {
  const args = { ...doraArgs(shape), bias: randn([shape.n], shape.dtype) };
  close(lora.doraForward({ ...args, out: poisoned([...shape.lead, shape.n], shape.dtype) }), reference.lora.doraForward(args), shape.dtype);
}
function doraBackwardCase(shape) {
  const args = { ...doraArgs(shape), gradOutput: randn([...shape.lead, shape.n], shape.dtype) };
  const grads = lora.doraBackward(args);
  const expected = reference.lora.doraBackward(args);
  for (const key of ['gradInput', 'gradA', 'gradB', 'gradMagnitude']) close(grads[key], expected[key], shape.dtype, key);
}
check('lora.doraForward bfloat16 bias, bfloat16 magnitude', () => doraForwardCase({ ...odd, r: 7, dtype: 'bfloat16', magnitudeDtype: 'bfloat16' }));
check('lora.doraForward float32', () => doraForwardCase({ ...odd, r: 7, dtype: 'float32', magnitudeDtype: 'float32' }));
check('lora.doraBackward float32', () => doraBackwardCase({ ...odd, r: 7, dtype: 'float32', magnitudeDtype: 'float32' }));
check('lora.doraBackward bfloat16, float32 magnitude', () => doraBackwardCase({ ...odd, r: 5, dtype: 'bfloat16', magnitudeDtype: 'float32' }));

// ---- the async variants, once each ------------------------------------------------------------------
async function asyncCase() {
  const dtype = 'float32';
  const { lead, k, n } = odd;
  const r = 7;
  const base = { x: randn([...lead, k], dtype), weight: randn([n, k], dtype), a: randn([r, k], dtype), b: randn([n, r], dtype), scale: 0.5 };
  const gradOutput = randn([...lead, n], dtype);
  const multi = {
    x: base.x, weight: base.weight, a: base.a.reshape([1, r, k]), b: base.b.reshape([1, n, r]),
    scales: Tensor.from(new Float32Array([0.5]), [1]).to(device),
    adapterIds: Tensor.from(Int32Array.from({ length: 39 }, (_, t) => (t % 3 === 0 ? -1 : 0)), [39], { dtype: 'int32' }).to(device),
  };
  const dora = doraArgs({ lead, k, n, r, dtype, magnitudeDtype: dtype });
  close(await lora.forwardAsync(base), reference.lora.forward(base), dtype, 'forwardAsync');
  const grads = await lora.backwardAsync({ ...base, gradOutput });
  const expected = reference.lora.backward({ ...base, gradOutput });
  for (const key of ['gradInput', 'gradA', 'gradB']) close(grads[key], expected[key], dtype, `backwardAsync ${key}`);
  close(await lora.forwardMultiAsync(multi), reference.lora.forwardMulti(multi), dtype, 'forwardMultiAsync');
  close(await lora.doraForwardAsync(dora), reference.lora.doraForward(dora), dtype, 'doraForwardAsync');
  const doraGrads = await lora.doraBackwardAsync({ ...dora, gradOutput });
  const doraExpected = reference.lora.doraBackward({ ...dora, gradOutput });
  for (const key of ['gradInput', 'gradA', 'gradB', 'gradMagnitude']) close(doraGrads[key], doraExpected[key], dtype, `doraBackwardAsync ${key}`);
}
check('async: forwardAsync, backwardAsync, forwardMultiAsync, doraForwardAsync, doraBackwardAsync', asyncCase);

let failed = 0;
for (const { name, fn } of checks) {
  const started = performance.now();
  try {
    await fn();
    console.log(`ok    ${name} (${(performance.now() - started).toFixed(0)} ms)`);
  } catch (error) {
    failed++;
    console.log(`FAIL  ${name}: ${error.message}`);
  }
}
// The last kernels' errors (asynchronous on a GPU) surface here at the latest.
try {
  synchronize(device);
  console.log('ok    synchronize');
} catch (error) {
  failed++;
  console.log(`FAIL  synchronize: ${error.message}`);
}
console.log(failed ? `gpu-smoke: ${failed} failed` : `gpu-smoke: all ${checks.length} ops passed`);
process.exit(failed ? 1 : 0);
