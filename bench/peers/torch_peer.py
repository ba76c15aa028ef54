"""Times PyTorch peers for the benchmarks in the same run as ours, on the CPU or a CUDA GPU.

Reads a JSON list of tasks on stdin:
  {"id", "op", "dtype", "device": "cpu" | "cuda", "shape", "iterations", "allow_tf32"?, "ids"?,
   "scales"?, "timing"? (cuda: see time_cuda)}
with the shape {"m", "k", "n", "r", "adapters"?} for the LoRA ops, {"batch", "m", "n"} for the SVDs
(svd: torch.linalg.svd, svd_numpy: numpy.linalg.svd on the CPU), {"m", "n", "rank",
"oversample", "iters"} for svd_lowrank and {"b", "sq", "sk", "hq", "hk", "d", "r", "adapters",
"causal", "lora"} (+ "ids") for the attention ops (attention_naive, attention_sdpa: see
AttentionInputs).
Prints JSON lines, flushed one by one (bench/common.ts keeps what came when it stops a slow peer):
first the environment {"torch", "threads", "numpy" (null without it), "blas" (see blas_info), and on
cuda "cuda", "cublas", "gpu", "capability"},
then per task {"id", "ms_median", "ms_min", "runs"} plus, on cuda, {"event_ms", "batch"}.
A task that fails prints {"id", "error"} and the others go on. Exits with 3 when a cuda task
is asked of a torch that has no usable CUDA device.
Run by bench/common.ts (runTorchPeer) with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed from
this process only.
"""
import ctypes
import json
import math
import os
import re
import sys
import time

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SCALE = 0.5


def set_tf32(allowed):
    """TF32 for float32 matmuls: torch >= 2.9 has fp32_precision (allow_tf32 is deprecated there);
    older versions refuse the unknown name with an AssertionError."""
    try:
        torch.backends.cuda.matmul.fp32_precision = "tf32" if allowed else "ieee"
    except (AttributeError, AssertionError):
        torch.backends.cuda.matmul.allow_tf32 = allowed


def cublas_version():
    """torch has no API for the cuBLAS version: ask the libcublas it loaded (cublasGetProperty)."""
    try:
        ones = torch.ones(8, 8, device="cuda")
        (ones @ ones).sum().item()  # loads cuBLAS
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "libcublas.so" in line})
        lib = ctypes.CDLL(paths[0])
        parts = []
        for prop in (0, 1, 2):  # MAJOR_VERSION, MINOR_VERSION, PATCH_LEVEL
            value = ctypes.c_int()
            if lib.cublasGetProperty(prop, ctypes.byref(value)) != 0:
                return None
            parts.append(str(value.value))
        return ".".join(parts)
    except Exception:  # no /proc, a statically linked cuBLAS, an older library: the version stays unknown
        return None


def numpy_version():
    """numpy's version, or None where this python has no numpy (only svd_numpy needs it)."""
    try:
        import numpy
    except ImportError:
        return None
    return numpy.__version__


def blas_info():
    """Which BLAS the CPU peer really runs on, found from the libraries this process mapped after a
    matmul (Debian's libblas.so.3 is an alternative: OpenBLAS, BLIS or the reference BLAS), with
    OpenBLAS's own build string, and a 512³ float32 GEMM's GFLOP/s as the plain evidence: the
    reference BLAS runs it at ~6 GFLOP/s where OpenBLAS runs 90–200 on 2 Zen 4 cores, so every ratio
    to such a peer would flatter us ~80×. {"kind": "openblas" | "mkl" | "blis" | "atlas" |
    "reference" | "unknown", "libraries", "config" (OpenBLAS only), "gemm_gflops"}."""
    x = torch.rand(512, 512, generator=torch.Generator().manual_seed(0))
    (x @ x).sum().item()  # loads the BLAS
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if re.search(r"blas|mkl_|blis|atlas", line.split()[-1])})
    except OSError:  # no /proc: the GEMM speed alone tells
        paths = []
    # torch (and numpy) call the BLAS through libblas.so.3 where the process has one: Debian's
    # alternative, whose real path names the implementation. Another BLAS may be mapped beside it
    # (OpenBLAS's liblapack.so.3 pulls in libopenblas behind a reference libblas.so.3), so that one
    # decides; without it (pip wheels), whatever BLAS is mapped.
    blas_alternative = [p for p in paths if os.path.basename(p).startswith("libblas.so")]
    names = " ".join(blas_alternative or paths)
    kind = ("openblas" if "openblas" in names else "mkl" if "mkl_" in names else "blis" if "blis" in names
            else "atlas" if "atlas" in names else "reference" if "libblas.so" in names else "unknown")
    config = None
    for lib_path in (p for p in paths if kind == "openblas" and "openblas" in os.path.basename(p)):
        try:
            get_config = ctypes.CDLL(lib_path).openblas_get_config
            get_config.restype = ctypes.c_char_p
            config = get_config().decode()
            break
        except (OSError, AttributeError):
            continue
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        (x @ x).sum().item()
        runs.append(time.perf_counter() - start)
    return {"kind": kind, "libraries": paths, "config": config, "gemm_gflops": 2 * 512 ** 3 / min(runs) / 1e9}


