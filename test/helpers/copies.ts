import { vi } from 'vitest';
import { type Device, Tensor } from '../../lib/index.js';

/**
 * Runs `body` while recording every tensor made by `Tensor.prototype.to` (the copies an op makes of
 * host arguments for a device), and returns them. Counting copies this way, not by memoryStats,
 * leaves out other tests' tensors that the garbage collector finalizes meanwhile.
 */
export async function deviceCopiesDuring(body: () => Promise<void>): Promise<Tensor[]> {
  const copies: Tensor[] = [];
  const to = Tensor.prototype.to;
  const spy = vi.spyOn(Tensor.prototype, 'to').mockImplementation(function (this: Tensor, target: Device) {
    const t = to.call(this, target);
    copies.push(t);
    return t;
  });
  try {
    await body();
  } finally {
    spy.mockRestore();
  }
  return copies;
}
