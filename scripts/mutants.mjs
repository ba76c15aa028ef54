// `npm run test:mutants`: shows that the emulated-CUDA oracle has teeth.
//
// Makes mutated COPIES of cuda/lora_linear.cu (the real file is only read) in build-mutants/:
// barriers removed (each a real shared-memory race) and off-by-one bounds checks. Each copy is
// compiled by g++ against csrc/simt (fibers backend) with ASan + UBSan, linked with the standalone
// driver test/simt/lora_forward_oracle.cpp (runs lk::cuda_ops::lora_forward on odd shapes covering
// every kernel path and compares with a float64 reference), and run once per SIMT_EMU_SCHED
// (forward, reverse, shuffle). A mutant is KILLED when at least one run fails (wrong results, a
// sanitizer report, an emulator abort); the unmutated copy, built the same way, must pass every
// run. Prints a table; exits non-zero if the original fails or any mutant survives.
//
// A mutant is found by a textual anchor that must match exactly once; if cuda/lora_linear.cu
// changes so that an anchor no longer matches, this script fails loudly: update the anchor.
//
//   node scripts/mutants.mjs [--only=id,id] [--list]
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const SOURCE = 'cuda/lora_linear.cu';
const DRIVER = 'test/simt/lora_forward_oracle.cpp';
const OUT = join(root, 'build-mutants');
const SCHEDULES = ['forward', 'reverse', 'shuffle'];
const RUN_TIMEOUT_MS = 120_000;

// anchor: a RegExp that matches exactly once; its match is replaced by `replace` ($1… allowed).
// Barrier mutants keep the line count (the barrier becomes a comment), so reports keep line numbers.
const GONE = '/* MUTANT: __syncthreads() removed */';
const MUTANTS = [
  {
    id: 'sync-epilogue-stage',
    what: 'lora_epilogue: barrier between staging the T / B rank slice in smem and reading it (RAW)',
    anchor: /(Bt\[col \* LDR \+ rr\] = [^;]*;\s*\}\s*)__syncthreads\(\);/,
    replace: `$1${GONE}`,
  },
  {
    id: 'sync-epilogue-reuse',
    what: 'lora_epilogue: barrier before the next rank slice overwrites Ts / Bt (WAR, r > 16)',
    anchor: /(fmaf\(tv\[i\], bv\[j\], c\[i\]\[j\]\);\s*\}\s*)__syncthreads\(\);/,
    replace: `$1${GONE}`,
  },
  {
    id: 'sync-sgemm-load',
    what: 'lora_sgemm_kernel main loop: barrier after the x / W tile load (RAW)',
    anchor: /(load_tile_t<BN, [^;]*;\s*)__syncthreads\(\);/,
    replace: `$1${GONE}`,
  },
  {
    id: 'sync-sgemm-reuse',
    what: 'lora_sgemm_kernel main loop: barrier before the next tile load overwrites As / Bs (WAR)',
    anchor: /(fmaf\(av\[i\], bv\[j\], c\[i\]\[j\]\);\s*\}\s*)__syncthreads\(\);/,
    replace: `$1${GONE}`,
  },
  {
    id: 'sync-wmma-load',
    what: 'wmma_gemm_body main loop: barrier after the x / W tile load (RAW)',
    anchor: /(load_tile_raw<BN, [^;]*;\s*)__syncthreads\(\);/,
    replace: `$1${GONE}`,
  },
  {
    id: 'sync-wmma-stage-c',
    what: 'wmma_gemm_body: barrier between staging the accumulators in smem and reading them',
    anchor: /(wmma::mem_row_major\);\s*)__syncthreads\(\);/,
    replace: `$1${GONE}`,
  },
  {
    id: 'sync-wmma-epilogue',
    what: 'wmma_gemm_body: barrier before the epilogue reuses the staged accumulators\' smem (WAR)',
    anchor: /(c\[i\]\[j\] = Cs\[[^;]*;\s*)__syncthreads\(\);/,
    replace: `$1${GONE}`,
  },
  {
    id: 'sync-down-load',
    what: 'lora_down_kernel: barrier after staging the x ⊙ mask / A slices (RAW)',
    anchor: /(As\[row \* LD \+ kk\] = [^;]*;\s*\}\s*)__syncthreads\(\);/,
    replace: `$1${GONE}`,
  },
  {
    id: 'oob-store-row',
    what: 'lora_epilogue: row guard of the y store `gm < p.m` → `gm <= p.m` (writes row m)',
    anchor: /if \(gm < p\.m\)( y\[gm \* p\.y_stride \+ gn\])/,
    replace: 'if (gm <= p.m)$1',
  },
  {
    id: 'oob-load-row-vec',
    what: 'load_tile_raw: row guard of the 16-byte load `gr < rows` → `gr <= rows` (reads row m)',
    anchor: /(S\* dst = s \+ r \* LD \+ c;\s*if \(gr )<( rows && vec && gk \+ VEC <= k\))/,
    replace: '$1<=$2',
  },
  {
    id: 'k-edge-load',
    what: 'load_tile_raw: k guard of the scalar edge load `gk + v < k` → `gk + v <= k` (one column too many)',
    anchor: /(dst\[v\] = \(gr < rows && gk \+ v )<( k\))/,
    replace: '$1<=$2',
  },
];
// Not in the list: lora_down_kernel's T store `gm < p.m` → `gm <= p.m`. Its stray row lands in the
// scratch buffer's 25% headroom (cuda/common.cuh scratch()), where ASan cannot see it, or, with
// split-K, on row 0 of the next split, which is wrong only when that block happens to finish
// first: killed or not depends on how the OS runs the two emulator workers, so it would be flaky.

