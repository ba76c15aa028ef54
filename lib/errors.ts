/** Error codes shared by the TypeScript layer and the native core. */
export type ErrorCode =
  | 'ERR_ARGUMENT'
  | 'ERR_SHAPE'
  | 'ERR_DTYPE'
  | 'ERR_DEVICE'
  | 'ERR_UNSUPPORTED'
  | 'ERR_OUT_OF_MEMORY'
  | 'ERR_CUDA'
  | 'ERR_FORMAT'
  | 'ERR_DISPOSED'
  | 'ERR_CONVERGENCE';

const ERROR_CODES: ReadonlySet<string> = new Set<ErrorCode>([
  'ERR_ARGUMENT', 'ERR_SHAPE', 'ERR_DTYPE', 'ERR_DEVICE', 'ERR_UNSUPPORTED',
  'ERR_OUT_OF_MEMORY', 'ERR_CUDA', 'ERR_FORMAT', 'ERR_DISPOSED', 'ERR_CONVERGENCE',
]);

/** Every failure of this package, from argument checks to CUDA errors, is one of these. */
export class LoraKernelsError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = 'LoraKernelsError';
    this.code = code;
  }
}

/** Describes a value for an error message: `a Float32Array of length 3`, `undefined`, ... */
export function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  if (ArrayBuffer.isView(value)) return `a ${value.constructor.name}`;
  if (typeof value === 'object') {
    const name = (value as object).constructor?.name;
    return name && name !== 'Object' ? `a ${name}` : 'an object';
  }
  if (typeof value === 'string') return `the string ${JSON.stringify(value)}`;
  return `${typeof value} ${String(value)}`;
}

/**
 * The one message format for bad arguments: `<op>: <argument> must be <expected>, got <actual>`.
 */
export function argumentError(code: ErrorCode, op: string, argument: string, expected: string, got: string): LoraKernelsError {
  return new LoraKernelsError(code, `${op}: ${argument} must be ${expected}, got ${got}`);
}

/** Turns an error thrown by the native addon (an Error with a `code`) into a LoraKernelsError. */
export function fromNativeError(error: unknown): LoraKernelsError {
  if (error instanceof LoraKernelsError) return error;
  const err = error as { code?: unknown; message?: unknown };
  const code = typeof err?.code === 'string' && ERROR_CODES.has(err.code) ? (err.code as ErrorCode) : 'ERR_ARGUMENT';
  const message = typeof err?.message === 'string' ? err.message : String(error);
  return new LoraKernelsError(code, message);
}
