import { describe, expect, it } from 'vitest';

import { finetune } from '../examples/finetune.js';

describe('examples/finetune.ts', () => {
  it('a LoRA fine-tune with lora.forward / lora.backward and Adam lowers the loss', () => {
    const losses = finetune({ steps: 40, printEvery: 0 });
    expect(losses).toHaveLength(40);
    const first = losses[0]!;
    const lastFive = losses.slice(-5).reduce((s, l) => s + l, 0) / 5;
    expect(lastFive).toBeLessThan(0.5 * first);
  });
});