const args = process.argv.slice(2);
if (args.includes('--list')) {
  for (const m of MUTANTS) console.log(`${m.id.padEnd(22)} ${m.what}`);
  process.exit(0);
}
const only = args.find((a) => a.startsWith('--only='))?.slice('--only='.length).split(',');
const selected = only ? MUTANTS.filter((m) => only.includes(m.id)) : MUTANTS;
if (only && selected.length !== only.length) {
  console.error(`mutants: unknown id in --only (known: ${MUTANTS.map((m) => m.id).join(', ')})`);
  process.exit(2);
}

function fail(message) {
  console.error(`mutants: ${message}`);
  process.exit(2);
}

// ---- the toolchain --------------------------------------------------------------------------------
// NVIDIA's host headers, plus CCCL's folder where the toolkit keeps <nv/target> there (CUDA 13's
// apt/rpm packages do; nvcc adds it by itself, g++ does not).
function cudaIncludes() {
  const candidates = [process.env.CUDA_PATH, process.env.CUDA_HOME, '/usr/local/cuda']
    .filter(Boolean)
    .flatMap((p) => [join(p, 'include'), join(p, 'targets/x86_64-linux/include')]);
  candidates.push('/usr/include');
  const dir = candidates.find((d) => existsSync(join(d, 'cuda_fp16.h')));
  if (!dir) fail(`NVIDIA's host headers (cuda_fp16.h) not found in ${candidates.join(', ')}; set CUDA_PATH`);
  return [dir, join(dir, 'cccl')].filter(existsSync).flatMap((d) => ['-isystem', d]);
}
const CXX = process.env.CXX || 'g++';
const FLAGS = ['-std=c++17', '-O1', '-g', '-fno-omit-frame-pointer', '-fsanitize=address,undefined',
  '-fno-sanitize-recover=all', '-Wno-unknown-pragmas', '-pthread',
  `-I${join(root, 'csrc')}`, `-I${join(root, 'cuda')}`, ...cudaIncludes()];
const LIBS = ['-lboost_context', '-pthread'];

function compile(argv, label) {
  return new Promise((resolve) => {
    const child = spawn(CXX, argv, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    child.stdout.on('data', (d) => { log += d; });
    child.stderr.on('data', (d) => { log += d; });
    child.on('close', (code) => resolve({ ok: code === 0, log, label }));
    child.on('error', (e) => resolve({ ok: false, log: String(e), label }));
  });
}

async function pool(jobs, width) {
  const results = new Array(jobs.length);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(width, jobs.length) }, async () => {
    while (next < jobs.length) {
      const i = next++;
      results[i] = await jobs[i]();
    }
  }));
  return results;
}

// ---- make the copies ------------------------------------------------------------------------------
const original = readFileSync(join(root, SOURCE), 'utf8');
const variants = [{ id: '(original)', what: `${SOURCE} unchanged`, text: original }];
for (const m of selected) {
  const hits = [...original.matchAll(new RegExp(m.anchor.source, 'g'))].length;
  if (hits !== 1) {
    fail(`mutant ${m.id}: its anchor ${m.anchor} matches ${hits} times in ${SOURCE} (exactly 1 expected). ` +
      'The kernel changed: update the anchor in scripts/mutants.mjs (keep the mutation a real race / off-by-one).');
  }
  const text = original.replace(m.anchor, m.replace);
  if (text === original) fail(`mutant ${m.id}: the replacement changed nothing`);
  variants.push({ ...m, text });
}

mkdirSync(OUT, { recursive: true });
const t0 = Date.now();
const width = availableParallelism();
const driverObj = join(OUT, 'oracle.o');
const jobs = [() => compile([...FLAGS, '-c', join(root, DRIVER), '-o', driverObj], 'driver')];
for (const v of variants) {
  const stem = v.id === '(original)' ? 'original' : v.id;
  v.cu = join(OUT, `${stem}.cu`);
  v.obj = join(OUT, `${stem}.o`);
  v.exe = join(OUT, stem);
  // #line: compiler and sanitizer reports name the real file (barrier mutants keep line numbers).
  writeFileSync(v.cu, `#line 1 "${join(root, SOURCE)}"\n${v.text}`);
  jobs.push(() => compile([...FLAGS, '-x', 'c++', '-c', v.cu, '-o', v.obj], v.id));
}
console.log(`mutants: compiling the driver, the original and ${variants.length - 1} mutants (${CXX}, ASan + UBSan, ${width} at a time)`);
const compiled = await pool(jobs, width);
for (const c of compiled) {
  if (!c.ok) fail(`compiling ${c.label} failed:\n${c.log}`);
}
for (const v of variants) {
  const link = spawnSync(CXX, [...FLAGS, v.obj, driverObj, ...LIBS, '-o', v.exe], { cwd: root, encoding: 'utf8' });
  if (link.status !== 0) fail(`linking ${v.id} failed:\n${link.stdout}${link.stderr}`);
}
const tCompiled = Date.now();