def environment(use_cuda):
    env = {"torch": torch.__version__, "threads": torch.get_num_threads(), "numpy": numpy_version(), "blas": blas_info()}
    if use_cuda:
        env.update(
            cuda=torch.version.cuda,
            cublas=cublas_version(),
            gpu=torch.cuda.get_device_name(0),
            capability="%d.%d" % torch.cuda.get_device_capability(0),
        )
    return env


class Inputs:
    """A task's device, dtype, shape and a seeded generator for its operands."""

    def __init__(self, task):
        self.device = task.get("device", "cpu")
        self.dtype = DTYPES[task["dtype"]]
        self.shape = task["shape"]
        self.task = task
        self.generator = torch.Generator(device=self.device).manual_seed(0)

    def randn(self, *shape):
        return torch.randn(*shape, generator=self.generator, dtype=self.dtype, device=self.device)


class LoraInputs(Inputs):
    """The LoRA ops' operands: x [m, k], w [n, k], a [r, k], b [n, r]."""

    def __init__(self, task):
        super().__init__(task)
        m, k, n, r = (self.shape[d] for d in "mknr")
        self.x = self.randn(m, k)
        self.w = self.randn(n, k)
        self.a = self.randn(r, k)
        self.b = self.randn(n, r)


class MatrixInputs(Inputs):
    """The SVDs' operand: one m × n matrix (batch 1) or a batch of them [batch, m, n]."""

    def __init__(self, task):
        super().__init__(task)
        batch = self.shape.get("batch", 1)
        m, n = self.shape["m"], self.shape["n"]
        self.matrix = self.randn(m, n) if batch == 1 else self.randn(batch, m, n)


class AttentionInputs(Inputs):
    """Flash-LoRA-Attention's operands in our layout: q [b, sq, hq, d], the base caches k, v
    [b, sk, hk, d] and, when shape["lora"] is 1, the value path's low-rank cache vl [b, sk, r], the
    adapters' factors vb [adapters, hk, r, d] and each sequence's adapter (the task's "ids", the
    same as ours). causal (0/1) is bottom-right aligned like ours: key j is visible to query i iff
    j <= i + sk - sq; the scale is 1/sqrt(d)."""

    def __init__(self, task):
        super().__init__(task)
        s = self.shape
        b, sq, sk, hq, hk, d, r = (s[key] for key in ("b", "sq", "sk", "hq", "hk", "d", "r"))
        if hq % hk:
            raise ValueError("hq %d is not a multiple of hk %d" % (hq, hk))
        self.group = hq // hk
        self.causal = bool(s["causal"])
        self.q = self.randn(b, sq, hq, d)
        self.k = self.randn(b, sk, hk, d)
        self.v = self.randn(b, sk, hk, d)
        self.lora = bool(s.get("lora", 1)) and r > 0
        if self.lora:
            self.vl = self.randn(b, sk, r)
            self.vb = self.randn(s["adapters"], hk, r, d)
            self.ids = torch.tensor(task["ids"], dtype=torch.long, device=self.device)

    def expand_v(self):
        """Materialize each sequence's value cache: v = v_base + vl·vb[id], one baddbmm over the
        sequences ([b, sk, r] @ [b, r, hk·d] added to the base): b full V caches written."""
        if not self.lora:
            return self.v
        b, sk, hk, d = self.v.shape
        r = self.vl.shape[2]
        factors = self.vb[self.ids].permute(0, 2, 1, 3).reshape(b, r, hk * d)
        return torch.baddbmm(self.v.reshape(b, sk, hk * d), self.vl, factors).view(b, sk, hk, d)


def op_attention_naive(t):
    # Materialize-then-attend, the eager way (e.g. transformers' eager attention): expand V, repeat
    # the KV heads to the query heads (GQA), scores = q·kᵀ·scale [b, hq, sq, sk] materialized,
    # the causal mask, softmax, @ v.
    sq, sk, d = t.shape["sq"], t.shape["sk"], t.shape["d"]
    scale = 1.0 / math.sqrt(d)
    hidden = None
    if t.causal:
        rows = torch.arange(sq, device=t.device).unsqueeze(1)
        cols = torch.arange(sk, device=t.device).unsqueeze(0)
        hidden = cols > rows + (sk - sq)

    def naive():
        q, k, v = t.q.transpose(1, 2), t.k.transpose(1, 2), t.expand_v().transpose(1, 2)
        if t.group > 1:
            k, v = k.repeat_interleave(t.group, dim=1), v.repeat_interleave(t.group, dim=1)
        scores = (q @ k.transpose(-2, -1)) * scale
        if hidden is not None:
            scores = scores.masked_fill(hidden, float("-inf"))
        return torch.softmax(scores, dim=-1) @ v

    return naive


