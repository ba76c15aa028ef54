/**
 * The typed contract of the native addon (csrc/binding/). Everything the addon exports is declared
 * here; lib/ never touches an untyped native value. Finding the binary: lib/loader.ts.
 */
import { fromNativeError } from './errors.js';
import { type LoadedBinary, loadBinary, probeCudaInChild } from './loader.js';

/** Opaque handle to device memory owned by the addon (a Napi::External). */
export interface NativeDeviceBuffer { readonly __deviceBuffer: unique symbol }

/** Opaque handle to a CUDA event recorded on a device's stream (freed by eventDestroy or the GC). */
export interface NativeEvent { readonly __cudaEvent: unique symbol }

/** A device's caching allocator (see lib/cuda.ts memoryStats). */
export interface NativeMemoryStats {
  allocatedBytes: number;
  cachedBytes: number;
  reservedBytes: number;
  peakAllocatedBytes: number;
  deviceAllocations: number;
  cacheHits: number;
}

/** How a tensor crosses into C++: host data as a TypedArray, device data as a buffer handle. */
export interface NativeTensor {
  dtype: number;
  shape: readonly number[];
  data: ArrayBufferView | NativeDeviceBuffer;
}

/** How the binary was built (compile-time facts; reading them never touches the CUDA driver). */
export interface NativeBuildInfo {
  version: string;
  napiVersion: number;
  buildType: string;
  compiler: string;
  /** CPU kernel variants compiled in; the best one the CPU supports is picked at run time. */
  simdLevels: string[];
  sanitize: string;
  /** wgmma: the binary holds the Hopper GEMM mainloop (sm_90a code, or the emulator). */
  cuda: { compiled: boolean; emulated: boolean; archs: string[]; toolkit: string; wgmma: boolean };
}

