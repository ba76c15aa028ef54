// simt.h — the one header that CUDA kernel sources (cuda/*.cu, cuda/*.cuh) include instead of
// <cuda_runtime.h>. The same source then builds two ways:
//
//   nvcc            → the real CUDA headers; simt_launch() is a plain <<<grid, block, smem, stream>>>
//                     launch.
//   g++ / clang++   → csrc/simt/simt_emu.h: every CUDA thread runs as a fiber on the CPU, so the
//   (LK_CUDA_EMULATED) kernels can be tested on machines without a GPU (see csrc/simt/README.md).
//
// The kernel subset (checked in part by scripts/lint-cuda.mjs):
//   * launch only through simt_launch(kernel, grid, block, smem_bytes, stream, args...) — no <<< >>>;
//   * dynamic shared memory only through SIMT_DYNAMIC_SHARED(T, name) — no `extern __shared__`;
//   * no asm(): inline PTX lives in csrc/simt/simt_ptx.h (included here, in both builds), one
//     wrapper per instruction, each with an emulated twin: ptx::cp_async_16 / cp_async_commit /
//     cp_async_wait<N>, ptx::ldmatrix_x{1,2,4}[_trans], ptx::mma_m16n8k16_{bf16,f16},
//     ptx::mma_m16n8k8_tf32, ptx::cvt_rna_tf32;
//   * device-only code is guarded with SIMT_DEVICE_PATH / SIMT_CUDA_ARCH, never bare __CUDA_ARCH__
//     (under the emulator __CUDA_ARCH__ is undefined but the device path must still compile);
//   * all lanes named in a warp collective's mask reach the same collective; no grid-wide sync,
//     no inter-block spin waits, no dynamic parallelism, no TMA / wgmma / clusters;
//   * WMMA fragment element order is opaque: only element-wise ops on fragment.x[] are allowed.
#pragma once

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <utility>

#define SIMT_DYNAMIC_SHARED(T, name)                                   \
  extern __shared__ __align__(128) unsigned char name##_simt_bytes_[]; \
  T* name = reinterpret_cast<T*>(name##_simt_bytes_)

// One launch spelling for both builds. Errors surface through cudaGetLastError().
template <class... KArgs, class... Args>
inline void simt_launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem_bytes, cudaStream_t stream,
                        Args&&... args) {
  kernel<<<grid, block, smem_bytes, stream>>>(std::forward<Args>(args)...);
}

#if defined(__CUDA_ARCH__)
#define SIMT_CUDA_ARCH __CUDA_ARCH__
#else
#define SIMT_CUDA_ARCH 0  // host pass of nvcc: kernel bodies are not needed
#endif
#define simt_trap() __trap()  // GPU: the launch fails; emulator (simt_emu.h): ends this thread, sticky error

#else  // host compiler: the emulator
#include "simt_emu.h"
#endif

// Code that only makes sense on a device (GPU or emulated): kernel bodies, device helpers.
#if defined(__CUDA_ARCH__) || defined(SIMT_EMU)
#define SIMT_DEVICE_PATH 1
#endif

// cp.async, ldmatrix, mma.sync: inline PTX on nvcc, emulated under SIMT_EMU.
#include "simt_ptx.h"
