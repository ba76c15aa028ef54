/**
 * Which native binary serves a process (lib/loader.ts): a copy of the package (package.json and
 * dist/, node_modules linked) gets prebuilds and local builds in every combination, and a fresh
 * process reports what it loaded. A stale local build must never silently shadow a prebuild, and
 * no binary at all must be a clear error naming the platform and the build command.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { afterEach, beforeAll, describe, expect, it } from 'vitest';

import { writeStaleCopy } from './helpers/binaries.mjs';
import { repoRoot, runChild } from './helpers/child.js';

interface Loaded {
  binary?: { path: string; source: string; skipped: { path: string; reason: string }[] };
  forward?: number[];
  error?: { code: string; message: string };
}

const REPORT = `
  try {
    const lk = require(process.cwd());
    const forward = lk.lora.forward({ x: lk.Tensor.randn([2, 5]), weight: lk.Tensor.randn([3, 5]) }).shape;
    console.log(JSON.stringify({ binary: lk.buildInfo().binary, forward }));
  } catch (e) { console.log(JSON.stringify({ error: { code: e.code, message: e.message } })); }`;

const platformDir = `${process.platform}-${process.arch}`;
const prebuildName = `lora-kernels${process.platform === 'linux' ? '.glibc' : ''}.node`;
let realBinary = '';
let pkg = '';

function place(relative: string, write: (file: string) => void): string {
  const file = path.join(pkg, relative);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  write(file);
  return file;
}

const prebuild = () => place(`prebuilds/${platformDir}/${prebuildName}`, (f) => fs.copyFileSync(realBinary, f));
const localBuild = (write: (file: string) => void) => place('build/Release/lora_kernels.node', write);
const load = () => runChild(REPORT, { cwd: pkg });

describe('the native loader', () => {
  beforeAll(() => {
    // The binary the suite itself would load, whichever kind of build that is.
    realBinary = runChild(`console.log(JSON.stringify(require(${JSON.stringify(repoRoot)}).buildInfo().binary.path))`).json<string>();
  });

  afterEach(() => {
    if (pkg) fs.rmSync(pkg, { recursive: true, force: true });
  });

  function freshPackage(): void {
    pkg = fs.mkdtempSync(path.join(os.tmpdir(), 'lk-loader-'));
    fs.copyFileSync(path.join(repoRoot, 'package.json'), path.join(pkg, 'package.json'));
    fs.cpSync(path.join(repoRoot, 'dist'), path.join(pkg, 'dist'), { recursive: true });
    fs.symlinkSync(path.join(repoRoot, 'node_modules'), path.join(pkg, 'node_modules'), 'junction');
  }

  it('loads the prebuild for this platform when there is no local build', () => {
    freshPackage();
    const file = prebuild();
    const res = load().json<Loaded>();
    expect(res.binary).toEqual({ path: file, source: 'prebuild', skipped: [] });
    expect(res.forward).toEqual([2, 3]);
  });

  it('a local build of another version never shadows the prebuild, and says so', () => {
    freshPackage();
    const file = prebuild();
    let staleVersion = '';
    const stale = localBuild((f) => { staleVersion = writeStaleCopy(realBinary, f); });
    const child = load();
    const res = child.json<Loaded>();
    expect(res.binary?.source).toBe('prebuild');
    expect(res.binary?.path).toBe(file);
    expect(res.binary?.skipped).toEqual([{ path: stale, reason: expect.stringContaining(`built for version ${staleVersion}`) }]);
    expect(child.stderr).toMatch(/LORA_KERNELS_SKIPPED_BINARY.*ignoring .*lora_kernels\.node/s);
  });

  it('a local build of this version (built from source) is preferred to the prebuild', () => {
    freshPackage();
    prebuild();
    const local = localBuild((f) => fs.copyFileSync(realBinary, f));
    expect(load().json<Loaded>().binary).toEqual({ path: local, source: 'local build', skipped: [] });
  });

  it('a local build that does not load (corrupt, wrong platform) falls back to the prebuild', () => {
    freshPackage();
    prebuild();
    const broken = localBuild((f) => fs.writeFileSync(f, 'not a shared library'));
    const res = load().json<Loaded>();
    expect(res.binary?.source).toBe('prebuild');
    expect(res.binary?.skipped[0]).toEqual({ path: broken, reason: expect.stringMatching(/^it failed to load: /) });
  });

  it('no binary at all: the error names the platform, where it looked and the one build command', () => {
    freshPackage();
    place('prebuilds/plan9-mips/lora-kernels.node', (f) => fs.writeFileSync(f, ''));
    const { error } = load().json<Loaded>();
    expect(error?.code).toBe('ERR_UNSUPPORTED');
    expect(error?.message).toContain(`no usable native binary for ${process.platform}-${process.arch}`);
    expect(error?.message).toContain(path.join(pkg, 'prebuilds', platformDir));
    expect(error?.message).toContain('prebuilds shipped: plan9-mips');
    expect(error?.message).toMatch(/Build it from source .* with: npx lora-kernels build$/);
  });

  it('only a stale local build: an error that names it and why, not a silent load', () => {
    freshPackage();
    let staleVersion = '';
    localBuild((f) => { staleVersion = writeStaleCopy(realBinary, f); });
    const { error } = load().json<Loaded>();
    expect(error?.code).toBe('ERR_UNSUPPORTED');
    expect(error?.message).toContain(`it was built for version ${staleVersion}`);
    expect(error?.message).toContain('npx lora-kernels build');
  });

  it('a binary that lacks an export of this version (an older build) is refused with a rebuild hint', () => {
    freshPackage();
    const older = place('elsewhere/older.js', (f) => fs.writeFileSync(f, 'module.exports = { backends() { return {}; } };\n'));
    const { error } = runChild(REPORT, { cwd: pkg, env: { LORA_KERNELS_ADDON: older } }).json<Loaded>();
    expect(error?.code).toBe('ERR_UNSUPPORTED');
    expect(error?.message).toMatch(/cannot be used: it is older than this package \(missing buildInfo, disableCuda, deviceAlloc, .*\); rebuild it with "npx lora-kernels build"/);
  });

  it('LORA_KERNELS_ADDON is an explicit choice: a stale binary there is refused, with no fallback', () => {
    freshPackage();
    prebuild();
    const stale = place('elsewhere/stale.node', (f) => writeStaleCopy(realBinary, f));
    const { error } = runChild(REPORT, { cwd: pkg, env: { LORA_KERNELS_ADDON: stale } }).json<Loaded>();
    expect(error?.code).toBe('ERR_UNSUPPORTED');
    expect(error?.message).toMatch(/the native binary .*stale\.node \(LORA_KERNELS_ADDON\) cannot be used: it was built for version/);
  });
});