export interface NativeBackends {
  cpu: { simd: 'avx512' | 'avx2' | 'neon' | 'scalar'; threads: number };
  cuda: {
    available: boolean;
    compiled: boolean;
    emulated: boolean;
    reason?: string;
    /** gemmMainloop: what the GEMM engine runs 16-bit work on there (wgmma on sm_90 with an sm_90a binary). */
    devices: { name: string; computeCapability: string; memoryBytes: number; gemmMainloop: 'wgmma' | 'mma.sync' | 'fma' }[];
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

export interface NativeFlashLora {
  q: NativeTensor;
  kBase: NativeTensor;
  vBase: NativeTensor;
  vLowRank?: NativeTensor;
  vLoraB?: NativeTensor;
  kLowRank?: NativeTensor;
  kLoraB?: NativeTensor;
  adapterIds?: NativeTensor;
  causal: boolean;
  softmaxScale: number;
  out: NativeTensor;
  lse: NativeTensor;
}

export interface NativeFlashLoraBackward extends NativeFlashLora {
  gradOut: NativeTensor;
  gradQ: NativeTensor;
  gradKBase: NativeTensor;
  gradVBase: NativeTensor;
  gradVLowRank?: NativeTensor;
  gradVLoraB?: NativeTensor;
  gradKLowRank?: NativeTensor;
  gradKLoraB?: NativeTensor;
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

/**
 * A quantized [n, k] weight (csrc/ops/quant.h QuantWeight): format 0 = NF4 (packed ⌈n·k/2⌉ bytes,
 * blockSize, float32 absmax per block or its double-quantized parts), 1 = ternary (packed
 * [n, ⌈k/4⌉] bytes, one float32 scale).
 */
export interface NativeQuantWeight {
  format: 0 | 1;
  n: number;
  k: number;
  packed: NativeTensor;
  blockSize?: number;
  absmax?: NativeTensor;
  absmaxCode?: NativeTensor;
  nestedAbsmax?: NativeTensor;
  nestedCode?: NativeTensor;
  offset?: number;
  scale?: number;
}

export interface NativeNf4Quantize {
  w: NativeTensor;
  blockSize: number;
  doubleQuant: boolean;
  packed: NativeTensor;
  absmax: NativeTensor;
  absmaxCode?: NativeTensor;
  nestedAbsmax?: NativeTensor;
  /** Input: the dynamic map, float32 [256]. */
  nestedCode?: NativeTensor;
  /** float32 [1]: the mean of the absmax values. */
  offset?: NativeTensor;
}

export interface NativeTernaryQuantize {
  w: NativeTensor;
  eps: number;
  packed: NativeTensor;
  /** float32 [1] */
  scale: NativeTensor;
}

export interface NativeDequantize {
  weight: NativeQuantWeight;
  out: NativeTensor;
}

/** x [..., K] (a float dtype) → values int8 [..., K], scales float32 [M] (csrc/ops/quant_activations.h). */
export interface NativeInt8Quantize {
  x: NativeTensor;
  values: NativeTensor;
  scales: NativeTensor;
}

/** values int8 [..., K], scales float32 [M] → out [..., K] in out's dtype. */
export interface NativeInt8Dequantize {
  values: NativeTensor;
  scales: NativeTensor;
  out: NativeTensor;
}

/** [batch, rows, cols] element strides of a strided operand (csrc/ops/linalg.h MatrixArg). */
export type NativeMatrixStrides = [batch: number, row: number, col: number];

/**
 * a [batch, m, n] float32 (through aStrides) → s float32 [batch, keep] (descending), u [batch, m,
 * keep | m] and vh [batch, keep | n, n] through their strides (both or neither: values only),
 * sweeps int32 [batch] (−1: not converged). tol 0: the kernel's default. csrc/ops/linalg.h.
 */
export interface NativeLinalgSvd {
  a: NativeTensor;
  aStrides: NativeMatrixStrides;
  batch: number;
  m: number;
  n: number;
  keep: number;
  fullMatrices: boolean;
  maxSweeps: number;
  tol: number;
  s: NativeTensor;
  u?: NativeTensor;
  uStrides?: NativeMatrixStrides;
  vh?: NativeTensor;
  vhStrides?: NativeMatrixStrides;
  sweeps: NativeTensor;
}

/** a [batch, m, n] float32 → q [batch, m, k], r [batch, k, n] (k = min(m, n), diag(r) ≥ 0), all strided. */
export interface NativeLinalgQr {
  a: NativeTensor;
  aStrides: NativeMatrixStrides;
  batch: number;
  m: number;
  n: number;
  q: NativeTensor;
  qStrides: NativeMatrixStrides;
  r?: NativeTensor;
  rStrides?: NativeMatrixStrides;
}

export interface NativeQuantMatmul {
  x: NativeTensor;
  weight: NativeQuantWeight;
  bias?: NativeTensor;
  a?: NativeTensor;
  b?: NativeTensor;
  scale: number;
  gate: number;
  gatePerOutput?: NativeTensor;
  out: NativeTensor;
}

export interface NativeQuantMatmulBackward {
  gradOutput: NativeTensor;
  x: NativeTensor;
  weight: NativeQuantWeight;
  a: NativeTensor;
  b: NativeTensor;
  scale: number;
  gate: number;
  gatePerOutput?: NativeTensor;
  gradInput?: NativeTensor;
  gradA: NativeTensor;
  gradB: NativeTensor;
  gradGate?: NativeTensor;
}

export interface NativeModule {
  buildInfo(): NativeBuildInfo;
  disableCuda(reason: string): void;
  backends(): NativeBackends;
  deviceAlloc(device: number, bytes: number): NativeDeviceBuffer;
  deviceFree(buffer: NativeDeviceBuffer): void;
  copyToDevice(buffer: NativeDeviceBuffer, source: ArrayBufferView): void;
  copyToHost(buffer: NativeDeviceBuffer, destination: ArrayBufferView): void;
  copyOnDevice(destination: NativeDeviceBuffer, source: NativeDeviceBuffer): void;
  fillRandn(destination: ArrayBufferView, dtypeCode: number, seed: number): void;
  /** Waits for everything enqueued on the device's stream; ERR_CUDA naming the ops on a fault. */
  deviceSynchronize(device: number): void;
  memoryStats(device: number): NativeMemoryStats;
  emptyCache(device: number): void;
  /** Records an event on the device's stream (benchmarks: the GPU time between two events). */
  eventRecord(device: number): NativeEvent;
  /** Waits for `stop`, then the milliseconds between the two events (same device). */
  eventElapsedMs(start: NativeEvent, stop: NativeEvent): number;
  /** Frees the event now (idempotent); otherwise the garbage collector does. */
  eventDestroy(event: NativeEvent): void;
  /**
   * Test-only, not public API: an op whose kernel traps, which kills the device's CUDA context for
   * the rest of the process (test/cuda_fault.test.ts runs it in processes of their own).
   */
  /**
   * The CUDA ops this thread enqueued since the last call (at most 8) and the kernels each chose:
   * "lora.forward: mma.sync bfloat16 128x32 KK; mma.sync bfloat16 128x256 KK"; ops joined by " | ".
   * For benchmark rows and tests that check which path ran.
   */
  takeOpPlans(): string;
  testKernelFault(device: number): void;
  /** Test-only, not public API: testKernelFault as an async op (rejects when its work completes). */
  testKernelFaultAsync(device: number): Promise<void>;
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
  nf4Quantize(args: NativeNf4Quantize): void;
  nf4QuantizeAsync(args: NativeNf4Quantize): Promise<void>;
  ternaryQuantize(args: NativeTernaryQuantize): void;
  ternaryQuantizeAsync(args: NativeTernaryQuantize): Promise<void>;
  quantDequantize(args: NativeDequantize): void;
  quantDequantizeAsync(args: NativeDequantize): Promise<void>;
  quantMatmul(args: NativeQuantMatmul): void;
  quantMatmulAsync(args: NativeQuantMatmul): Promise<void>;
  quantMatmulBackward(args: NativeQuantMatmulBackward): void;
  quantMatmulBackwardAsync(args: NativeQuantMatmulBackward): Promise<void>;
  int8Quantize(args: NativeInt8Quantize): void;
  int8QuantizeAsync(args: NativeInt8Quantize): Promise<void>;
  int8Dequantize(args: NativeInt8Dequantize): void;
  int8DequantizeAsync(args: NativeInt8Dequantize): Promise<void>;
  linalgSvd(args: NativeLinalgSvd): void;
  linalgSvdAsync(args: NativeLinalgSvd): Promise<void>;
  linalgQr(args: NativeLinalgQr): void;
  linalgQrAsync(args: NativeLinalgQr): Promise<void>;
  flashLora(args: NativeFlashLora): void;
  flashLoraAsync(args: NativeFlashLora): Promise<void>;
  flashLoraBackward(args: NativeFlashLoraBackward): void;
  flashLoraBackwardAsync(args: NativeFlashLoraBackward): Promise<void>;
}

// Every export of the contract, checked at load: the compiler keeps this list complete, and a
// stale local build that lacks a newer op is skipped (or refused) at load with a rebuild hint
// instead of a confusing "is not a function" later.
const NATIVE_EXPORTS: Record<keyof NativeModule, true> = {
  buildInfo: true, disableCuda: true,
  backends: true, deviceAlloc: true, deviceFree: true, copyToDevice: true, copyToHost: true, copyOnDevice: true,
  fillRandn: true, deviceSynchronize: true, memoryStats: true, emptyCache: true, eventRecord: true, eventElapsedMs: true,
  eventDestroy: true, takeOpPlans: true, testKernelFault: true, testKernelFaultAsync: true, loraForward: true, loraForwardAsync: true,
  loraForwardMulti: true, loraForwardMultiAsync: true, doraForward: true, doraForwardAsync: true, doraBackward: true,
  doraBackwardAsync: true, loraBackward: true, loraBackwardAsync: true, nf4Quantize: true, nf4QuantizeAsync: true,
  ternaryQuantize: true, ternaryQuantizeAsync: true, quantDequantize: true, quantDequantizeAsync: true, quantMatmul: true,
  quantMatmulAsync: true, quantMatmulBackward: true, quantMatmulBackwardAsync: true, int8Quantize: true, int8QuantizeAsync: true,
  int8Dequantize: true, int8DequantizeAsync: true, linalgSvd: true, linalgSvdAsync: true, linalgQr: true, linalgQrAsync: true,
  flashLora: true, flashLoraAsync: true, flashLoraBackward: true, flashLoraBackwardAsync: true,
};

let loaded: { addon: NativeModule; binary: LoadedBinary } | undefined;
let cudaGateDone = false;

function load(): { addon: NativeModule; binary: LoadedBinary } {
  if (!loaded) {
    const { addon, binary } = loadBinary(Object.keys(NATIVE_EXPORTS));
    loaded = { addon: addon as NativeModule, binary };
  }
  return loaded;
}

/** The addon, loaded on first use. */
export function native(): NativeModule {
  return load().addon;
}

/** Which binary serves this process, and which were found but skipped. */
export function loadedBinary(): LoadedBinary {
  return load().binary;
}

/**
 * The addon, after deciding once whether this process may touch the CUDA driver: every path
 * that can reach the driver (backends(), device allocation) goes through here. A real-CUDA build
 * first probes in a child process (see probeCudaInChild) unless LORA_KERNELS_CUDA_PROBE=in-process;
 * LORA_KERNELS_CUDA=off keeps CUDA off without probing.
 */
export function cudaGatedNative(): NativeModule {
  const { addon, binary } = load();
  if (cudaGateDone) return addon;
  cudaGateDone = true;
  const info = addon.buildInfo();
  if (!info.cuda.compiled) return addon;
  const mode = process.env['LORA_KERNELS_CUDA'];
  if (mode === 'off' || mode === '0') {
    addon.disableCuda(`CUDA is turned off by LORA_KERNELS_CUDA=${mode}`);
    return addon;
  }
  if (info.cuda.emulated || process.env['LORA_KERNELS_CUDA_PROBE'] === 'in-process') return addon;
  const reason = probeCudaInChild(binary.path);
  if (reason) addon.disableCuda(reason);
  return addon;
}

/** Calls into the addon, turning its errors into LoraKernelsError. */
export function callNative<T>(fn: (m: NativeModule) => T, opts: { cuda?: boolean } = {}): T {
  const m = opts.cuda ? cudaGatedNative() : native();
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
