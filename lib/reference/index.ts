/** float64 references of every op, and the tolerance table the tests apply. */
import { backward, forward } from './lora_linear.js';
import { forwardMulti } from './lora_multi.js';
import { doraBackward, doraForward, doraWeightNorm } from './dora.js';
import { dequantize, nf4Absmax, nf4Quantize, ternaryQuantize } from './quant.js';
import { matmul, matmulBackward } from './quant_matmul.js';
import { int8Dequantize, int8Quantize } from './quant_activations.js';
import { loftq, pissa } from './init.js';
import { compress, merge, qr, svd } from './linalg.js';
import { expandCache, flashLora, flashLoraBackward } from './flash_lora.js';

export { assertClose, compareClose, LINALG_TOLERANCES, TOLERANCES } from './tolerance.js';
export type { CloseReport, RefTensor, Tolerance, ToleranceKey } from './tolerance.js';
export type { ReferenceLoraBackwardArgs, ReferenceLoraForwardArgs, ReferenceLoraGradients } from './lora_linear.js';
export type { ReferenceLoraForwardMultiArgs } from './lora_multi.js';
export type { RefInput, ReferenceDoraBackwardArgs, ReferenceDoraForwardArgs, ReferenceDoraGradients, ReferenceDoraWeightNormArgs } from './dora.js';

export type { ReferenceLoftqResult, ReferencePissaResult } from './init.js';
export type { ReferenceQr, ReferenceSvd } from './linalg.js';
export type {
  ReferenceFlashLoraArgs, ReferenceFlashLoraBackwardArgs, ReferenceFlashLoraGradients, ReferenceFlashLoraResult,
} from './flash_lora.js';
export type { ReferenceQuantMatmulArgs, ReferenceQuantMatmulBackwardArgs, ReferenceQuantMatmulGradients } from './quant_matmul.js';

export const lora = { forward, backward, forwardMulti, doraForward, doraBackward, doraWeightNorm, compress, merge };

/** linalg.svd (economy, one-sided Jacobi to float64 precision) and linalg.qr (Householder). */
export const linalg = { svd, qr };

/** attention.flashLora / flashLoraBackward on the expanded caches, and the expansion itself. */
export const attention = { flashLora, flashLoraBackward, expandCache };

/**
 * quant.*: quantizers that produce the kernels' bytes exactly, dequantize (the float32 values that
 * define it, as float64), and float64 matmul / matmulBackward on the dequantized weight; int8: the
 * per-token activation quantizer's codes and scales, and its dequantize.
 */
export const quant = {
  nf4: { quantize: nf4Quantize, dequantize, absmax: nf4Absmax },
  ternary: { quantize: ternaryQuantize, dequantize },
  int8: { quantize: int8Quantize, dequantize: int8Dequantize },
  dequantize,
  matmul,
  matmulBackward,
};

/** init.pissa and init.loftq with an exact truncated SVD. */
export const init = { pissa, loftq };