def op_attention_sdpa(t):
    # Expand V (when the task has the low-rank path), then torch's scaled_dot_product_attention;
    # on CUDA its flash backend only (math, memory-efficient and cuDNN turned off), on the CPU
    # torch's choice. GQA: enable_gqa where this torch and backend take it, else the KV heads
    # repeated to the query heads in the timed call.
    sdpa = getattr(torch.nn.functional, "scaled_dot_product_attention", None)
    if sdpa is None:
        raise RuntimeError("torch %s has no scaled_dot_product_attention (torch >= 2.0; LORA_KERNELS_PYTHON names another python)" % torch.__version__)
    sq, sk = t.shape["sq"], t.shape["sk"]
    if t.causal and sq != sk:
        raise ValueError("SDPA's is_causal is top-left aligned: causal needs sq == sk here")
    if t.device == "cuda":
        torch.backends.cuda.enable_flash_sdp(True)
        for name in ("enable_math_sdp", "enable_mem_efficient_sdp", "enable_cudnn_sdp"):
            if hasattr(torch.backends.cuda, name):
                getattr(torch.backends.cuda, name)(False)
    gqa = {}
    if t.group > 1:
        try:
            small = lambda x: x[:1, :1].transpose(1, 2)
            sdpa(small(t.q), small(t.k), small(t.v), enable_gqa=True)
            gqa = {"enable_gqa": True}
        except (TypeError, RuntimeError):  # torch < 2.5, or a backend without it
            gqa = None

    def attend():
        q, k, v = t.q.transpose(1, 2), t.k.transpose(1, 2), t.expand_v().transpose(1, 2)
        if gqa is None:
            k, v = k.repeat_interleave(t.group, dim=1), v.repeat_interleave(t.group, dim=1)
        return sdpa(q, k, v, is_causal=t.causal, **(gqa or {}))

    return attend


def op_matmul(t):
    return lambda: t.x @ t.w.T


def op_lora_unfused(t):
    return lambda: t.x @ t.w.T + SCALE * ((t.x @ t.a.T) @ t.b.T)


def op_dora_peft(t):
    # PEFT's DoRA forward: the row norm of W + s·B·A (detached), then (m / norm) ⊙ (base + LoRA).
    magnitude = torch.rand(t.w.shape[0], generator=t.generator, dtype=t.dtype, device=t.device) + 0.5

    def dora_peft():
        norm = torch.linalg.norm(t.w + SCALE * (t.b @ t.a), dim=1)
        return (magnitude / norm) * (t.x @ t.w.T + SCALE * ((t.x @ t.a.T) @ t.b.T))

    return dora_peft


def op_lora_backward(t):
    # LoRA backward with W frozen (requires_grad only on x, A, B): autograd's backward alone, i.e.
    # gradInput = g·W + (s·g·B)·A, gradA, gradB. The forward records the graph once, outside the
    # timer; retain_graph lets every timed call run the same backward, and autograd.grad returns
    # the gradients instead of accumulating them into .grad.
    xg, ag, bg = (v.clone().requires_grad_(True) for v in (t.x, t.a, t.b))
    with torch.enable_grad():
        y = xg @ t.w.T + SCALE * ((xg @ ag.T) @ bg.T)
    gy = t.randn(*y.shape)
    return lambda: torch.autograd.grad(y, (xg, ag, bg), gy, retain_graph=True)


def op_multi_gather_bmm(t):
    # Many adapters the plain-torch way: gather each row's A and B (A[ids]: [m, r, k], B[ids]:
    # [m, n, r]), two bmm, the per-row scale, plus the shared base GEMM. The ids and scales come
    # from the task: the same rows as ours.
    adapters, r, k, n = t.shape["adapters"], t.shape["r"], t.shape["k"], t.shape["n"]
    a = t.randn(adapters, r, k)
    b = t.randn(adapters, n, r)
    ids = torch.tensor(t.task["ids"], dtype=torch.long, device=t.device)
    row_scales = torch.tensor(t.task["scales"], dtype=t.dtype, device=t.device)[ids].unsqueeze(1)

    def gather_bmm():
        low = torch.bmm(t.x.unsqueeze(1), a[ids].transpose(1, 2))  # [m, 1, r]
        up = torch.bmm(low, b[ids].transpose(1, 2)).squeeze(1)  # [m, n]
        return t.x @ t.w.T + row_scales * up

    return gather_bmm


