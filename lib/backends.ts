import type { LoadedBinary } from './loader.js';
import { callNative, loadedBinary, type NativeBackends, type NativeBuildInfo } from './native.js';

export type Backends = NativeBackends;
export type BuildInfo = NativeBuildInfo & { binary: LoadedBinary };

/**
 * What this binary can run on: the CPU SIMD level and thread count, and whether CUDA is usable
 * (with the reason when it is not: not compiled, no driver, driver too old, no device, or a
 * driver that crashed or hung a probe process). In the emulated build (tests), `cuda.emulated`
 * is true and the kernels run on the CPU.
 */
export function backends(): Backends {
  return callNative((m) => m.backends(), { cuda: true });
}

/**
 * How the loaded binary was built (version, compiler, SIMD variants, CUDA toolkit and archs,
 * sanitizers) and where it came from (prebuild, local build or LORA_KERNELS_ADDON, plus any
 * binary that was found but skipped). Never touches the CUDA driver.
 */
export function buildInfo(): BuildInfo {
  return { ...callNative((m) => m.buildInfo()), binary: loadedBinary() };
}
