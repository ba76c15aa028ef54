// Usage: TAG=v1.2.3 REPO_URL=https://github.com/owner/name node .github/scripts/release-meta.cjs
// Run in a checkout of the tag. Fails unless the tag is "v" + package.json's version, and unless
// package.json's repository URL names this repository (npm rejects a --provenance publish
// otherwise, with E422, after the whole build). Writes version= and dist-tag= (latest, or next for
// a prerelease such as 1.2.3-rc.1) to $GITHUB_OUTPUT.
'use strict';
const fs = require('node:fs');

const tag = process.env.TAG || '';
const want = (process.env.REPO_URL || '').toLowerCase();
const pkg = JSON.parse(fs.readFileSync('package.json', 'utf8'));
let failed = false;
const fail = (message) => {
  console.error(`::error::${message}`);
  failed = true;
};

if (tag !== `v${pkg.version}`) fail(`tag "${tag}" does not match package.json version "${pkg.version}" (expected tag v${pkg.version})`);

const raw = typeof pkg.repository === 'string' ? pkg.repository : (pkg.repository && pkg.repository.url) || '';
const normalized = raw
  .trim()
  .replace(/^git\+/, '')
  .replace(/^github:/, 'https://github.com/')
  .replace(/^git@github\.com:/, 'https://github.com/')
  .replace(/^(ssh|git):\/\/(git@)?github\.com\//, 'https://github.com/')
  .replace(/^([\w.-]+\/[\w.-]+)$/, 'https://github.com/$1') // "owner/name" shorthand
  .replace(/\.git$/, '')
  .replace(/\/$/, '')
  .toLowerCase();
if (!want) fail('REPO_URL is not set');
else if (normalized !== want) {
  fail(`package.json "repository" is "${raw}"; npm --provenance needs it to name ${want} ` +
    `(e.g. "repository": { "type": "git", "url": "git+${want}.git" })`);
}

const distTag = /-/.test(pkg.version) ? 'next' : 'latest';
console.log(`tag ${tag}, version ${pkg.version}, npm dist-tag ${distTag}, repository ${raw || '(none)'}`);
if (process.env.GITHUB_OUTPUT) {
  fs.appendFileSync(process.env.GITHUB_OUTPUT, `version=${pkg.version}\ndist-tag=${distTag}\n`);
}
process.exit(failed ? 1 : 0);
