/**
 * The typed contract of the native addon (csrc/binding/) and its loader. Everything the addon
 * exports is declared here; lib/ never touches an untyped native value.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { fromNativeError, LoraKernelsError } from './errors.js';

/** Opaque handle to device memory owned by the addon (a Napi::External). */
export interface NativeDeviceBuffer { readonly __deviceBuffer: unique symbol }

/** How a tensor crosses into C++: host data as a TypedArray, device data as a buffer handle. */
export interface NativeTensor {
  dtype: number;
  shape: readonly number[];
  data: ArrayBufferView | NativeDeviceBuffer;
}

export interface NativeBackends {
  cpu: { simd: 'avx512' | 'avx2' | 'neon' | 'scalar'; threads: number };
  cuda: {
    available: boolean;
    compiled: boolean;
    emulated: boolean;
    reason?: string;
    devices: { name: string; computeCapability: string; memoryBytes: number }[];
  };
}

export interface NativeLoraForward {
  x: NativeTensor;
  weight: NativeTensor;
  bias?: NativeTensor;
  a?: NativeTensor;
  b?: NativeTensor;
  dropoutMask?: NativeTensor;
  out: NativeTensor;
  scale: number;
  allowTf32: boolean;
}

export interface NativeLoraBackward {
  gradOutput: NativeTensor;
  x: NativeTensor;
  weight: NativeTensor;
  a: NativeTensor;
  b: NativeTensor;
  dropoutMask?: NativeTensor;
  scale: number;
  gradInput?: NativeTensor;
  gradA: NativeTensor;
  gradB: NativeTensor;
}

export interface NativeDoraOperands {
  x: NativeTensor;
  weight: NativeTensor;
  a: NativeTensor;
  b: NativeTensor;
  magnitude: NativeTensor;
  scale: number;
}

export interface NativeDoraForward extends NativeDoraOperands {
  bias?: NativeTensor;
  out: NativeTensor;
}

export interface NativeDoraBackward extends NativeDoraOperands {
  gradOutput: NativeTensor;
  gradInput?: NativeTensor;
  gradA: NativeTensor;
  gradB: NativeTensor;
  gradMagnitude: NativeTensor;
}

export interface NativeLoraForwardMulti {
  x: NativeTensor;
  weight: NativeTensor;
  bias?: NativeTensor;
  a: NativeTensor;
  b: NativeTensor;
  ranks?: NativeTensor;
  scales: NativeTensor;
  adapterIds: NativeTensor;
  out: NativeTensor;
}

export interface NativeModule {
  backends(): NativeBackends;
  deviceAlloc(device: number, bytes: number): NativeDeviceBuffer;
  deviceFree(buffer: NativeDeviceBuffer): void;
  copyToDevice(buffer: NativeDeviceBuffer, source: ArrayBufferView): void;
  copyToHost(buffer: NativeDeviceBuffer, destination: ArrayBufferView): void;
  copyOnDevice(destination: NativeDeviceBuffer, source: NativeDeviceBuffer): void;
  fillRandn(destination: ArrayBufferView, dtypeCode: number, seed: number): void;
  loraForward(args: NativeLoraForward): void;
  loraForwardAsync(args: NativeLoraForward): Promise<void>;
  loraForwardMulti(args: NativeLoraForwardMulti): void;
  loraForwardMultiAsync(args: NativeLoraForwardMulti): Promise<void>;
  doraForward(args: NativeDoraForward): void;
  doraForwardAsync(args: NativeDoraForward): Promise<void>;
  doraBackward(args: NativeDoraBackward): void;
  doraBackwardAsync(args: NativeDoraBackward): Promise<void>;
  loraBackward(args: NativeLoraBackward): void;
  loraBackwardAsync(args: NativeLoraBackward): Promise<void>;
}

/** The package root: the folder above lib/ (sources, tests) or dist/cjs/ (the published build). */
export function packageRoot(): string {
  let dir = __dirname;
  for (let i = 0; i < 4; i++) {
    const manifest = path.join(dir, 'package.json');
    if (fs.existsSync(manifest)) {
      const name = (JSON.parse(fs.readFileSync(manifest, 'utf8')) as { name?: string }).name;
      if (name === 'lora-kernels') return dir;
    }
    dir = path.dirname(dir);
  }
  throw new LoraKernelsError('ERR_UNSUPPORTED', `lora-kernels: cannot find the package root above ${__dirname}`);
}

// Every export of the contract, checked at load: the compiler keeps this list complete, and a
// stale local build that lacks a newer op fails at load with a rebuild hint instead of a
// confusing "is not a function" later.
const NATIVE_EXPORTS: Record<keyof NativeModule, true> = {
  backends: true, deviceAlloc: true, deviceFree: true, copyToDevice: true, copyToHost: true, copyOnDevice: true,
  fillRandn: true, loraForward: true, loraForwardAsync: true, loraForwardMulti: true, loraForwardMultiAsync: true,
  doraForward: true, doraForwardAsync: true, doraBackward: true, doraBackwardAsync: true, loraBackward: true,
  loraBackwardAsync: true,
};

function checkExports(addon: unknown, from: string): NativeModule {
  const missing = Object.keys(NATIVE_EXPORTS).filter((name) => typeof (addon as Record<string, unknown>)[name] !== 'function');
  if (missing.length) {
    throw new LoraKernelsError(
      'ERR_UNSUPPORTED',
      `lora-kernels: the native binary ${from} is older than this package (missing ${missing.join(', ')}); rebuild it with "npm run build:native"`,
    );
  }
  return addon as NativeModule;
}

function load(): NativeModule {
  // LORA_KERNELS_ADDON points at a specific build (the emulated CUDA backend in tests).
  const override = process.env['LORA_KERNELS_ADDON'];
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  if (override) return checkExports(require(path.resolve(override)), path.resolve(override));
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const nodeGypBuild = require('node-gyp-build') as (dir: string) => unknown;
  const root = packageRoot();
  let addon: unknown;
  try {
    addon = nodeGypBuild(root);
  } catch (error) {
    throw new LoraKernelsError(
      'ERR_UNSUPPORTED',
      `lora-kernels: no native binary for ${process.platform}-${process.arch} (node ${process.versions.node}) ` +
        `in ${path.join(root, 'prebuilds')} or ${path.join(root, 'build')}; build it from source with ` +
        `"npm run build:native" in ${root}. (${(error as Error).message})`,
    );
  }
  return checkExports(addon, `in ${root}`);
}

let cached: NativeModule | undefined;

/** The addon, loaded on first use. */
export function native(): NativeModule {
  cached ??= load();
  return cached;
}

/** Calls into the addon, turning its errors into LoraKernelsError. */
export function callNative<T>(fn: (m: NativeModule) => T): T {
  const m = native();
  try {
    return fn(m);
  } catch (error) {
    throw fromNativeError(error);
  }
}

export async function callNativeAsync(fn: (m: NativeModule) => Promise<void>): Promise<void> {
  const m = native();
  try {
    await fn(m);
  } catch (error) {
    throw fromNativeError(error);
  }
}
