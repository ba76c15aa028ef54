/**
 * The backends every op's case list runs against: the CPU always, and the CUDA device when the
 * loaded addon has one (a real GPU, or the SIMT emulation in the emulated build).
 * LK_TEST_DEVICES=cpu,cuda narrows the list; a device named there that the addon lacks is an error.
 */
import { backends, type Device, Tensor, type DType } from '../../lib/index.js';

/**
 * LK_TEST_FOCUSED=1: the ThreadSanitizer run (one OS thread per emulated CUDA thread, ~50× the
 * time of a fiber run). Suites shrink their largest cases and repeat counts, never a kind of case.
 */
export const focusedRun = process.env['LK_TEST_FOCUSED'] === '1';

export interface TestDevice {
  device: Device;
  /** Kernels run on the CPU through the SIMT emulator: keep shapes small. */
  emulated: boolean;
}

export function testDevices(): TestDevice[] {
  const info = backends();
  const wanted = process.env['LK_TEST_DEVICES']?.split(',').map((s) => s.trim());
  const all: TestDevice[] = [{ device: 'cpu', emulated: false }];
  if (info.cuda.available) all.push({ device: 'cuda', emulated: info.cuda.emulated });
  // A device asked for by name must exist: `LK_TEST_DEVICES=cuda` never passes by running nothing.
  const missing = wanted?.filter((name) => !all.some((d) => d.device === name));
  if (missing?.length) {
    throw new Error(`LK_TEST_DEVICES asks for ${missing.join(', ')}, which the loaded addon does not offer` +
      (missing.includes('cuda') ? ` (cuda: ${info.cuda.reason ?? 'not available'})` : ''));
  }
  return wanted ? all.filter((d) => wanted.includes(d.device)) : all;
}

/** A tensor of NaN (float) or 0x5A (int) on `device`: any element a kernel forgets stays poisoned. */
export function poisoned(shape: readonly number[], dtype: DType, device: Device): Tensor {
  const count = shape.reduce((a, b) => a * b, 1);
  const host = dtype === 'float32' ? new Float32Array(count).fill(NaN)
    : dtype === 'float16' ? new Uint16Array(count).fill(0x7e00)
    : dtype === 'bfloat16' ? new Uint16Array(count).fill(0x7fc0)
    : undefined;
  if (!host) throw new Error(`poisoned: no poison for ${dtype}`);
  const t = Tensor.from(host, shape, { dtype });
  return device === 'cpu' ? t : t.to(device);
}
