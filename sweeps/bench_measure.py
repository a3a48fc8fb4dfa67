"""Measuring tools of ``bench``: a device-synchronised stopwatch, FLOPs of a training step
from torch's flop counter, the peak of known GPUs, and the bench's speed options (the
generators' share is applied by ``generators.acceleration``, as in a sweep)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmark.config import BenchConfig
from generators.acceleration import Acceleration

# Dense bf16 tensor-core peaks in TFLOP/s from NVIDIA's datasheets (the "with sparsity"
# figures halved), matched against torch.cuda.get_device_name; more specific names first.
PEAK_BF16_TFLOPS = (
    ("H200 NVL", 835.0),
    ("H200", 989.4),
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.4),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that wall time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """``(seconds, fn())`` with the device synchronised before and after."""
    sync(device)
    started = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - started, out


def peak_flops(device: torch.device, override_tflops: float | None = None) -> float | None:
    """The device's dense bf16 peak in FLOP/s, or None when unknown (CPU, an unlisted GPU, a
    MIG slice, whose share of the chip the name does not say reliably)."""
    if override_tflops is not None:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    if "MIG" in name:
        return None
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in name:
            return tflops * 1e12
    return None


def step_flops(step: Callable[[], None]) -> int:
    """FLOPs that ``step`` (e.g. one forward and backward pass) executes, counted by
    ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions, attention: 2 per
    multiply-add; element-wise work is not counted, as is usual for MFU)."""
    # torch 2.4's module tracker prints a spurious "hierarchy tracking seems to be messed
    # up" line to stdout in backward (the totals are unaffected); `bench --json` owns stdout.
    with contextlib.redirect_stdout(io.StringIO()), FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


@dataclasses.dataclass(frozen=True)
class Speed:
    """The speed options in effect on this device (all off on CPU)."""

    bf16: bool  # autocast, as the project's loops do on CUDA
    channels_last: bool
    fused_adamw: bool
    compile: bool
    cuda_graphs: bool
    preload: bool

    @classmethod
    def resolve(cls, cfg: BenchConfig, device: torch.device) -> Speed:
        cuda = device.type == "cuda"
        return cls(
            bf16=cuda,
            channels_last=cfg.channels_last and cuda,
            fused_adamw=cfg.fused_adamw and cuda,
            compile=cfg.compile and cuda,
            cuda_graphs=cfg.cuda_graphs and cuda,
            preload=cfg.preload and cuda,
        )

    def as_dict(self, *names: str) -> dict[str, bool]:
        return {n: getattr(self, n) for n in names}

    def acceleration(self) -> Acceleration:
        """The generator loops' share of these options."""
        return Acceleration(
            channels_last=self.channels_last,
            compile=self.compile,
            cuda_graphs=self.cuda_graphs,
            preload=self.preload,
        )


def device_info(device: torch.device, cfg: BenchConfig) -> dict:
    peak = peak_flops(device, cfg.peak_tflops)
    return {
        "type": device.type,
        "name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "peak_bf16_tflops": None if peak is None else peak / 1e12,
    }
