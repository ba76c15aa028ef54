/**
 * lora-kernels: fused LoRA kernels with a CPU fallback for every op.
 *
 *   import { Tensor, lora, reference } from 'lora-kernels';
 */
import { backward, backwardAsync, forward, forwardAsync } from './ops/lora_linear.js';
import { forwardMulti, forwardMultiAsync } from './ops/lora_multi.js';
import { doraBackward, doraBackwardAsync, doraForward, doraForwardAsync } from './ops/dora.js';
import * as referenceOps from './reference/index.js';
import { read as safetensorsRead, write as safetensorsWrite, writeFile as safetensorsWriteFile } from './formats/safetensors.js';
import { loadAdapter, saveAdapter } from './formats/peft.js';
import { loadNf4 } from './formats/bnb.js';
import {
  disposeQuantized, nf4Dequantize, nf4DequantizeAsync, nf4Quantize, nf4QuantizeAsync, quantizedTo, ternaryDequantize,
  ternaryDequantizeAsync, ternaryFromI2S, ternaryQuantize, ternaryQuantizeAsync, ternaryToI2S,
} from './ops/quant.js';
import { matmul, matmulAsync, matmulBackward, matmulBackwardAsync } from './ops/quant_matmul.js';
import { int8Dequantize, int8DequantizeAsync, int8Quantize, int8QuantizeAsync } from './ops/quant_activations.js';
import { loftq, pissa } from './ops/init.js';
import { qr, qrAsync, svd, svdAsync, svdLowRank, svdProduct } from './ops/linalg.js';
import { compress, merge } from './ops/lora_merge.js';
import { FLASH_LORA_HEAD_DIMS, FLASH_LORA_MAX_RANK, flashLora, flashLoraAsync, flashLoraBackward, flashLoraBackwardAsync } from './ops/flash_lora.js';

export { backends, buildInfo } from './backends.js';
export type { Backends, BuildInfo } from './backends.js';
export { emptyCache, memoryStats, synchronize } from './cuda.js';
export type { MemoryStats } from './cuda.js';
export { DTYPES, FLOAT_DTYPES } from './dtype.js';
export type { DType, TypedArray } from './dtype.js';
export { LoraKernelsError } from './errors.js';
export type { ErrorCode } from './errors.js';
export { Tensor } from './tensor.js';
export type { Device } from './tensor.js';
export type { LoraBackwardArgs, LoraForwardArgs, LoraGradients } from './ops/lora_linear.js';
export type { LoraForwardMultiArgs } from './ops/lora_multi.js';
export type { DoraBackwardArgs, DoraForwardArgs, DoraGradients } from './ops/dora.js';
export type {
  DequantizeOptions, FromI2SOptions, Nf4NestedAbsmax, Nf4QuantizeOptions, Nf4Tensor, QuantDType, QuantizedTensor,
  TernaryQuantizeOptions, TernaryTensor,
} from './ops/quant.js';
export type { QuantMatmulArgs, QuantMatmulBackwardArgs, QuantMatmulGradients } from './ops/quant_matmul.js';
export type { Int8Activations, Int8DequantizeOptions, Int8QuantizeOptions } from './ops/quant_activations.js';
export type { LoftqFormat, LoftqOptions, LoftqResult, PissaMethod, PissaOptions, PissaResult } from './ops/init.js';
export type {
  LowRankSvd, QrOptions, QrResult, SvdLowRankOptions, SvdOptions, SvdProductOptions, SvdResult, SvdValues,
} from './ops/linalg.js';
export type { LoraFactors } from './ops/lora_merge.js';
export type { FlashLoraArgs, FlashLoraBackwardArgs, FlashLoraGradients, FlashLoraResult } from './ops/flash_lora.js';
export type { CloseReport, RefTensor, Tolerance, ToleranceKey } from './reference/index.js';
export type { SafetensorsReadOptions, SafetensorsTensors } from './formats/safetensors.js';
export type { PeftAdapter, PeftLayer, PeftLoadOptions, PeftLoraConfig, PeftLoraConfigFields, PeftSaveArgs } from './formats/peft.js';

/** LoRA linear layers; `compress` / `merge`: adapters re-expressed at another rank (best in the Frobenius norm). */
export const lora = {
  forward, forwardAsync, backward, backwardAsync, forwardMulti, forwardMultiAsync, doraForward, doraForwardAsync, doraBackward,
  doraBackwardAsync, compress, merge,
};

/**
 * Batched float32 factorizations on every backend: `svd` (one-sided Jacobi) and `qr`
 * (Householder), and composed from them: `svdLowRank` (randomized) and `svdProduct` (of b·a).
 */
export const linalg = { svd, svdAsync, qr, qrAsync, svdLowRank, svdProduct };

/**
 * Flash-LoRA-Attention: flash attention over a shared base KV cache plus low-rank adapter caches
 * that are never expanded (`flashLora`, `flashLoraBackward`); `headDims` and `maxRank` say what
 * the kernels are compiled for.
 */
export const attention = {
  flashLora, flashLoraAsync, flashLoraBackward, flashLoraBackwardAsync, headDims: FLASH_LORA_HEAD_DIMS, maxRank: FLASH_LORA_MAX_RANK,
};

/**
 * Quantized base weights with a low-rank correction: NF4 (bitsandbytes' bytes) and 1.58-bit
 * ternary (BitNet b1.58), and the fused `quant.matmul` / `quant.matmulBackward` over them;
 * `quant.int8`: BitNet's per-token int8 activation quantizer (matmul's `activations: 'int8'`).
 */
export const quant = {
  nf4: { quantize: nf4Quantize, quantizeAsync: nf4QuantizeAsync, dequantize: nf4Dequantize, dequantizeAsync: nf4DequantizeAsync },
  ternary: {
    quantize: ternaryQuantize, quantizeAsync: ternaryQuantizeAsync, dequantize: ternaryDequantize,
    dequantizeAsync: ternaryDequantizeAsync, toI2S: ternaryToI2S, fromI2S: ternaryFromI2S,
  },
  int8: { quantize: int8Quantize, quantizeAsync: int8QuantizeAsync, dequantize: int8Dequantize, dequantizeAsync: int8DequantizeAsync },
  matmul, matmulAsync, matmulBackward, matmulBackwardAsync,
  to: quantizedTo,
  dispose: disposeQuantized,
};

/**
 * LoRA initialisations from the weight's SVD: `pissa(weight, { rank, … })` (PiSSA: principal part
 * as the adapter, residual as the base) and `loftq(weight, { rank, format, … })` (a quantized
 * weight's pair, LoftQ / LQ-LoRA).
 */
export const init = { pissa, loftq };

/** bitsandbytes 4-bit checkpoints: `loadNf4(tensors, prefix)`. */
export const bnb = { loadNf4 };

/** float64 references of every op and the tolerance table (`reference.assertClose`). */
export const reference = referenceOps;

/** safetensors files: `read` (bytes or a path), `write` (bytes), `writeFile`. */
export const safetensors = { read: safetensorsRead, write: safetensorsWrite, writeFile: safetensorsWriteFile };

/** PEFT LoRA adapter folders (adapter_config.json + adapter_model.safetensors). */
export const peft = { loadAdapter, saveAdapter };
