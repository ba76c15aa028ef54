/**
 * Finding, loading and checking the native binary, and deciding whether this process may touch
 * the CUDA driver. Nothing here may take the host process down: every failure is a
 * LoraKernelsError with the platform, the places looked in and the one command that builds
 * from source.
 *
 * Binaries, in order:
 *   1. LORA_KERNELS_ADDON=<path>: an explicit choice (tests use it for the emulated build); no
 *      fallback when it is unusable.
 *   2. build/Release/lora_kernels.node: a build from source (`npx lora-kernels build`), used when
 *      it was built for this package version and has every export of the native contract.
 *   3. prebuilds/<platform>-<arch>/lora-kernels.<tags>.node, chosen by node-gyp-build's rules
 *      (platform, arch, libc tags; Node-API binaries match every Node version).
 * A local build of another version (or one that fails to load) is skipped with a process
 * warning naming it, so a stale build never silently shadows a newer prebuild.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { LoraKernelsError } from './errors.js';

export type BinarySource = 'LORA_KERNELS_ADDON' | 'local build' | 'prebuild';

export interface LoadedBinary {
  path: string;
  source: BinarySource;
  /** Binaries found but not used, and why. */
  skipped: { path: string; reason: string }[];
}

interface PackageManifest {
  name?: string;
  version?: string;
}

function readManifest(dir: string): PackageManifest | undefined {
  const file = path.join(dir, 'package.json');
  if (!fs.existsSync(file)) return undefined;
  return JSON.parse(fs.readFileSync(file, 'utf8')) as PackageManifest;
}

/** The package root: the folder above lib/ (sources, tests) or dist/cjs/lib/ (the published build). */
export function packageRoot(): string {
  let dir = __dirname;
  for (let i = 0; i < 4; i++) {
    if (readManifest(dir)?.name === 'lora-kernels') return dir;
    dir = path.dirname(dir);
  }
  throw new LoraKernelsError('ERR_UNSUPPORTED', `lora-kernels: cannot find the package root above ${__dirname}`);
}

export function packageVersion(root = packageRoot()): string {
  return readManifest(root)?.version ?? 'unknown';
}

/** The one command that builds the binary from source, as the user would type it. */
export const BUILD_FROM_SOURCE = 'npx lora-kernels build';

interface NodeGypBuild {
  parseTuple(name: string): { name: string; platform: string; architectures: string[] } | undefined;
  matchTuple(platform: string, arch: string): (tuple: unknown) => boolean;
  compareTuples(a: unknown, b: unknown): number;
  parseTags(file: string): { file: string } | undefined;
  matchTags(runtime: string, abi: string): (tags: unknown) => boolean;
  compareTags(runtime: string): (a: unknown, b: unknown) => number;
}

function libc(): string {
  return process.env['LIBC'] ?? (process.platform === 'linux' && fs.existsSync('/etc/alpine-release') ? 'musl' : 'glibc');
}

/** What we look for, in the words of the error message: `linux-x64 (glibc)`. */
export function platformTag(): string {
  return `${process.platform}-${process.arch}${process.platform === 'linux' ? ` (${libc()})` : ''}`;
}

function readdir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

/** The prebuild node-gyp-build would pick for this process, ignoring any local build. */
function resolvePrebuild(root: string): string | undefined {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const ngb = require('node-gyp-build') as NodeGypBuild;
  const prebuilds = path.join(root, 'prebuilds');
  const tuple = readdir(prebuilds).map((n) => ngb.parseTuple(n)).filter(ngb.matchTuple(process.platform, process.arch))
    .sort(ngb.compareTuples)[0];
  if (!tuple) return undefined;
  const dir = path.join(prebuilds, tuple.name);
  const winner = readdir(dir).map((f) => ngb.parseTags(f)).filter(ngb.matchTags('node', process.versions.modules))
    .sort(ngb.compareTags('node'))[0];
  return winner ? path.join(dir, winner.file) : undefined;
}

/** Why `addon` cannot serve this package version, or undefined when it can. */
function unusableReason(addon: unknown, exportNames: readonly string[], version: string): string | undefined {
  const exports = addon as Record<string, unknown>;
  const missing = exportNames.filter((name) => typeof exports[name] !== 'function');
  if (missing.length) return `it is older than this package (missing ${missing.join(', ')})`;
  const built = (exports['buildInfo'] as () => { version: string })().version;
  if (built !== version) return `it was built for version ${built}, this package is ${version}`;
  return undefined;
}

/** Loads `file` and checks it against this package: the addon, or why it cannot serve. */
function tryLoad(file: string, exportNames: readonly string[], version: string): { addon: unknown } | { reason: string } {
  let addon: unknown;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    addon = require(file);
  } catch (error) {
    return { reason: `it failed to load: ${(error as Error).message.split('\n')[0]}` };
  }
  const reason = unusableReason(addon, exportNames, version);
  return reason ? { reason } : { addon };
}

