"""``python -m benchmark bench``: each stage's throughput beside a plain reference loop.

One run measures, on the config's models at ``data.size`` on the built-in phantom
(``bench.patients`` patients, so no dataset is needed), after untimed warm-ups:

- ``generator_train``: images/s and MFU of ``train_denoiser`` and of a loop written like the
  diffusers unconditional training example (:mod:`sweeps.bench_generator`);
- ``sampling``: images/s of each sampler and step count beside a 50-step ``DDIMPipeline``,
  with each one's Fréchet distance in the echo encoder's features;
- ``downstream``: a seg cell's training images/s beside a plain loop, and K cells trained at
  once (``downstream.ensemble``, and K worker processes) beside one at a time
  (:mod:`sweeps.bench_downstream`);
- ``fidelity``: seconds of a synthetic set's fidelity figures;
- ``tracking``: seconds of logging one cell to MLflow, as a share of the cell's time.

Ratios are project / reference throughput (> 1: the project is faster).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from benchmark.config import Config, to_dict
from benchmark.data.phantom import make_phantom
from benchmark.data.records import EchoData
from benchmark.environment import environment
from benchmark.fidelity import (
    EchoEncoder,
    conditioning_accuracy,
    distribution_fidelity,
    features,
    train_encoder,
)
from benchmark.runtime import resolve_device, seed_everything
from downstream.classification import augmentation as encoder_augmentation
from generators import joint
from sweeps.bench_downstream import bench_downstream, bench_tracking
from sweeps.bench_generator import bench_generator_train, bench_sampling
from sweeps.bench_measure import Speed, device_info, peak_flops, timed

SECTIONS = ("generator_train", "sampling", "downstream", "fidelity", "tracking")


def bench_fidelity(
    cfg: Config, real: EchoData, encoder: EchoEncoder, encoder_seconds: float
) -> dict:
    """Seconds of what the fidelity stage computes for one synthetic set of
    ``bench.fidelity_images`` images (``sweeps.fidelity``: FD, KID, precision / recall against
    the real test split, the real-vs-real floor, conditioning accuracy). The set is phantom
    images of other patients: the cost does not depend on what the images show."""
    n = cfg.bench.fidelity_images
    synthetic = make_phantom(math.ceil(n / 4), cfg.data.size, seed=1)
    synthetic = synthetic.subset(np.arange(n))
    reference, floor = real.split("test").images, real.split("val").images
    k = cfg.fidelity.k

    def compute() -> dict:
        # As the stage does: each set encoded once, the synthetic one's features judged.
        real, fake = features(encoder, reference), features(encoder, synthetic.images)
        result = distribution_fidelity(
            encoder, reference, synthetic.images, k=k, real_features=real, synthetic_features=fake
        )
        floor_fd = distribution_fidelity(encoder, reference, floor, k=k, real_features=real)
        result["fd_floor"] = floor_fd["fd_echo"]
        result["cond_view_phase_acc"] = conditioning_accuracy(encoder, synthetic, fake)
        return result

    seconds, result = timed(compute, torch.device("cpu"))  # the stage computes on the CPU
    return {
        "images": n,
        "reference_images": len(reference),
        "seconds": seconds,
        "images_per_s": n / seconds,
        "encoder_steps": cfg.fidelity.encoder_steps,
        "encoder_seconds": encoder_seconds,  # once per dataset, not per synthetic set
        "fd": result["fd_echo"],
    }


def _summary(name: str, section: dict) -> str:
    """One human line per section, for progress and the plain-text output."""

    def f(x: Any) -> str:
        return "-" if x is None else f"{x:.3g}"

    if name == "generator_train":
        half = section.get("ratio_bf16")
        return (
            f"images/s project {f(section['project']['images_per_s'])} vs reference "
            f"{f(section['reference']['images_per_s'])} (x{f(section['ratio'])}"
            + (f"; bf16 reference x{f(half)}" if half is not None else "")
            + f"), {f(section['flops_per_image'] / 1e9)} GFLOP/image, "
            f"MFU {f(section['project']['mfu'])}"
        )
    if name == "sampling":
        parts = [
            f"{s['sampler']}:{s['steps']} x{f(s['ratio'])} fd {f(s['fd_ratio'])}x"
            for s in section["samplers"]
        ]
        ref = section["reference"]
        return f"reference {f(ref['images_per_s'])} images/s; " + ", ".join(parts)
    if name == "downstream":
        grid = section["grid"]
        return (
            f"images/s project {f(section['project']['images_per_s'])} vs reference "
            f"{f(section['reference']['images_per_s'])} (x{f(section['ratio'])}); "
            f"{grid['cells']} cells at once x{f(grid['ratio'])}"
            + (f", in processes x{f(grid['processes']['ratio'])}" if grid.get("processes") else "")
        )
    if name == "fidelity":
        return f"{f(section['seconds'])} s for {section['images']} images"
    return (
        f"{f(section['seconds_per_cell_log'])} s per cell, "
        f"{f(section['percent_of_cell'])} % of a cell"
    )


def measure(cfg: Config, progress: bool = False) -> dict[str, Any]:
    """Every section's figures (see the module docstring); JSON-safe."""
    device = resolve_device(cfg.device)
    seed_everything(0, device)
    speed = Speed.resolve(cfg.bench, device)
    peak = peak_flops(device, cfg.bench.peak_tflops)
    started = time.perf_counter()

    def section(name: str, fn: Callable[[], Any]) -> Any:
        if progress:
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        out = fn()
        if progress:
            figures = out[0] if isinstance(out, tuple) else out
            print(
                f"bench: {name} done in {time.perf_counter() - t0:.1f} s: "
                f"{_summary(name, figures)}",
                file=sys.stderr,
                flush=True,
            )
            # The section's figures as they come: a run stopped later still leaves them.
            print(f"bench: {name} = {json.dumps(figures)}", file=sys.stderr, flush=True)
        return out

    real = make_phantom(cfg.bench.patients, cfg.data.size, seed=0)
    train = real.split("train")
    x0 = joint.encode(train.images, train.masks if cfg.generator.joint_mask else None)
    # The install beside the figures: a speed is a fact of one torch / CUDA build and GPU.
    out: dict[str, Any] = {"device": device_info(device, cfg.bench), "environment": environment()}
    # The short sections first and sampling (compilation, graph capture, the 50-step
    # references) last: a run cut off by a time limit still leaves the others' figures.
    out["downstream"], fit_result = section(
        "downstream", lambda: bench_downstream(cfg, real, device, speed)
    )
    out["tracking"] = section("tracking", lambda: bench_tracking(cfg, real, fit_result, device))
    out["generator_train"], unet = section(
        "generator_train", lambda: bench_generator_train(cfg, x0, device, speed, peak)
    )
    encoder_seconds, encoder = timed(
        lambda: train_encoder(
            train, steps=cfg.fidelity.encoder_steps, augment=encoder_augmentation(cfg.data.size)
        ),
        torch.device("cpu"),
    )
    out["fidelity"] = section(
        "fidelity", lambda: bench_fidelity(cfg, real, encoder, encoder_seconds)
    )
    out["sampling"] = section(
        "sampling", lambda: bench_sampling(cfg, unet, encoder, real.images, device, speed)
    )
    out["config"] = {
        "name": cfg.name,
        "device": cfg.device,
        "data_size": cfg.data.size,
        "bench": to_dict(cfg.bench),
        "seconds": time.perf_counter() - started,
    }
    return out


def summary_lines(figures: dict[str, Any]) -> list[str]:
    """The plain-text report: the device, then one line per section."""
    dev = figures["device"]
    lines = [f"device: {dev['name']} ({dev['type']}, {dev['threads']} threads)"]
    lines += [f"{name}: {_summary(name, figures[name])}" for name in SECTIONS]
    return lines
