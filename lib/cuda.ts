/**
 * The CUDA device's queue and memory. On CUDA, ops are stream-ordered (one stream per device): a
 * call validates, enqueues and returns without waiting for the GPU. Reading device data back
 * (`to('cpu')`, `toArray()`, `toFloat32()`) waits for the work queued before it; an `…Async` op's
 * Promise resolves when its work has finished; `synchronize()` waits for everything queued. A fault
 * inside a kernel is reported at the next wait as ERR_CUDA naming the op (or the ops queued since
 * the last wait, when it cannot tell which); the device is unusable after it (the process must
 * restart), and every later call on it is ERR_CUDA with that first message.
 *
 * Device memory comes from a caching allocator: dispose() returns a tensor's block to the cache
 * at once, without waiting for the GPU (the block's next owner is queued behind its last user),
 * and later tensors and ops' scratch reuse it instead of calling cudaMalloc. When cudaMalloc
 * fails, the cache is emptied and the allocation retried once before ERR_OUT_OF_MEMORY.
 */
import { argumentError, describeValue, LoraKernelsError } from './errors.js';
import { callNative } from './native.js';
import { type Device, deviceIndex } from './tensor.js';

/** A CUDA device's caching allocator, in bytes (block sizes, rounded up) and counts. */
export interface MemoryStats {
  /** Held by live tensors and by ops' scratch. */
  allocatedBytes: number;
  /** Freed blocks kept for reuse; `emptyCache()` returns them to the driver. */
  cachedBytes: number;
  /** `allocatedBytes + cachedBytes`: what this process holds from the driver. */
  reservedBytes: number;
  /** The most `allocatedBytes` has been in this process. */
  peakAllocatedBytes: number;
  /** cudaMalloc calls so far (allocations the cache could not serve). */
  deviceAllocations: number;
  /** Allocations served from the cache. */
  cacheHits: number;
}

let cudaDevices: number | undefined;

/** The index of a CUDA device that exists in this process; ERR_DEVICE otherwise. */
function cudaIndex(device: unknown, op: string): number {
  const index = deviceIndex(device, op);
  if (index < 0) throw argumentError('ERR_DEVICE', op, 'device', `a CUDA device ('cuda' or 'cuda:<index>')`, describeValue(device));
  if (cudaDevices === undefined) {
    const cuda = callNative((m) => m.backends(), { cuda: true }).cuda;
    if (!cuda.available) {
      throw new LoraKernelsError('ERR_DEVICE', `${op}: device must be a CUDA device of this process, got ${describeValue(device)} (CUDA is not available: ${cuda.reason ?? 'unknown reason'})`);
    }
    cudaDevices = cuda.devices.length;
  }
  if (index >= cudaDevices) {
    throw argumentError('ERR_DEVICE', op, 'device', `one of the ${cudaDevices} CUDA device(s) ('cuda' = 'cuda:0' … 'cuda:${cudaDevices - 1}')`, describeValue(device));
  }
  return index;
}

/** Waits for everything queued on `device` (default 'cuda'). ERR_CUDA if a kernel faulted. */
export function synchronize(device: Device = 'cuda'): void {
  const index = cudaIndex(device, 'synchronize');
  callNative((m) => m.deviceSynchronize(index), { cuda: true });
}

/** The caching allocator's numbers for `device` (default 'cuda'); answers even after a fault. */
export function memoryStats(device: Device = 'cuda'): MemoryStats {
  const index = cudaIndex(device, 'memoryStats');
  return callNative((m) => m.memoryStats(index), { cuda: true });
}

/** Returns the cached (free) blocks of `device` (default 'cuda') to the driver; waits for the device first. */
export function emptyCache(device: Device = 'cuda'): void {
  const index = cudaIndex(device, 'emptyCache');
  callNative((m) => m.emptyCache(index), { cuda: true });
}
