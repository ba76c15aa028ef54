// Usage: node .github/scripts/prebuild-info.cjs <platform-arch> [--want-cuda]
// Checks that prebuilds/<platform-arch>/ holds exactly one .node, loads it through the package's own
// loader (LORA_KERNELS_ADDON; needs dist/ from `npm run build:ts`) and prints buildInfo() and
// backends(). --want-cuda: fail unless the binary was compiled with CUDA (it need not find a GPU).
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const [platform, ...flags] = process.argv.slice(2);
if (!platform) {
  console.error('usage: prebuild-info.cjs <platform-arch> [--want-cuda]');
  process.exit(2);
}
const dir = path.resolve('prebuilds', platform);
const files = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith('.node')) : [];
if (files.length !== 1) {
  console.error(`::error::expected one .node in ${dir}, found ${files.length ? files.join(', ') : 'none'}`);
  process.exit(1);
}
const file = path.join(dir, files[0]);
console.log(`${file}: ${(fs.statSync(file).size / 2 ** 20).toFixed(1)} MiB`);
process.env.LORA_KERNELS_ADDON = file;
const lk = require(path.resolve('.'));
const info = typeof lk.buildInfo === 'function' ? lk.buildInfo() : undefined;
const backends = lk.backends();
console.log(JSON.stringify({ buildInfo: info, backends }, null, 2));
const cuda = (info && info.cuda) || backends.cuda || {};
if (flags.includes('--want-cuda') && !cuda.compiled) {
  console.error(`::error::${file} was built without CUDA`);
  process.exit(1);
}
