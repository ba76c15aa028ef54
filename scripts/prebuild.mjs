// `npm run prebuild`: the prebuilt binary for this platform, prebuilds/<platform>-<arch>/
// lora-kernels[.glibc|.musl].node, made by prebuildify (Node-API: one binary for every Node
// version) and stripped. prebuildify drives scripts/node-gyp-standin.mjs, which builds the release
// configuration with cmake-js in build-prebuild/ (the everyday build/ is left alone).
//
// Environment: LK_CUDA_ARCHS (default: the full release list when nvcc is found), LK_CUDA=OFF,
// LK_GLIBC_MAX=2.28 (Linux: fail when the binary needs a newer glibc symbol version than that;
// prebuilds are made in a glibc 2.28 container so that they load wherever Node 20 runs).
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const prebuildify = require('prebuildify');

const staging = join(root, 'build-prebuild');
const outDir = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
rmSync(outDir, { recursive: true, force: true });
mkdirSync(staging, { recursive: true });

const standIn = `"${process.execPath}" "${join(root, 'scripts', 'node-gyp-standin.mjs')}"`;
await new Promise((resolve, reject) => {
  prebuildify({
    cwd: staging,
    out: root,
    name: 'lora-kernels',
    napi: true,
    strip: true,
    tagLibc: process.platform === 'linux',
    targets: [process.versions.node],
    nodeGyp: standIn,
    shell: true,  // the stand-in is "node <script>", a command line, on every platform
  }, (error) => (error ? reject(error) : resolve()));
});

const binaries = readdirSync(outDir).filter((f) => f.endsWith('.node'));
if (binaries.length !== 1) throw new Error(`prebuild: expected one .node in ${outDir}, found ${binaries.join(', ') || 'none'}`);
const binary = join(outDir, binaries[0]);
console.log(`prebuild: ${binary} (${(statSync(binary).size / 2 ** 20).toFixed(1)} MiB)`);

if (process.platform === 'linux') checkLinuxDependencies(binary);

// The symbol versions the binary asks of the C library decide the oldest distribution it loads
// on; with the static C++ runtime it must ask nothing of libstdc++ / libgcc_s.
function checkLinuxDependencies(file) {
  const dump = spawnSync('objdump', ['-T', '-p', file], { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (dump.status !== 0) throw new Error(`prebuild: objdump failed: ${dump.stderr}`);
  const versions = (prefix) => [...new Set(dump.stdout.match(new RegExp(`\\b${prefix}_[0-9.]+`, 'g')) ?? [])]
    .map((v) => v.slice(prefix.length + 1))
    .sort((a, b) => compareVersions(a, b));
  const glibc = versions('GLIBC');
  const needed = [...dump.stdout.matchAll(/NEEDED\s+(\S+)/g)].map((m) => m[1]);
  const newest = glibc.at(-1) ?? 'none';
  console.log(`prebuild: needs ${needed.join(', ')}; newest glibc symbol version ${newest}`);
  const cxxRuntime = needed.filter((lib) => /^lib(stdc\+\+|gcc_s)\.so/.test(lib));
  if (cxxRuntime.length) throw new Error(`prebuild: the binary links ${cxxRuntime.join(', ')} dynamically; LK_STATIC_RUNTIME did not apply`);
  const max = process.env.LK_GLIBC_MAX;
  if (max && compareVersions(newest, max) > 0) {
    throw new Error(`prebuild: the binary needs glibc ${newest} (${dump.stdout.split('\n').filter((l) => l.includes(`GLIBC_${newest}`)).length} symbols), more than LK_GLIBC_MAX=${max}; build it on an older glibc (the manylinux_2_28 container)`);
  }
}

function compareVersions(a, b) {
  const pa = a.split('.').map(Number), pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d) return d;
  }
  return 0;
}
