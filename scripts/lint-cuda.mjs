#!/usr/bin/env node
// Checks the CUDA kernel subset that keeps cuda/** compilable by both nvcc and the SIMT emulator
// (csrc/simt/README.md). No dependencies. Exit 1 with file:line for each violation.
//   * `<<<` (kernel launches)       — forbidden in cuda/**: launch with simt_launch(...)
//   * `extern __shared__`            — forbidden in cuda/**: use SIMT_DYNAMIC_SHARED(T, name)
//   * raw `asm(` / `asm volatile(`   — forbidden in cuda/** and csrc/simt/** except the two PTX
//                                      wrapper headers csrc/simt/simt_ptx.h and simt_hopper.h (each
//                                      wrapper has an emulated twin). CPU code elsewhere in csrc/ is
//                                      not kernel code.
// Comments and string literals are ignored. Then the nvcc side of the sm_90 wrappers, which no
// shipped kernel instantiates yet: scripts/gen-wgmma.mjs --check (the generated wgmma block is
// current) and, where nvcc is found, test/simt/hopper_golden.cu compiled for sm_90a (every
// wrapper it uses: mbarrier, 2-D/3-D TMA, wgmma bf16/f16 at N = 8, 24, 64, 256, transposed B).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(fileURLToPath(new URL('.', import.meta.url)), '..');
const PTX_WRAPPERS = ['simt_ptx.h', 'simt_hopper.h'].map((f) => ['csrc', 'simt', f].join('/'));
const SOURCE = /\.(cu|cuh|h|hpp|cc|cpp|cxx|inl)$/;

function* walk(dir) {
  let entries;
  try {
    entries = readdirSync(dir);
  } catch {
    return;
  }
  for (const name of entries) {
    const p = join(dir, name);
    const st = statSync(p);
    if (st.isDirectory()) yield* walk(p);
    else if (SOURCE.test(name)) yield p;
  }
}

// Replaces comments and string / char literals by spaces, keeping line breaks (so line numbers hold).
function stripCommentsAndStrings(src) {
  let out = '';
  let i = 0;
  const n = src.length;
  while (i < n) {
    const c = src[i], d = src[i + 1];
    if (c === '/' && d === '/') {
      while (i < n && src[i] !== '\n') { out += ' '; i++; }
    } else if (c === '/' && d === '*') {
      out += '  '; i += 2;
      while (i < n && !(src[i] === '*' && src[i + 1] === '/')) { out += src[i] === '\n' ? '\n' : ' '; i++; }
      if (i < n) { out += '  '; i += 2; }
    } else if (c === 'R' && d === '"' && !/[A-Za-z0-9_]/.test(src[i - 1] ?? '')) {
      const m = /^R"([^(\s]*)\(/.exec(src.slice(i));
      if (!m) { out += c; i++; continue; }
      const end = src.indexOf(`)${m[1]}"`, i + m[0].length);
      const stop = end < 0 ? n : end + m[1].length + 2;
      while (i < stop) { out += src[i] === '\n' ? '\n' : ' '; i++; }
    } else if (c === '"' || c === "'") {
      const q = c;
      out += ' '; i++;
      while (i < n && src[i] !== q && src[i] !== '\n') {
        if (src[i] === '\\' && i + 1 < n) { out += ' '; i++; }
        out += ' '; i++;
      }
      if (i < n && src[i] === q) { out += ' '; i++; }
    } else {
      out += c; i++;
    }
  }
  return out;
}

const rules = [
  { re: /<<</, scope: (f) => f.startsWith('cuda/'), msg: 'kernel launch with <<< >>>: use simt_launch(kernel, grid, block, smem, args...)' },
  { re: /\bextern\s+__shared__\b/, scope: (f) => f.startsWith('cuda/'), msg: 'extern __shared__: use SIMT_DYNAMIC_SHARED(T, name)' },
  {
    re: /\b(?:__asm__|__asm|asm)\s*(?:volatile\s*|__volatile__\s*)?\(/,
    scope: (f) => (f.startsWith('cuda/') || f.startsWith('csrc/simt/')) && !PTX_WRAPPERS.includes(f),
    msg: `raw asm(): add a wrapper (with an emulated twin) to ${PTX_WRAPPERS.join(' or ')} and call it`,
  },
];

const problems = [];
let files = 0;
for (const top of ['cuda', 'csrc/simt']) {
  for (const abs of walk(join(root, top))) {
    const rel = relative(root, abs).split(sep).join('/');
    files++;
    const lines = stripCommentsAndStrings(readFileSync(abs, 'utf8')).split('\n');
    lines.forEach((line, idx) => {
      for (const rule of rules) {
        if (rule.scope(rel) && rule.re.test(line)) problems.push(`${rel}:${idx + 1}: ${rule.msg}`);
      }
    });
  }
}

if (problems.length) {
  for (const p of problems) console.error(p);
  console.error(`lint-cuda: ${problems.length} problem(s) in ${files} files`);
  process.exit(1);
}
console.log(`lint-cuda: ${files} files OK`);

try {
  execFileSync(process.execPath, [join(root, 'scripts', 'gen-wgmma.mjs'), '--check'], { stdio: 'inherit' });
} catch {
  process.exit(1);  // gen-wgmma.mjs said why
}
const nvcc = [...(process.env['PATH'] ?? '').split(delimiter).filter(Boolean), '/usr/local/cuda/bin']
  .map((dir) => join(dir, 'nvcc')).find((f) => existsSync(f));
if (nvcc) {
  const out = mkdtempSync(join(tmpdir(), 'lint-cuda-'));
  try {
    execFileSync(nvcc, ['-std=c++17', '-arch=sm_90a', '-I', join(root, 'csrc'), '-DHOPPER_GOLDEN_COMPILE_ONLY', '-x', 'cu',
      join(root, 'test', 'simt', 'hopper_golden.cu'), '-c', '-o', join(out, 'hopper_golden.o')], { stdio: 'pipe', encoding: 'utf8' });
  } catch (error) {
    console.error(String(error.stderr ?? error));
    console.error('lint-cuda: nvcc -arch=sm_90a could not compile test/simt/hopper_golden.cu (the sm_90 wrappers of csrc/simt/simt_hopper.h)');
    process.exit(1);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
  console.log('lint-cuda: the sm_90a wrappers compile with nvcc (test/simt/hopper_golden.cu)');
} else {
  console.log('lint-cuda: nvcc not found, the sm_90a wrappers were not compiled');
}
