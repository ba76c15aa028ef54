// `npm run test:mutants`: shows that the emulated-CUDA oracle has teeth.
//
// Makes mutated COPIES of the GEMM engine's kernels, cuda/gemm_kernels.cuh, the Hopper mainloop
// cuda/gemm_wgmma.cu and the Hopper attention cuda/flash_lora_wgmma.cu (the real files are only
// read), in build-mutants/<id>/: a removed cp.async
// wait, wrong pipeline stage indices, off-by-one edge predicates, removed barriers, an unswizzled
// shared-memory write, the dropout mask applied one k-tile late, an epilogue that writes one row too
// many, and on the dequantizing B operand a wait that misses the k-tile dequantized ahead, the wrong
// NF4 block's absmax, an over-reading K edge and swapped code bytes; on the wgmma mainloop a dropped
// wait on the stage's `full` mbarrier, a wait on the wrong phase bit and a B descriptor with the
// wrong swizzle mode; on the wgmma attention the same three (its MN-major descriptors) and a
// consumer that passes the ping-pong turn to itself (these run the oracle as an sm_90,
// SIMT_EMU_CC=9.0, whose cases reach those kernels; the original runs both ways). Each mutant recompiles the one translation unit that holds
// the mutated code (a copy of cuda/gemm_mma_bf16.cu, gemm_fma_f32.cu, gemm_mma_quant_bf16.cu or
// gemm_fma_quant.cu next to the copied header, so that its #include "gemm_kernels.cuh" finds the
// mutant; or the mutated gemm_wgmma.cu / flash_lora_wgmma.cu itself), by g++ against csrc/simt
// with ASan + UBSan, and links it with the other CUDA sources (compiled once) and the standalone
// driver test/simt/engine_oracle.cpp (lora.forward, lora.backward, DoRA's norms, per-tile segment
// lists and NF4 / ternary B operands on odd shapes that reach every tile, layout and split-K path
// with SIMT_EMU_WORKERS=2, and as an sm_90 the Hopper GEMM cases and the attention forward,
// compared with float64 references). Every variant runs once per SIMT_EMU_SCHED
// (forward, reverse, shuffle). A mutant is KILLED when at least one run fails (wrong results, a
// sanitizer report, an emulator abort); the unmutated build must pass every run. Prints a table;
// exits non-zero if the original fails or any mutant survives.
//
// A mutant is found by a textual anchor that must match exactly once; if the kernels change so
// that an anchor no longer matches, this script fails loudly: update the anchor.
//
//   node scripts/mutants.mjs [--only=id,id] [--list]
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const SOURCE = 'cuda/gemm_kernels.cuh';
const WGMMA = 'cuda/gemm_wgmma.cu';
const FLASH = 'cuda/flash_lora_wgmma.cu';
const DRIVER = 'test/simt/engine_oracle.cpp';
// The CUDA sources the driver links: every op the oracle calls, not lora_multi.cu (its host code
// needs the CPU kernels' adapter grouping, and the oracle builds per-tile segment lists itself) and
// not the attention backward. flash_lora.cu is linked for its host dispatcher alone (the oracle's
// attention cases are prefill-sized: they go to flash_lora_wgmma.cu), so it is compiled without
// sanitizers at -O0: its FA2 kernels would take 3.5 min of ASan -O1 compiling and never run here.
const NOT_LINKED = new Set(['lora_multi.cu', 'flash_lora_backward.cu']);
const DISPATCH_ONLY = new Set(['flash_lora.cu']);
const CUDA_SOURCES = readdirSync(join(root, 'cuda')).filter((f) => f.endsWith('.cu') && !NOT_LINKED.has(f)).sort();
const OUT = join(root, 'build-mutants');
const SCHEDULES = ['forward', 'reverse', 'shuffle'];
const RUN_TIMEOUT_MS = 120_000;