/** Loads the binary for this process; `exportNames` is the native contract's export list. */
export function loadBinary(exportNames: readonly string[]): { addon: unknown; binary: LoadedBinary } {
  const root = packageRoot();
  const version = packageVersion(root);
  const override = process.env['LORA_KERNELS_ADDON'];
  if (override) {
    const file = path.resolve(override);
    const loaded = tryLoad(file, exportNames, version);
    if ('reason' in loaded) {
      throw new LoraKernelsError('ERR_UNSUPPORTED', `lora-kernels: the native binary ${file} (LORA_KERNELS_ADDON) cannot be used: ${loaded.reason}; rebuild it with "${BUILD_FROM_SOURCE}" or unset LORA_KERNELS_ADDON`);
    }
    return { addon: loaded.addon, binary: { path: file, source: 'LORA_KERNELS_ADDON', skipped: [] } };
  }

  const candidates: { path: string; source: BinarySource }[] = [];
  const local = path.join(root, 'build', 'Release', 'lora_kernels.node');
  if (fs.existsSync(local)) candidates.push({ path: local, source: 'local build' });
  const prebuild = resolvePrebuild(root);
  if (prebuild) candidates.push({ path: prebuild, source: 'prebuild' });

  const skipped: LoadedBinary['skipped'] = [];
  for (const candidate of candidates) {
    const loaded = tryLoad(candidate.path, exportNames, version);
    if ('reason' in loaded) {
      skipped.push({ path: candidate.path, reason: loaded.reason });
      continue;
    }
    if (skipped.length) {
      process.emitWarning(
        `lora-kernels: ignoring ${skipped.map((s) => `${s.path} (${s.reason})`).join('; ')}; using ${candidate.path}`,
        { code: 'LORA_KERNELS_SKIPPED_BINARY' },
      );
    }
    return { addon: loaded.addon, binary: { ...candidate, skipped } };
  }

  const available = readdir(path.join(root, 'prebuilds')).join(', ') || 'none';
  const tried = skipped.length ? ` Found but unusable: ${skipped.map((s) => `${s.path} (${s.reason})`).join('; ')}.` : '';
  throw new LoraKernelsError(
    'ERR_UNSUPPORTED',
    `lora-kernels ${version}: no usable native binary for ${platformTag()}, Node-API 8 (node ${process.versions.node}). ` +
      `Looked in ${path.join(root, 'prebuilds', `${process.platform}-${process.arch}`)} (prebuilds shipped: ${available}) ` +
      `and ${local}.${tried} Build it from source (CMake ≥ 3.19 and a C++17 compiler; nvcc for CUDA) with: ${BUILD_FROM_SOURCE}`,
  );
}

/** How long the child-process CUDA probe may take: cuInit on a machine with many GPUs takes seconds. */
const PROBE_TIMEOUT_MS = 60_000;

/**
 * Probes the CUDA driver in a child process that loads the same binary, so that a driver that
 * crashes or hangs while initialising takes down the child, not the host. Returns undefined when
 * this process may probe in-process (the child saw a working device), or the reason CUDA must
 * stay off. Costs one short-lived Node process (~0.1 s plus the driver's own start-up), once per
 * process, and only when something asks about CUDA.
 */
export function probeCudaInChild(binaryPath: string): string | undefined {
  const script = `process.stdout.write(JSON.stringify(require(process.argv[1]).backends().cuda));`;
  const timeout = Number(process.env['LORA_KERNELS_CUDA_PROBE_TIMEOUT_MS'] ?? PROBE_TIMEOUT_MS);
  const child = spawnSync(process.execPath, ['-e', script, binaryPath], {
    encoding: 'utf8',
    timeout,
    killSignal: 'SIGKILL',  // a driver stuck in the kernel may not answer SIGTERM
    stdio: ['ignore', 'pipe', 'pipe'],
    // The child must probe in-process (it is the probe) and, under Electron, behave as Node.
    env: { ...process.env, LORA_KERNELS_CUDA_PROBE: 'in-process', ELECTRON_RUN_AS_NODE: '1' },
  });
  const stderr = (child.stderr ?? '').trim().split('\n').slice(-3).join(' | ');
  const detail = stderr ? ` (child stderr: ${stderr})` : '';
  if (child.error && (child.error as NodeJS.ErrnoException).code === 'ETIMEDOUT') {
    return `the CUDA driver did not finish initialising within ${timeout} ms in a probe process; CUDA is off for this process${detail}`;
  }
  if (child.signal) return `the CUDA driver crashed a probe process (${child.signal}) while initialising; CUDA is off for this process${detail}`;
  if (child.error || child.status !== 0) {
    return `the CUDA probe process failed (${child.error ? child.error.message : `exit code ${child.status}`}); CUDA is off for this process${detail}`;
  }
  try {
    const cuda = JSON.parse(child.stdout) as { available: boolean; reason?: string };
    return cuda.available ? undefined : (cuda.reason ?? 'CUDA is not available');
  } catch {
    return `the CUDA probe process printed no result; CUDA is off for this process${detail}`;
  }
}
