"""A calibration figure for every timing the project reports, so a reader can scale it to their machine.

    python benchmarks/calibrate.py

Prints the machine (CPU model, cores, GPU) and two measurements taken now: float32 1024x1024 matmul
GFLOPS with torch's threads, and the wall time of one forward+backward of the embedded tiny GPT-2 on a
fixed batch (32 sequences of 32 tokens); with a GPU, also its float32 and bfloat16 matmul TFLOPS. The
GFLOPS are the best of 5 runs (the machine's speed, not its load).
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line() -> str:
    try:
        import torch
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except Exception:  # report, don't fail
        gpu = "unknown GPU"
    return f"{_cpu_model()}, {os.cpu_count()} cores, {gpu}"


def _best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def calibration() -> dict:
    """matmul GFLOPS (float32, 1024x1024, best of 5 x 10) and tiny GPT-2 forward+backward seconds (best of 5)."""
    import torch

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    for _ in range(3):
        a @ b
    seconds = _best_of(lambda: [a @ b for _ in range(10)], 5)
    gflops = 2 * 1024 ** 3 * 10 / seconds / 1e9

    from alignlab import paths
    from alignlab.models import load_policy

    torch.manual_seed(0)
    model = load_policy(paths.TINY_POLICY_DIR, device="cpu")
    ids = torch.randint(0, model.config.vocab_size, (32, 32))

    def step():
        model.zero_grad(set_to_none=True)
        model(input_ids=ids).logits.float().logsumexp(-1).mean().backward()

    step()
    fwd_bwd = _best_of(step, 5)
    out = {"threads": torch.get_num_threads(), "matmul_gflops": round(gflops, 1),
           "tiny_gpt2_fwd_bwd_ms": round(fwd_bwd * 1000, 1)}
    if torch.cuda.is_available():
        out.update(gpu_calibration())
    return out


def gpu_calibration() -> dict:
    """float32 and bfloat16 4096x4096 matmul TFLOPS on the GPU (best of 5 x 10, synchronized)."""
    import torch

    result = {}
    for dtype, key in ((torch.float32, "gpu_fp32_tflops"), (torch.bfloat16, "gpu_bf16_tflops")):
        a = torch.randn(4096, 4096, device="cuda", dtype=dtype)
        b = torch.randn(4096, 4096, device="cuda", dtype=dtype)

        def run():
            for _ in range(10):
                a @ b
            torch.cuda.synchronize()

        run()
        result[key] = round(2 * 4096 ** 3 * 10 / _best_of(run, 5) / 1e12, 1)
    return result


if __name__ == "__main__":
    print(machine_line())
    print(json.dumps(calibration()))
