"""``bench`` for the downstream side: a cell's training images/s beside a plain reference
loop, the grid's throughput with K cells trained at once beside one at a time, and the
MLflow cost of logging one cell.

The reference loop is the one a PyTorch tutorial writes: a ``torch.utils.data.DataLoader``
over the same images and label maps with the same augmentation as MONAI's per-sample
dictionary transforms (the project draws the same distributions but applies them per
batch, ``downstream.augment``), one model, eager float32, plain AdamW
with the same cosine schedule, and the task's own loss and validation once per epoch, so
both loops do the same work per image. The project's paths are
:func:`downstream.training.fit` (what a cell runs), and for K cells at once
:func:`downstream.ensemble.fit_ensemble` (one batched ensemble) and
:func:`sweeps.bench_processes.train_in_processes` (K worker processes, as
``sweep.workers`` runs cells).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from monai.data import Dataset
from monai.transforms import Compose, RandAdjustContrastd, RandAffined, RandScaleIntensityd

from benchmark.config import Config, TrackingConfig, dump_config
from benchmark.data.records import EchoData
from benchmark.downstream_config import TrainConfig
from benchmark.grid import GridCell, Mode, Protocol
from benchmark.metrics import convergence
from benchmark.stages import Stage
from downstream import segmentation
from downstream.ensemble import fit_ensemble
from downstream.registry import build_task
from downstream.training import FitResult, fit
from sweeps.bench_measure import Speed, timed
from sweeps.bench_processes import TASK, CellRun, cell_model, train_in_processes
from sweeps.cell import PER_PATIENT, log_cell
from sweeps.workspace import Workspace

OPTIONS = ("bf16", "channels_last", "fused_adamw")


def reference_augmentation(size: int) -> Compose:
    """The project's seg augmentation (``segmentation.augmentation``) as a tutorial writes
    it: MONAI dictionary transforms, one sample at a time, in the data loader."""
    return Compose(
        [
            RandAffined(
                keys=("image", "label"),
                prob=0.8,
                rotate_range=np.deg2rad(10),
                translate_range=(0.1 * size, 0.1 * size),  # MONAI wants pixels
                scale_range=0.1,
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
            ),
            RandScaleIntensityd(keys="image", factors=0.3, prob=0.5),
            RandAdjustContrastd(keys="image", gamma=(0.7, 1.5), prob=0.5),
        ]
    )


def reference_fit(
    model: torch.nn.Module,
    task: segmentation.SegmentationTask,
    train: EchoData,
    val: EchoData,
    cfg: TrainConfig,
    device: torch.device,
    seed: int,
) -> list[float]:
    """Train ``model`` for ``cfg.epochs`` epochs the plain way; the validation scores."""
    items = [
        {"image": img[None].astype(np.float32), "label": msk[None].astype(np.float32)}
        for img, msk in zip(train.images, train.masks)
    ]
    transform = reference_augmentation(train.images.shape[-1]) if task.augment else None
    if transform is not None:
        transform.set_random_state(seed=seed)
    loader = torch.utils.data.DataLoader(
        Dataset(items, transform=transform),
        batch_size=cfg.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    scores = []
    for _ in range(cfg.epochs):
        model.train()
        for batch in loader:
            logits = model(batch["image"].to(device).float())
            loss = task.criterion(logits, batch["label"].to(device).float())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss.item()  # logged every step
        schedule.step()
        scores.append(task.validate(model, val, device))
    return scores


def bench_downstream(
    cfg: Config, data: EchoData, device: torch.device, speed: Speed
) -> tuple[dict, FitResult]:
    """Images/s of a seg cell's training (project vs reference) and of K cells at once (the
    ensemble, and with ``bench.processes`` K worker processes, vs ``fit`` one after
    another); also returns the project's :class:`FitResult` for the tracking bench."""
    bench = cfg.bench
    train, val = data.split("train"), data.split("val")
    task, model_name = build_task(TASK, cfg.downstream)
    # Every epoch runs (no early stop) and is one pass over the data, with the reference's
    # AdamW and cosine schedule, so both sides do the same work. The default bf16 path on
    # CUDA, whatever the task's precision says.
    train_cfg = dataclasses.replace(
        cfg.downstream.train_for(TASK),
        epochs=bench.downstream_epochs,
        patience=bench.downstream_epochs + 1,
        steps_per_epoch=0,
        precision="bf16",
        optimizer="adamw",
        nesterov=False,
        scheduler="cosine",
    )
    warm_cfg = dataclasses.replace(train_cfg, epochs=1, patience=2)
    warm_train = train.subset(np.arange(min(len(train), 2 * train_cfg.batch_size)))
    fast = {"channels_last": speed.channels_last, "fused": speed.fused_adamw}
    images = len(train) * train_cfg.epochs

    def project(seed: int, run_cfg: TrainConfig = train_cfg, run_train: EchoData = train):
        model = cell_model(cfg, seed)
        return fit(model, task, run_train, val, run_cfg, device, seed, progress=False, **fast)

    def ensemble(seeds: list[int], run_cfg: TrainConfig = train_cfg, run_train: EchoData = train):
        return fit_ensemble(
            [cell_model(cfg, s) for s in seeds],
            task,
            [run_train] * len(seeds),
            [val] * len(seeds),
            run_cfg,
            device,
            seeds,
            progress=False,
            fused=speed.fused_adamw,
        )

    # The grid: K cells of one size (here K seeds of one cell), one at a time and at once.
    seeds = list(range(bench.ensemble_members))
    # Warm-ups (kernel selection, allocator) on a few batches, untimed.
    project(0, warm_cfg, warm_train)
    reference_fit(cell_model(cfg, 0), task, warm_train, val, warm_cfg, device, 0)
    ensemble(seeds, warm_cfg, warm_train)

    ref_seconds, _ = timed(
        lambda: reference_fit(cell_model(cfg, 0), task, train, val, train_cfg, device, 0), device
    )
    seconds, result = timed(lambda: project(0), device)
    seq_seconds, sequential = timed(lambda: [project(s) for s in seeds], device)
    ens_seconds, concurrent = timed(lambda: ensemble(seeds), device)
    score_diff = max(
        abs(a - b) for s, e in zip(sequential, concurrent) for a, b in zip(s.val_score, e.val_score)
    )
    processes = None
    if bench.processes:
        run = CellRun(cfg, train, val, train_cfg, warm_train, warm_cfg, str(device), **fast)
        procs = train_in_processes(run, seeds)
        process_diff = max(
            abs(a - b)
            for s, scores in zip(sequential, procs["val_scores"])
            for a, b in zip(s.val_score, scores)
        )
        processes = {
            "seconds": procs["seconds"],
            "images_per_s": len(seeds) * images / procs["seconds"],
            "method": "one fit per process (torch.multiprocessing spawn), as sweep.workers",
            "threads_per_worker": procs["threads_per_worker"],
            "ratio": seq_seconds / procs["seconds"],
            "max_val_score_diff": process_diff,
        }
    out = {
        "task": TASK.value,
        "model": model_name,
        "train_images": len(train),
        "epochs": train_cfg.epochs,
        "batch_size": train_cfg.batch_size,
        "reference": {
            "seconds": ref_seconds,
            "images_per_s": images / ref_seconds,
            "options": {"loader": "torch DataLoader", "bf16": False},
        },
        "project": {
            "seconds": seconds,
            "images_per_s": images / seconds,
            "options": speed.as_dict(*OPTIONS),
        },
        "ratio": ref_seconds / seconds,
        "grid": {
            "cells": len(seeds),
            "sequential": {
                "seconds": seq_seconds,
                "images_per_s": len(seeds) * images / seq_seconds,
            },
            "concurrent": {
                "seconds": ens_seconds,
                "images_per_s": len(seeds) * images / ens_seconds,
                "method": "downstream.ensemble: torch.func stack_module_state + vmap",
                "options": speed.as_dict("bf16", "fused_adamw"),
            },
            "ratio": seq_seconds / ens_seconds,
            "max_val_score_diff": score_diff,
            # null without bench.processes
            "processes": processes,
        },
    }
    return out, result


