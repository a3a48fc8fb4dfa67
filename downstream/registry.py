"""Task -> (task object, fresh model). New downstream tasks register here."""

from __future__ import annotations

import torch

from benchmark.config import DownstreamConfig
from benchmark.grid import Task
from downstream import segmentation

IMPLEMENTED = (Task.SEG,)


def build_task(task: Task, cfg: DownstreamConfig) -> tuple[segmentation.SegmentationTask, str]:
    """The task object and the name of its model (logged as the ``model`` tag)."""
    if task is Task.SEG:
        return segmentation.SegmentationTask(augment=cfg.augment), "monai-unet"
    raise ValueError(
        f"task {task.value!r} is not available yet; implemented: {[t.value for t in IMPLEMENTED]}"
    )


def build_model(task: Task, cfg: DownstreamConfig) -> torch.nn.Module:
    if task is Task.SEG:
        return segmentation.build_model(cfg.seg)
    raise ValueError(f"task {task.value!r} is not available yet")
