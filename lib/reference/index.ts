/** float64 references of every op, and the tolerance table the tests apply. */
import { backward, forward } from './lora_linear.js';
import { forwardMulti } from './lora_multi.js';
import { doraBackward, doraForward, doraWeightNorm } from './dora.js';

export { assertClose, compareClose, TOLERANCES } from './tolerance.js';
export type { CloseReport, RefTensor, Tolerance, ToleranceKey } from './tolerance.js';
export type { ReferenceLoraBackwardArgs, ReferenceLoraForwardArgs, ReferenceLoraGradients } from './lora_linear.js';
export type { ReferenceLoraForwardMultiArgs } from './lora_multi.js';
export type { RefInput, ReferenceDoraBackwardArgs, ReferenceDoraForwardArgs, ReferenceDoraGradients, ReferenceDoraWeightNormArgs } from './dora.js';

export const lora = { forward, backward, forwardMulti, doraForward, doraBackward, doraWeightNorm };