// anchor: a RegExp that matches exactly once in `source` (default cuda/gemm_kernels.cuh); its match
// is replaced by `replace` ($1… allowed). tu: the translation unit holding the mutated code that the
// oracle runs (bf16: the mma.sync mainloop, float32: the FMA one; a mutated .cu is its own tu).
// cc: the SIMT_EMU_CC its runs use (default: the emulator's 8.0). Barrier mutants keep the line
// count, so reports keep line numbers.
const GONE = '/* MUTANT: removed */';
const MUTANTS = [
  {
    id: 'cp-async-wait',
    what: 'mma mainloop: the cp.async wait before a stage is read is removed (its copies have not landed)',
    anchor: /ptx::cp_async_wait<STAGES - 2 - kAhead>\(\);/,
    replace: GONE,
    tu: 'gemm_mma_bf16.cu',
  },
  {
    id: 'stage-read',
    what: 'mma mainloop: iteration i multiplies stage (i + 1) % STAGES instead of i % STAGES',
    anchor: /smem \+ \(i % STAGES\) \* ML::STAGE_BYTES/,
    replace: 'smem + ((i + 1) % STAGES) * ML::STAGE_BYTES',
    tu: 'gemm_mma_bf16.cu',
  },
  {
    id: 'stage-refill',
    what: 'mma mainloop: the load refills stage (i + STAGES - 2) % STAGES, one still waiting to be read',
    anchor: /\(\(i \+ STAGES - 1\) % STAGES\)/,
    replace: '((i + STAGES - 2) % STAGES)',
    tu: 'gemm_mma_bf16.cu',
  },
  {
    id: 'sync-stage',
    what: 'mma mainloop: the barrier after the wait is removed (a warp reads a stage before every thread\'s copies landed)',
    anchor: /(ptx::cp_async_wait<STAGES - 2 - kAhead>\(\);\s*)__syncthreads\(\);/,
    replace: `$1${GONE}`,
    tu: 'gemm_mma_bf16.cu',
  },
  {
    id: 'edge-row',
    what: 'K-major loader: row guard `i < limit` → `i <= limit` (reads row m)',
    anchor: /(const bool ok = e < ROWS \* C && i )<( limit)/,
    replace: '$1<=$2',
    tu: 'gemm_mma_bf16.cu',
  },
  {
    id: 'edge-k',
    what: 'K-major loader: the K edge keeps one element too many (k_len - k + 1)',
    anchor: /\(k_len - k\) \* static_cast<int>\(sizeof\(S\)\)/,
    replace: '(k_len - k + 1) * static_cast<int>(sizeof(S))',
    tu: 'gemm_mma_bf16.cu',
  },
  {
    id: 'edge-mn',
    what: 'MN-major loader: the column edge keeps one element too many (limit - col + 1)',
    anchor: /\(limit - col\) \* static_cast<int>\(sizeof\(S\)\)/,
    replace: '(limit - col + 1) * static_cast<int>(sizeof(S))',
    tu: 'gemm_mma_bf16.cu',
  },
  {
    id: 'swizzle-write',
    what: 'K-major loader: chunks land unswizzled while ldmatrix reads the swizzled addresses',
    anchor: /copy_chunk<S>\(chunk_at<KB>\(tile, e \/ C, e % C\),/,
    replace: 'copy_chunk<S>(tile + (e / C) * KB + (e % C) * 16,',
    tu: 'gemm_mma_bf16.cu',
  },
  {
    id: 'mask-late',
    what: 'backward: the dropout mask is applied one k-tile into g·W instead of after dT·A',
    anchor: /(if \(\(p\.acc_mask \|\| p\.acc_col_scale\) && kt < seg0_tiles && \(kt == seg0_tiles - 1 \|\| kt == kt_end - 1\)\) \{\n#pragma unroll\n      for \(int mf)/,
    replace: 'if ((p.acc_mask || p.acc_col_scale) && kt <= seg0_tiles && (kt == seg0_tiles || kt == kt_end - 1)) {\n#pragma unroll\n      for (int mf',
    tu: 'gemm_mma_bf16.cu',
  },
  {
    id: 'sync-fma',
    what: 'FMA mainloop: the barrier after stashing the next k-tile is removed (read/write race on the buffers)',
    anchor: /(b_load\.template stash<Tile::LDB>\(next \+ BK \* Tile::LDA\);\s*\}\s*)__syncthreads\(\);/,
    replace: `$1${GONE}`,
    tu: 'gemm_fma_f32.cu',
  },
  {
    id: 'sync-row-norm',
    what: 'row-norm epilogue: the barrier before the per-row sums are added is removed',
    anchor: /(__device__ __forceinline__ void row_norm_finish\(const Params& p, float\* sums, int m0, int n_tile\) \{\s*)__syncthreads\(\);/,
    replace: `$1${GONE}`,
    tu: 'gemm_mma_bf16.cu',
  },
  {
    id: 'quant-wait-ahead',
    what: 'quantized B (mma): the wait does not count the k-tile dequantized ahead (its codes are read before they land)',
    anchor: /constexpr int kAhead = kQuant \? 1 : 0;/,
    replace: 'constexpr int kAhead = kQuant ? 0 : 0;',
    tu: 'gemm_mma_quant_bf16.cu',
  },
  {
    id: 'quant-absmax-block',
    what: 'quantized B (mma, staged NF4): each value takes the absmax of the next block (block index + 1)',
    anchor: /\[\(\(w_row \* q\.k \+ w_col\) >> p\.quant_shift\) - first\]/,
    replace: '[((w_row * q.k + w_col) >> p.quant_shift) + 1 - first]',
    tu: 'gemm_mma_quant_bf16.cu',
  },
  {
    id: 'quant-edge-k',
    what: 'quantized B (mma, element loads): the K edge `kk + t < k_len` → `<=` (reads one code past the row, past the weight on the last)',
    anchor: /(const bool ok = L == Layout::KMajor \? kk \+ t )<( k_len : j \+ t < limit;)/,
    replace: '$1<=$2',
    tu: 'gemm_mma_quant_bf16.cu',
  },
  {
    id: 'quant-fma-bytes',
    what: 'quantized B (FMA): the two code bytes of a run of 4 NF4 values are swapped (elements 0, 1 ↔ 2, 3)',
    anchor: /q\.packed\[e0 \/ 2\] \| static_cast<uint32_t>\(q\.packed\[e0 \/ 2 \+ 1\]\) << 8/,
    replace: 'q.packed[e0 / 2 + 1] | static_cast<uint32_t>(q.packed[e0 / 2]) << 8',
    tu: 'gemm_fma_quant.cu',
  },
  {
    id: 'wgmma-full-wait',
    what: 'wgmma mainloop: the consumers no longer wait on the stage\'s `full` mbarrier (they read it before its TMA lands)',
    anchor: /ptx::mbarrier_wait_parity\(&full\[s\], \(kt \/ STAGES\) & 1\);/,
    replace: GONE,
    source: WGMMA, tu: 'gemm_wgmma.cu', cc: '9.0',
  },
  {
    id: 'wgmma-phase',
    what: 'wgmma mainloop: the consumers wait on the wrong phase bit of `full` (the previous round, already complete)',
    anchor: /ptx::mbarrier_wait_parity\(&full\[s\], \(kt \/ STAGES\) & 1\);/,
    replace: 'ptx::mbarrier_wait_parity(&full[s], (kt / STAGES + 1) & 1);',
    source: WGMMA, tu: 'gemm_wgmma.cu', cc: '9.0',
  },
  {
    id: 'wgmma-swizzle',
    what: 'wgmma mainloop: the K-major B descriptor says 64B swizzle while TMA wrote the tile with 128B',
    anchor: /ptx::make_wgmma_desc\(b \+ 32 \* ks, 16, 1024, 1\)/,
    replace: 'ptx::make_wgmma_desc(b + 32 * ks, 16, 1024, 2)',
    source: WGMMA, tu: 'gemm_wgmma.cu', cc: '9.0',
  },
  {
    id: 'flash-full-wait',
    what: 'wgmma attention: the consumers no longer wait on a key tile\'s `full` mbarrier (S reads K before its TMA lands)',
    anchor: /const auto wait_tile = \[&\]\(int j\) \{ ptx::mbarrier_wait_parity\(&full\[j % kStages\], \(j \/ kStages\) & 1\); \};/,
    replace: 'const auto wait_tile = [&](int) {};',
    source: FLASH, tu: 'flash_lora_wgmma.cu', cc: '9.0',
  },
  {
    id: 'flash-phase',
    what: 'wgmma attention: the consumers wait on the wrong phase bit of a key tile\'s `full` mbarrier',
    anchor: /ptx::mbarrier_wait_parity\(&full\[j % kStages\], \(j \/ kStages\) & 1\)/,
    replace: 'ptx::mbarrier_wait_parity(&full[j % kStages], (j / kStages + 1) & 1)',
    source: FLASH, tu: 'flash_lora_wgmma.cu', cc: '9.0',
  },
  {
    id: 'flash-swizzle',
    what: 'wgmma attention: the MN-major descriptors (V, v_low_rank, v_lora_b) say 64B swizzle, the tiles are 128B',
    anchor: /ptx::make_wgmma_desc\(tile, kRankBox \* 128, 1024, 1\)/,
    replace: 'ptx::make_wgmma_desc(tile, kRankBox * 128, 1024, 2)',
    source: FLASH, tu: 'flash_lora_wgmma.cu', cc: '9.0',
  },
  {
    id: 'flash-turn',
    what: 'wgmma attention: a consumer ends its turn by arriving on its own named barrier instead of the other\'s',
    anchor: /ptx::named_barrier_arrive\(kTurnBarrier \+ 1 - c, 256\)/,
    replace: 'ptx::named_barrier_arrive(kTurnBarrier + c, 256)',
    source: FLASH, tu: 'flash_lora_wgmma.cu', cc: '9.0',
  },
  {
    id: 'epilogue-row',
    what: 'store epilogue: row guard `row >= m` → `row > m` (writes row m)',
    anchor: /if \(row >= m \|\| col >= n\) return;/,
    replace: 'if (row > m || col >= n) return;',
    tu: 'gemm_mma_bf16.cu',
  },
];

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
const BASE_FLAGS = ['-std=c++17', '-Wno-unknown-pragmas', '-pthread', `-I${join(root, 'csrc')}`, `-I${join(root, 'cuda')}`, ...cudaIncludes()];
const FLAGS = [...BASE_FLAGS, '-O1', '-g', '-fno-omit-frame-pointer', '-fsanitize=address,undefined', '-fno-sanitize-recover=all'];
const DISPATCH_FLAGS = [...BASE_FLAGS, '-O0', '-g0'];
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
const originals = new Map([SOURCE, WGMMA, FLASH].map((f) => [f, readFileSync(join(root, f), 'utf8')]));
const variants = [
  { id: '(original)', what: 'the engine unchanged' },
  { id: '(original sm_90)', what: 'the engine unchanged, as an sm_90 (SIMT_EMU_CC=9.0)', cc: '9.0' },
];
for (const m of selected) {
  const source = m.source ?? SOURCE;
  const original = originals.get(source);
  const hits = [...original.matchAll(new RegExp(m.anchor.source, 'g'))].length;
  if (hits !== 1) {
    fail(`mutant ${m.id}: its anchor ${m.anchor} matches ${hits} times in ${source} (exactly 1 expected). ` +
      'The kernel changed: update the anchor in scripts/mutants.mjs (keep the mutation a real bug).');
  }
  const text = original.replace(m.anchor, m.replace);
  if (text === original) fail(`mutant ${m.id}: the replacement changed nothing`);
  variants.push({ ...m, source, text });
}

mkdirSync(OUT, { recursive: true });
const t0 = Date.now();
const width = availableParallelism();
const object = (name) => join(OUT, 'common', `${basename(name)}.o`);
mkdirSync(join(OUT, 'common'), { recursive: true });
const jobs = [() => compile([...FLAGS, '-c', join(root, DRIVER), '-o', object(DRIVER)], 'driver')];
for (const cu of CUDA_SOURCES) {
  const flags = DISPATCH_ONLY.has(cu) ? DISPATCH_FLAGS : FLAGS;
  jobs.push(() => compile([...flags, '-x', 'c++', '-c', join(root, 'cuda', cu), '-o', object(cu)], cu));
}
const isOriginal = (v) => v.id.startsWith('(original');
for (const v of variants.filter((x) => !isOriginal(x))) {
  const dir = join(OUT, v.id);
  mkdirSync(dir, { recursive: true });
  // #line: compiler and sanitizer reports name the real file (barrier mutants keep line numbers).
  // A mutated header sits next to a copy of its tu (whose #include finds it first); a mutated .cu is the tu.
  const tuText = v.source === SOURCE ? readFileSync(join(root, 'cuda', v.tu), 'utf8') : v.text;
  if (v.source === SOURCE) writeFileSync(join(dir, 'gemm_kernels.cuh'), `#line 1 "${join(root, SOURCE)}"\n${v.text}`);
  writeFileSync(join(dir, v.tu), `#line 1 "${join(root, 'cuda', v.tu)}"\n${tuText}`);
  v.obj = join(dir, `${v.tu}.o`);
  jobs.push(() => compile([...FLAGS, '-x', 'c++', '-c', join(dir, v.tu), '-o', v.obj], v.id));
}
const mutantCount = variants.filter((x) => !isOriginal(x)).length;
console.log(`mutants: compiling the driver, ${CUDA_SOURCES.length} CUDA sources and ${mutantCount} mutants (${CXX}, ASan + UBSan, ${width} at a time)`);
const compiled = await pool(jobs, width);
for (const c of compiled) {
  if (!c.ok) fail(`compiling ${c.label} failed:\n${c.log}`);
}
for (const v of variants) {
  const stem = isOriginal(v) ? 'original' : v.id;
  v.exe = join(OUT, `${stem}.exe`);
  if (v.id === '(original sm_90)') continue;  // the same binary as (original)
  const objects = [object(DRIVER), ...CUDA_SOURCES.map((cu) => (v.tu === cu ? v.obj : object(cu)))];
  const link = spawnSync(CXX, [...FLAGS, ...objects, ...LIBS, '-o', v.exe], { cwd: root, encoding: 'utf8' });
  if (link.status !== 0) fail(`linking ${v.id} failed:\n${link.stdout}${link.stderr}`);
}
const tCompiled = Date.now();

// ---- run every variant in every schedule ------------------------------------------------------------
// SIMT_EMU_WORKERS=2: the emulated device reports 2 SMs, which fixes the tiles and splits the
// engine picks (the driver's shapes are chosen so that every path runs), on any machine.
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
        ...(v.cc ? { SIMT_EMU_CC: v.cc } : {}),
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
  const original = isOriginal(v);
  const verdict = original ? (failed ? 'FAIL (the driver or the kernel is broken)' : 'PASS') : failed ? 'KILLED' : 'SURVIVED';
  if (original ? failed : !failed) ok = false;
  console.log(`${v.id.padEnd(idWidth)}  ${v.runs.map((r) => r.padEnd(col)).join('')}${verdict}`);
}
console.log('\nwhat each mutant changes, and how it was caught first:');
for (const v of variants.filter((x) => !isOriginal(x))) {
  console.log(`  ${v.id}: ${v.what}`);
  if (firstFailure.has(v.id)) console.log(`    ${firstFailure.get(v.id)}`);
}
for (const v of variants.filter(isOriginal))
  if (firstFailure.has(v.id)) console.log(`\nthe ORIGINAL ${v.id} failed:\n    ${firstFailure.get(v.id)}`);
console.log(`\nmutants: compile ${((tCompiled - t0) / 1000).toFixed(1)} s, runs ${((tRan - tCompiled) / 1000).toFixed(1)} s; ` +
  `copies and binaries in ${OUT}`);
if (!ok) {
  console.error('mutants: FAILED — ' + (variants.filter(isOriginal).some((v) => v.runs.some((r) => r !== 'pass')) ? 'the unmutated kernel does not pass the driver' : 'a mutant survived: the oracle missed a real bug'));
  process.exit(1);
}
console.log(`mutants: OK — the original passes, all ${mutantCount} mutants are killed`);
