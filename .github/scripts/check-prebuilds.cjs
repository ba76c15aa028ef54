// Usage: node .github/scripts/check-prebuilds.cjs [--pack]
// Fails unless prebuilds/ holds exactly one .node for each platform we publish.
// --pack: also asks `npm pack --dry-run` (scripts off) whether the tarball would carry those four
// binaries and the built dist/ (run it after `npm run build:ts`).
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { execSync } = require('node:child_process');

const PLATFORMS = ['linux-x64', 'linux-arm64', 'darwin-arm64', 'win32-x64'];
let failed = false;
const fail = (message) => {
  console.error(`::error::${message}`);
  failed = true;
};

const binaries = [];
for (const platform of PLATFORMS) {
  const dir = path.join('prebuilds', platform);
  const files = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith('.node')) : [];
  if (files.length !== 1) fail(`prebuilds/${platform}: expected one .node, found ${files.length ? files.join(', ') : 'none'}`);
  for (const f of files) {
    const size = fs.statSync(path.join(dir, f)).size;
    console.log(`prebuilds/${platform}/${f}  ${(size / 2 ** 20).toFixed(1)} MiB`);
    binaries.push(`prebuilds/${platform}/${f}`);
  }
}
const extra = fs.existsSync('prebuilds') ? fs.readdirSync('prebuilds').filter((d) => !PLATFORMS.includes(d)) : [];
if (extra.length) fail(`prebuilds/ has unexpected entries: ${extra.join(', ')}`);

if (!failed && process.argv.includes('--pack')) {
  const out = execSync('npm pack --dry-run --json --ignore-scripts', { encoding: 'utf8' });
  const files = new Set(JSON.parse(out)[0].files.map((f) => f.path.replace(/\\/g, '/')));
  const before = failed;
  for (const b of binaries) if (!files.has(b)) fail(`the tarball would not contain ${b}`);
  const pkg = JSON.parse(fs.readFileSync('package.json', 'utf8'));
  for (const entry of [pkg.main, pkg.module, pkg.types].filter(Boolean)) {
    const p = entry.replace(/^\.\//, '');
    if (!files.has(p)) fail(`the tarball would not contain ${p} (package.json entry point): run npm run build:ts first`);
  }
  if (failed === before) console.log(`npm pack --dry-run: ${files.size} files, the ${binaries.length} prebuilds and the entry points included`);
}
process.exit(failed ? 1 : 0);
