#!/usr/bin/env node
// Checks the CUDA kernel subset that keeps cuda/** compilable by both nvcc and the SIMT emulator
// (csrc/simt/README.md). No dependencies. Exit 1 with file:line for each violation.
//   * `<<<` (kernel launches)       — forbidden in cuda/**: launch with simt_launch(...)
//   * `extern __shared__`            — forbidden in cuda/**: use SIMT_DYNAMIC_SHARED(T, name)
//   * raw `asm(` / `asm volatile(`   — forbidden in cuda/** and csrc/simt/** except the one PTX
//                                      wrapper header csrc/simt/simt_ptx.h (each wrapper has an
//                                      emulated twin). CPU code elsewhere in csrc/ is not kernel code.
// Comments and string literals are ignored.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(fileURLToPath(new URL('.', import.meta.url)), '..');
const PTX_WRAPPER = ['csrc', 'simt', 'simt_ptx.h'].join('/');
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
    scope: (f) => (f.startsWith('cuda/') || f.startsWith('csrc/simt/')) && f !== PTX_WRAPPER,
    msg: `raw asm(): add a wrapper (with an emulated twin) to ${PTX_WRAPPER} and call it`,
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