// ---- run every variant in every schedule ------------------------------------------------------------
// SIMT_EMU_WORKERS=2: the emulated device reports 2 SMs, which fixes the tile sizes lora_forward
// picks (the driver's shapes are chosen so that both tile sizes run), on any machine.
function classify(res) {
  const text = `${res.stdout ?? ''}\n${res.stderr ?? ''}`;
  if (res.error?.code === 'ETIMEDOUT') return 'timeout';
  const asan = text.match(/ERROR: AddressSanitizer: ([\w-]+)/);
  if (asan) return `asan:${asan[1]}`;
  if (/runtime error:/.test(text)) return 'ubsan';
  if (/simt_emu: DEADLOCK/.test(text)) return 'deadlock';
  if (/simt_emu:/.test(text)) return 'emu-abort';
  if (res.status === 0) return 'pass';
  if (res.status === 1 && /MISMATCH/.test(text)) return 'wrong';
  if (res.signal) return `signal:${res.signal}`;
  return `exit:${res.status}`;
}

const firstFailure = new Map();
for (const v of variants) {
  v.runs = SCHEDULES.map((sched) => {
    const res = spawnSync(v.exe, [], {
      cwd: root,
      encoding: 'utf8',
      timeout: RUN_TIMEOUT_MS,
      killSignal: 'SIGKILL',
      env: {
        ...process.env,
        SIMT_EMU_SCHED: sched,
        SIMT_EMU_WORKERS: '2',
        // scratch buffers live as long as their host thread (by design): no leak check
        ASAN_OPTIONS: 'detect_leaks=0:allocator_may_return_null=1',
        UBSAN_OPTIONS: 'halt_on_error=1:print_stacktrace=1',
      },
    });
    const verdict = classify(res);
    if (verdict !== 'pass' && !firstFailure.has(v.id)) {
      const text = `${res.stdout ?? ''}${res.stderr ?? ''}`;
      const lines = text.split('\n').filter((l) => /MISMATCH|expected|ERROR:|SUMMARY|runtime error|simt_emu|#[0-3] .*(cuda|csrc)\//.test(l));
      firstFailure.set(v.id, `[SIMT_EMU_SCHED=${sched}]\n    ${lines.slice(0, 6).join('\n    ')}`);
    }
    return verdict;
  });
}
const tRan = Date.now();

// ---- report ---------------------------------------------------------------------------------------
const idWidth = Math.max(...variants.map((v) => v.id.length));
const col = Math.max(...variants.flatMap((v) => v.runs.map((r) => r.length))) + 2;
console.log(`\n${'mutant'.padEnd(idWidth)}  ${SCHEDULES.map((s) => s.padEnd(col)).join('')}verdict`);
let ok = true;
for (const v of variants) {
  const failed = v.runs.some((r) => r !== 'pass');
  const isOriginal = v.id === '(original)';
  const verdict = isOriginal ? (failed ? 'FAIL (the driver or the kernel is broken)' : 'PASS') : failed ? 'KILLED' : 'SURVIVED';
  if (isOriginal ? failed : !failed) ok = false;
  console.log(`${v.id.padEnd(idWidth)}  ${v.runs.map((r) => r.padEnd(col)).join('')}${verdict}`);
}
console.log('\nwhat each mutant changes, and how it was caught first:');
for (const v of variants.slice(1)) {
  console.log(`  ${v.id}: ${v.what}`);
  if (firstFailure.has(v.id)) console.log(`    ${firstFailure.get(v.id)}`);
}
if (firstFailure.has('(original)')) console.log(`\nthe ORIGINAL failed:\n    ${firstFailure.get('(original)')}`);
console.log(`\nmutants: compile ${((tCompiled - t0) / 1000).toFixed(1)} s, runs ${((tRan - tCompiled) / 1000).toFixed(1)} s; ` +
  `copies and binaries in ${OUT}`);
if (!ok) {
  console.error('mutants: FAILED — ' + (variants[0].runs.some((r) => r !== 'pass') ? 'the unmutated kernel does not pass the driver' : 'a mutant survived: the oracle missed a real bug'));
  process.exit(1);
}
console.log(`mutants: OK — the original passes, all ${variants.length - 1} mutants are killed`);
