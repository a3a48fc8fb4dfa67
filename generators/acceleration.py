"""Speed options of the generators' training and sampling loops, for CUDA only.

A small UNet at 128 px runs many short kernels per step, so on a GPU its time goes to
launches and host-device traffic rather than arithmetic. The options here attack that:
NHWC memory format (``channels_last``, tensor-core friendly convolutions), ``torch.compile``
(fused kernels), CUDA-graph replay of each sampling denoiser call, and the training tensors
held on the device (``preload``). On any other device every option is off, so CPU runs take
the plain, deterministic path. ``sweeps.bench_generator`` measures these paths against the
diffusers examples' loops; the sweep's generators run the same ones.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from benchmark.config import GeneratorConfig


@dataclasses.dataclass(frozen=True)
class Acceleration:
    """Which speed options are in effect (the default: none)."""

    channels_last: bool = False
    compile: bool = False
    cuda_graphs: bool = False
    preload: bool = False

    @classmethod
    def resolve(cls, cfg: GeneratorConfig, device: torch.device) -> Acceleration:
        """The config's options where ``device`` is CUDA; none elsewhere."""
        cuda = device.type == "cuda"
        return cls(
            channels_last=cfg.channels_last and cuda,
            compile=cfg.compile and cuda,
            cuda_graphs=cfg.cuda_graphs and cuda,
            preload=cfg.preload and cuda,
        )

    def training_model(self, unet: nn.Module) -> nn.Module:
        """``unet`` in NHWC and compiled, as the options say (the same parameters)."""
        if self.channels_last:
            unet = unet.to(memory_format=torch.channels_last)
        if self.compile:
            unet = torch.compile(unet)
        return unet

    def sampling_model(self, unet: nn.Module) -> nn.Module:
        """:meth:`training_model`, then CUDA-graph replay of each call if enabled."""
        unet = self.training_model(unet)
        return GraphedDenoiser(unet) if self.cuda_graphs else unet

    def place(self, tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
        """``tensor`` on ``device`` when preloading, else where it is."""
        return tensor.to(device) if self.preload else tensor


def restore_layout(module: nn.Module) -> nn.Module:
    """``module``'s weights back in the default (NCHW) layout: safetensors saves contiguous
    tensors only."""
    return module.to(memory_format=torch.contiguous_format)


class GraphedDenoiser(nn.Module):
    """``unet(sample, t, **kwargs)`` replayed from a captured CUDA graph.

    A denoiser call of a small UNet is many short kernels whose launch costs more than their
    work; a graph launches them all at once. One graph is captured per input shape (the last
    batch of a set may be smaller; guidance's empty prompts are shorter); inputs are copied
    into its static buffers and the output is cloned out. The caller's autocast state is
    captured with the graph (with the autocast cache off, which graph capture requires).
    Output: an object with ``.sample`` ``(B, C, H, W)``, like diffusers' ``UNet2DOutput``.
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
