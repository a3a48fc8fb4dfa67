"""``python -m benchmark bench``: how fast this machine runs each stage of a config.

Figures are measured on the config's own models and image size with real phantom data,
after a warm-up, so they project the time of a sweep: generator training and sampling
images/s (and the training step's FLOPs from torch's flop counter), downstream training
images/s, and the MLflow cost of logging one cell.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmark.config import Config
from benchmark.data.phantom import make_phantom
from benchmark.runtime import resolve_device, seed_everything
from benchmark.tracking import Tracker
from downstream.registry import build_model, build_task
from downstream.training import fit
from generators import diffusion, joint


def _timed(fn, repeat: int = 1) -> float:
    fn()  # warm-up: first calls allocate and pick kernels
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - started) / repeat


def measure(cfg: Config, progress: bool = False, steps: int = 5) -> dict[str, dict]:
    device = resolve_device(cfg.device)
    seed_everything(0, device)
    n_patients = max(4, -(-cfg.generator.batch_size // 4))
    data = make_phantom(n_patients, cfg.data.size, seed=0)
    x0 = joint.encode(data.images, data.masks if cfg.generator.joint_mask else None)
    x0 = x0[: cfg.generator.batch_size]
    unet = diffusion.build_unet(cfg.generator, cfg.data.size, x0.shape[1], None)

    def batches(_gen):
        while True:
            yield x0, {}

    gen_cfg = dataclasses.replace(cfg.generator, train_steps=steps)
    seconds = _timed(lambda: diffusion.train_denoiser(unet, batches, gen_cfg, device, 0, False))
    with FlopCounterMode(display=False) as counter:
        t = torch.zeros(len(x0), dtype=torch.long)
        unet.to("cpu")(x0, t).sample.sum().backward()
    step_flops = counter.get_total_flops()
    train_ips = len(x0) * steps / seconds

    scheduler = diffusion.sampling_scheduler(
        diffusion.training_scheduler(cfg.generator), cfg.generator.sampler
    )
    n_sample = min(cfg.generator.sample_batch_size, 16)
    shape = tuple(x0.shape[1:])
    sample_seconds = _timed(
        lambda: diffusion.sample(
            unet,
            scheduler,
            n_sample,
            shape,
            cfg.generator.sample_steps,
            n_sample,
            0,
            device,
            progress=False,
        )
    )

    task, _ = build_task(cfg.grid.tasks[0], cfg.downstream, cfg.grid.prompts[0].level)
    train_cfg = dataclasses.replace(cfg.downstream.train, epochs=1)
    model = build_model(cfg.grid.tasks[0], cfg.downstream, cfg.data.size)
    ds_seconds = _timed(lambda: fit(model, task, data, data, train_cfg, device, 0, progress=False))

    with tempfile.TemporaryDirectory() as tmp:
        tracker = Tracker(
            f"sqlite:///{Path(tmp) / 'mlflow.db'}", "bench", (Path(tmp) / "art").as_uri()
        )
        curves = {
            "train/loss": list(np.linspace(1, 0, 100)),
            "val/dice": list(np.linspace(0, 1, 100)),
        }

        def log_cell() -> None:
            run = tracker.start_run("bench", {"kind": "cell"})
            tracker.log_params(run, {"a": {str(i): i for i in range(60)}})
            tracker.log_curves(run, curves)
            tracker.end_run(run)

        log_seconds = _timed(log_cell, repeat=3)
    return {
        "device": {"name": str(device), "threads": torch.get_num_threads()},
        "generator_train": {
            "images_per_s": round(train_ips, 2),
            "step_gflops": round(step_flops / 1e9, 3),
            "achieved_gflops_per_s": round(step_flops * steps / seconds / 1e9, 2),
        },
        "sampling": {
            "sampler": cfg.generator.sampler,
            "steps": cfg.generator.sample_steps,
            "images_per_s": round(n_sample / sample_seconds, 2),
        },
        "downstream": {
            "task": cfg.grid.tasks[0].value,
            "images_per_s": round(len(data) / ds_seconds, 2),
        },
        "tracking": {"seconds_per_cell_log": round(log_seconds, 3)},
    }
