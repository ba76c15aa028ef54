import { callNative, type NativeBackends } from './native.js';

export type Backends = NativeBackends;

/**
 * What this binary can run on: the CPU SIMD level and thread count, and whether CUDA is usable
 * (with the reason when it is not: not compiled, no driver, driver too old, no device). In the
 * emulated build (tests), `cuda.emulated` is true and the kernels run on the CPU.
 */
export function backends(): Backends {
  return callNative((m) => m.backends());
}
