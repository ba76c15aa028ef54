"""Times PyTorch peers for the benchmarks in the same run as ours.

Reads a JSON list of tasks on stdin: {"id", "op", "dtype", "shape": {...}, "iterations"}; prints one
JSON object per task: {"id", "ms_median", "ms_min", "runs"}. Unknown ops are reported, not fatal.
Run by bench/peers.ts with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed from this process only.
"""
import json
import sys
import time

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def lora_tasks(shape, dtype):
    g = torch.Generator().manual_seed(0)
    m, k, n, r = shape["m"], shape["k"], shape["n"], shape["r"]
    x = torch.randn(m, k, generator=g, dtype=dtype)
    w = torch.randn(n, k, generator=g, dtype=dtype)
    a = torch.randn(r, k, generator=g, dtype=dtype)
    b = torch.randn(n, r, generator=g, dtype=dtype)
    s = 0.5
    magnitude = torch.rand(n, generator=g, dtype=dtype) + 0.5

    def dora_peft():
        # PEFT's DoRA forward: the row norm of W + s·B·A (detached), then (m / norm) ⊙ (base + LoRA).
        norm = torch.linalg.norm(w + s * (b @ a), dim=1)
        return (magnitude / norm) * (x @ w.T + s * ((x @ a.T) @ b.T))

    # LoRA backward with W frozen (requires_grad only on x, A, B): autograd's backward alone; the
    # forward that records the graph runs in .setup, outside the timer.
    xg, ag, bg = (t.clone().requires_grad_(True) for t in (x, a, b))
    gy = torch.randn(m, n, generator=g, dtype=dtype)
    graph = {}

    def record_forward():
        with torch.enable_grad():
            xg.grad = ag.grad = bg.grad = None
            graph["y"] = xg @ w.T + s * ((xg @ ag.T) @ bg.T)

    def lora_backward():
        graph["y"].backward(gy)

    lora_backward.setup = record_forward
    return {
        "lora_backward": lora_backward,
        "matmul": lambda: x @ w.T,
        "lora_unfused": lambda: x @ w.T + s * ((x @ a.T) @ b.T),
        "dora_peft": dora_peft,
    }


def time_fn(fn, iterations):
    setup = getattr(fn, "setup", lambda: None)  # untimed work before each call
    setup()
    fn()
    samples = []
    for _ in range(iterations):
        setup()
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    samples.sort()
    return samples[len(samples) // 2], samples[0], len(samples)


def main():
    tasks = json.load(sys.stdin)
    torch.set_grad_enabled(False)
    for task in tasks:
        fns = lora_tasks(task["shape"], DTYPES[task["dtype"]])
        fn = fns.get(task["op"])
        if fn is None:
            print(json.dumps({"id": task["id"], "error": "unknown op " + task["op"]}), flush=True)
            continue
        median, best, runs = time_fn(fn, task.get("iterations", 10))
        print(json.dumps({"id": task["id"], "ms_median": median, "ms_min": best, "runs": runs}), flush=True)
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
    main()
