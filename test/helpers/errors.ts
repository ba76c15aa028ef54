import { expect } from 'vitest';

import { LoraKernelsError } from '../../lib/index.js';

/** `fn` must throw a LoraKernelsError with `code` and a message matching `pattern`. */
export function expectError(fn: () => unknown, code: string, pattern: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  expect(caught, 'expected a LoraKernelsError').toBeInstanceOf(LoraKernelsError);
  expect((caught as LoraKernelsError).code).toBe(code);
  expect((caught as LoraKernelsError).message).toMatch(pattern);
}
