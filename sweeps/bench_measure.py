"""Measuring tools of ``bench``: a device-synchronised stopwatch, FLOPs of a training step
from torch's flop counter, the peak of known GPUs, and the speed options of the project's
paths (channels_last, torch.compile, CUDA-graph replay for sampling)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmark.config import BenchConfig

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
    with FlopCounterMode(display=False) as counter:
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


def prepare_unet(unet: nn.Module, speed: Speed) -> nn.Module:
    """The UNet in NHWC memory format and compiled, as the options say (same parameters)."""
    if speed.channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    if speed.compile:
        unet = torch.compile(unet)
    return unet


class GraphedDenoiser(nn.Module):
    """``unet(sample, t, **kwargs)`` replayed from a captured CUDA graph.

    A denoiser call of a small UNet is many short kernels whose launch costs more than their
    work; a graph launches them all at once. One graph is captured per input shape (the last
    batch of a set may be smaller); inputs are copied into its static buffers and the output
    is cloned out. The caller's autocast state is captured with the graph (with the autocast
    cache off, which graph capture requires). Output: an object with ``.sample``
    ``(B, C, H, W)``, like diffusers' ``UNet2DOutput``.
    """

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet
        self._graphs: dict[tuple, tuple] = {}

    def forward(self, sample: torch.Tensor, timestep: Any, **kwargs: torch.Tensor):
        if sample.device.type != "cuda":
            raise RuntimeError("GraphedDenoiser needs CUDA tensors")
        key = (tuple(sample.shape), sample.dtype) + tuple(
            (k, tuple(v.shape), v.dtype) for k, v in sorted(kwargs.items())
        )
        if key not in self._graphs:
            self._graphs[key] = self._capture(sample, kwargs)
        graph, static_x, static_t, static_kw, static_out = self._graphs[key]
        static_x.copy_(sample)
        # fill_ with a Python number launches a kernel; copying a CPU tensor would block.
        static_t.fill_(int(timestep))
        for k, v in kwargs.items():
            static_kw[k].copy_(v)
        graph.replay()
        return SimpleNamespace(sample=static_out.clone())

    def _capture(self, sample: torch.Tensor, kwargs: dict[str, torch.Tensor]) -> tuple:
        static_x = sample.clone()
        static_t = torch.zeros((), dtype=torch.long, device=sample.device)
        static_kw = {k: v.clone() for k, v in kwargs.items()}
        autocast = dict(
            device_type="cuda",
            dtype=torch.get_autocast_dtype("cuda"),
            enabled=torch.is_autocast_enabled("cuda"),
            cache_enabled=False,
        )
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.autocast(**autocast):
            for _ in range(3):  # warm-up: library handles, workspaces, autotuning
                self.unet(static_x, static_t, **static_kw)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.autocast(**autocast):
            static_out = self.unet(static_x, static_t, **static_kw).sample
        return graph, static_x, static_t, static_kw, static_out


def prepare_denoiser(unet: nn.Module, speed: Speed) -> nn.Module:
    """The sampling denoiser: :func:`prepare_unet`, then CUDA-graph replay if enabled."""
    unet = prepare_unet(unet, speed)
    return GraphedDenoiser(unet) if speed.cuda_graphs else unet


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