def bench_tracking(cfg: Config, data: EchoData, result: FitResult, device: torch.device) -> dict:
    """Seconds that ``sweeps.cell.log_cell`` takes for one cell on a fresh SQLite store, as a
    share of the cell's training time.

    The logged folder holds what a cell stage holds (metrics, curves, per-sample and
    per-patient tables, resolved config) from the downstream bench's trained model; each
    repeat logs another cell from a stage folder of its own (logging is idempotent per stage:
    one folder repeated would time the lookup that finds it logged). The share is of a cell
    that trains the seg task's configured epochs at the measured seconds per epoch, and of
    the shortest cell early stopping allows (``patience`` epochs after the first): what a
    real cell's share lies between.
    """
    bench = cfg.bench
    task, model_name = build_task(TASK, cfg.downstream)
    tested = task.evaluate(result.model, data.split("test"), device)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tracked = dataclasses.replace(
            cfg, tracking=TrackingConfig(uri=f"sqlite:///{tmp / 'mlflow.db'}", experiment="bench")
        )
        ws = Workspace(tracked, tmp / "out", progress=False)
        ws.tracker  # noqa: B018 -- creates the store and experiment once, as a sweep does
        folder = tmp / "cell"
        folder.mkdir()
        conv = convergence(result.val_score, result.epoch_seconds, len(result.val_score))
        summary = {
            "model": model_name,
            "primary_metric": task.primary_metric,
            "test": tested.metrics,
            **conv,
            "best_epoch": result.best_epoch,
            "train_seconds": sum(result.epoch_seconds),
        }
        curves = {"train/loss": result.train_loss, f"val/{task.primary_metric}": result.val_score}
        (folder / "metrics.json").write_text(json.dumps(summary))
        (folder / "curves.json").write_text(json.dumps(curves))
        tested.per_sample.to_csv(folder / "per_sample.csv", index=False)
        if tested.per_patient is not None:
            tested.per_patient.to_csv(folder / PER_PATIENT, index=False)
        (folder / "config.yaml").write_text(dump_config(cfg))
        seconds, runs = [], set()
        for seed in range(bench.tracking_repeats):
            own = shutil.copytree(folder, tmp / f"cell-{seed}")
            stage = Stage(path=own, kind="cells", digest=f"bench-{seed}", done={}, computed=True)
            cell = GridCell(TASK, Mode.NONE, None, 0.0, Protocol.MIX, 1.0, seed)
            elapsed, run_id = timed(
                lambda cell=cell, stage=stage: log_cell(ws, cell, stage, None), device
            )
            if run_id is None:  # log_cell leaves an unreachable store to a later sync
                raise RuntimeError(f"tracking bench: could not log to {ws.tracking_uri}")
            seconds.append(elapsed)
            runs.add(run_id)
    per_epoch = float(np.mean(result.epoch_seconds))
    train = cfg.downstream.train_for(TASK)
    cell_epochs = train.epochs
    shortest_epochs = min(train.epochs, train.patience + 1)
    cell_seconds = per_epoch * cell_epochs
    mean = float(np.mean(seconds))
    return {
        "store": "sqlite",
        "cells_logged": len(seconds),
        "runs_logged": len(runs),  # one per cell: each repeat logged, none found logged
        "seconds_per_cell_log": mean,
        "max_seconds_per_cell_log": max(seconds),
        "cell_epochs": cell_epochs,
        "cell_seconds": cell_seconds,
        "percent_of_cell": 100 * mean / cell_seconds,
        "shortest_cell_epochs": shortest_epochs,
        "percent_of_shortest_cell": 100 * mean / (per_epoch * shortest_epochs),
        "percent_of_bench_cell": 100 * mean / sum(result.epoch_seconds),
    }