def op_svd(t):
    # The economy SVD with U and Vh, LAPACK's gesdd on the CPU, cuSOLVER on the GPU.
    return lambda: torch.linalg.svd(t.matrix, full_matrices=False)


def op_svd_numpy(t):
    # numpy's economy SVD (LAPACK gesdd per matrix, float32 in and out) on a copy of the same matrix.
    import numpy

    if t.device != "cpu":
        raise ValueError("numpy runs on the CPU only")
    matrix = t.matrix.numpy()
    return lambda: numpy.linalg.svd(matrix, full_matrices=False)


def op_svd_lowrank(t):
    # torch.svd_lowrank(A, q, niter): a Gaussian sketch of q columns, niter power iterations each
    # re-orthonormalized by QR, the SVD of Qᴴ·A; it returns all q triplets. q = rank + oversample
    # is the sketch width of our linalg.svdLowRank (which then keeps the leading rank).
    q = t.shape["rank"] + t.shape["oversample"]
    return lambda: torch.svd_lowrank(t.matrix, q=q, niter=t.shape["iters"])


# Each op: the operands it is built on and the builder of the timed call.
OPS = {
    "matmul": (LoraInputs, op_matmul),
    "lora_unfused": (LoraInputs, op_lora_unfused),
    "dora_peft": (LoraInputs, op_dora_peft),
    "lora_backward": (LoraInputs, op_lora_backward),
    "multi_gather_bmm": (LoraInputs, op_multi_gather_bmm),
    "svd": (MatrixInputs, op_svd),
    "svd_numpy": (MatrixInputs, op_svd_numpy),
    "svd_lowrank": (MatrixInputs, op_svd_lowrank),
    "attention_naive": (AttentionInputs, op_attention_naive),
    "attention_sdpa": (AttentionInputs, op_attention_sdpa),
}


def time_cpu(fn, iterations):
    fn()
    samples = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    samples.sort()
    return {"ms_median": samples[len(samples) // 2], "ms_min": samples[0], "runs": len(samples)}


def time_cuda(fn, timing):
    """The protocol of bench/common.ts timeGpu, with the plan it sends: warm-up calls; wall time
    per call with torch.cuda.synchronize() (at least `iterations` samples and `min_time_ms`);
    then CUDA events around `batch` back-to-back calls (enough for `event_batch_ms` at the wall
    median, within [min_batch, max_batch]), `event_repeats` times: the median per call."""
    for _ in range(timing["warmup"]):
        fn()
    torch.cuda.synchronize()
    samples = []
    started = time.perf_counter()
    while len(samples) < timing["iterations"] or (time.perf_counter() - started) * 1e3 < timing["min_time_ms"]:
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        samples.append((time.perf_counter() - t0) * 1e3)
    samples.sort()
    wall = samples[len(samples) // 2]
    batch = min(timing["max_batch"], max(timing["min_batch"], math.ceil(timing["event_batch_ms"] / wall)))
    per_call = []
    for _ in range(timing["event_repeats"]):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(batch):
            fn()
        stop.record()
        stop.synchronize()
        per_call.append(start.elapsed_time(stop) / batch)
    per_call.sort()
    return {"ms_median": wall, "ms_min": samples[0], "runs": len(samples), "event_ms": per_call[len(per_call) // 2], "batch": batch}


def run_task(task):
    if task["op"] not in OPS:
        raise ValueError("unknown op " + task["op"])
    inputs, build = OPS[task["op"]]
    if task.get("device", "cpu") == "cpu":
        return time_cpu(build(inputs(task)), task.get("iterations", 10))
    set_tf32(task.get("allow_tf32", False))
    try:
        return time_cuda(build(inputs(task)), task["timing"])
    finally:
        torch.cuda.empty_cache()  # the next task's operands may be larger


def main():
    tasks = json.load(sys.stdin)
    torch.set_grad_enabled(False)
    use_cuda = any(task.get("device", "cpu") == "cuda" for task in tasks)
    if use_cuda and not torch.cuda.is_available():
        print("torch %s has no usable CUDA device (torch.version.cuda = %s)" % (torch.__version__, torch.version.cuda), file=sys.stderr)
        sys.exit(3)
    print(json.dumps(environment(use_cuda)), flush=True)  # first, so a peer stopped later still names itself
    for task in tasks:
        try:
            result = run_task(task)
        except Exception as error:  # e.g. out of memory: report it, time the others
            print(json.dumps({"id": task["id"], "error": "%s: %s" % (type(error).__name__, error)}), flush=True)
            continue
        print(json.dumps({"id": task["id"], **result}), flush=True)


if __name__ == "__main__":
    main()
