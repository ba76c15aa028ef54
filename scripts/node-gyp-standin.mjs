// prebuildify has no cmake-js backend: it runs `<node-gyp> rebuild --target=<v> --devdir=<dir>
// --arch=<arch> --release` in its working directory and takes the first .node in
// build/Release there. scripts/prebuild.mjs points it at this file instead of node-gyp; we build
// with cmake-js into that same place. Node-API 8 only, so --target and --devdir are ignored: no
// Node headers are downloaded (cmake-js reads "binary.napi_versions" from package.json).
//
// The release configuration: CUDA for every supported arch (sm_75 … sm_120 + PTX) when nvcc is
// found, or LK_CUDA_ARCHS=<list> / LK_CUDA=OFF from the environment; the C++ runtime linked
// statically (LK_STATIC_RUNTIME) so the binary loads on machines with an older one.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);

const args = process.argv.slice(2);
if (args[0] !== 'rebuild') {
  console.error(`node-gyp-standin: only "rebuild" is supported (prebuildify's call), got: ${args.join(' ')}`);
  process.exit(2);
}
const arch = args.find((a) => a.startsWith('--arch='))?.slice('--arch='.length) ?? process.arch;
const debug = args.includes('--debug');

const cmakeArgs = [
  require.resolve('cmake-js/bin/cmake-js'), 'rebuild',
  '--directory', root,
  '--out', join(process.cwd(), 'build'),
  '--arch', arch,
  ...(debug ? ['--debug'] : []),
  '--CDLK_STATIC_RUNTIME=ON',
  `--CDLK_CUDA_ARCHS=${process.env.LK_CUDA_ARCHS || 'release'}`,
  `--CDLK_CUDA=${process.env.LK_CUDA || 'ON'}`,
  '--CDLK_CUDA_EMULATED=OFF',
];
console.log(`node-gyp-standin: cmake-js ${cmakeArgs.slice(1).join(' ')}`);
const res = spawnSync(process.execPath, cmakeArgs, { cwd: root, stdio: 'inherit' });
process.exit(res.status ?? 1);
