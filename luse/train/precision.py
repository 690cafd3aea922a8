"""Numeric precision and CPU threads for a training process.

bf16 autocast pays only where the hardware multiplies bf16 natively; elsewhere it is emulated and
slower than fp32 (measured speed-ups: ``benchmarks/results/throughput.md``). Weights and optimizer
stay fp32 either way.
"""

from __future__ import annotations

import os

import torch

# CPU flags of native bf16 matrix units: AVX512-BF16 (Intel Cooper Lake+, AMD Zen 4+) and AMX.
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware. Reads the Linux CPU flags; False where
    they cannot be read."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as stream:
            for line in stream:
                if line.startswith("flags"):
                    return any(flag in line.split() for flag in NATIVE_BF16_CPU_FLAGS)
    except OSError:
        pass
    return False


def resolve_mixed_precision(setting: str, device: str | None = None) -> str:
    """``auto``: bf16 autocast where the hardware does bf16 natively (CUDA GPUs that support it, CPUs
    with AVX512-BF16 or AMX), else fp32 (``no``); any other setting as it is.
    ``device`` ("cpu", "cuda", "cuda:N"): the one training runs on; None: CUDA when there, as the
    trainer's accelerator chooses."""
    if setting != "auto":
        return setting
    cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if cuda:
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if cpu_has_native_bf16() else "no"


def cpu_threads(requested: int = 0) -> int:
    """Threads for this process: ``requested``, or the usable cores shared among the local processes.

    ``accelerate launch`` sets OMP_NUM_THREADS=1 unless told otherwise (it counts physical cores,
    often 1 on a VM), which leaves half of a 2-core machine idle.
    """
    if requested > 0:
        return requested
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    return max(1, cores // max(local, 1))
