/**
 * An op's two entry points, sync and off the JS thread, from its prepare step: every op checks its
 * arguments and builds the addon's descriptor (prepare), runs the addon's `name` or `nameAsync`,
 * frees what it made for this call alone, and returns its result. An op adds only its prepare.
 */
import { callNative, callNativeAsync, type NativeModule } from '../native.js';
import type { Tensor } from '../tensor.js';

/** The addon's ops: a method `name(desc)` with its twin `nameAsync(desc)`. */
type NativeOp = { [K in keyof NativeModule & string]: `${K}Async` extends keyof NativeModule ? K : never }[keyof NativeModule & string];

type DescOf<K extends NativeOp> = Parameters<NativeModule[K]>[0];

/**
 * What prepare hands the call: the descriptor (undefined: nothing to compute, e.g. an empty batch,
 * and the addon is not called); the result, or (when it is read back after the op has run, like a
 * scale computed on the device) `finish`, which makes it; and the temporaries: tensors made for
 * this call alone (host numbers copied to the device), disposed once the op has run or been
 * enqueued (CUDA frees in stream order), also when it throws.
 */
export type Prepared<D, R> = { desc: D | undefined; temporaries?: readonly Tensor[] } & ({ result: R } | { finish: () => R });

export interface Op<A extends unknown[], R> {
  sync(...args: A): R;
  /** Argument errors reject the promise, like the op's own: nothing throws synchronously. */
  async(...args: A): Promise<R>;
}

function done<R>(prepared: Prepared<unknown, R>): R {
  return 'finish' in prepared ? prepared.finish() : prepared.result;
}

function disposeAll(temporaries: readonly Tensor[] | undefined): void {
  for (const t of temporaries ?? []) t.dispose();
}

/**
 * The op `name` (e.g. 'lora.forward'; the async form is named `${name}Async` in its messages) on
 * the addon's `native` method and its Async twin.
 */
export function defineOp<K extends NativeOp, A extends unknown[], R>(
  name: string, native: K, prepare: (op: string, ...args: A) => Prepared<DescOf<K>, R>,
): Op<A, R> {
  type Call = (desc: DescOf<K>) => void;
  type AsyncCall = (desc: DescOf<K>) => Promise<void>;
  return {
    sync(...args: A): R {
      const prepared = prepare(name, ...args);
      const desc = prepared.desc;
      try {
        if (desc !== undefined) callNative((m) => (m[native] as Call)(desc));
      } finally {
        disposeAll(prepared.temporaries);
      }
      return done(prepared);
    },
    async async(...args: A): Promise<R> {
      const prepared = prepare(`${name}Async`, ...args);
      const desc = prepared.desc;
      try {
        if (desc !== undefined) await callNativeAsync((m) => (m[`${native}Async`] as AsyncCall)(desc));
      } finally {
        disposeAll(prepared.temporaries);
      }
      return done(prepared);
    },
  };
}
