"""Task -> (task object, fresh model). New downstream tasks register here."""

from __future__ import annotations

import torch

from benchmark.downstream_config import DownstreamConfig
from benchmark.grid import Task
from benchmark.text_encoder import load_text_encoder
from downstream import classification, clipseg, cris, segmentation, vlseg
from downstream.prompt_tokens import PromptTokens
from downstream.training import Task as TaskProtocol

IMPLEMENTED = (Task.SEG, Task.VLSEG, Task.CLS)


def build_task(
    task: Task,
    cfg: DownstreamConfig,
    prompt_level: int | None = None,
    variant_policy: str = "fixed",
) -> tuple[TaskProtocol, str]:
    """The task object and the name of its model (logged as the ``model`` tag).

    ``prompt_level`` (0-7) is the cell's prompt kind; only ``vlseg`` reads it.
    """
    if task is Task.SEG:
        task_obj = segmentation.SegmentationTask(cfg.augment, cfg.seg.deep_supervision)
        return task_obj, f"monai-{cfg.seg.network}"
    if task is Task.CLS:
        task_obj = classification.ClassificationTask(
            cfg.cls.target, augment=cfg.augment, select_on=cfg.cls.select_on
        )
        return task_obj, f"monai-{cfg.cls.network}-{cfg.cls.target}"
    if task is Task.VLSEG:
        if prompt_level is None:
            raise ValueError("task 'vlseg' needs a prompt kind (P0-P7)")
        if cfg.vlseg.model == "clipseg":
            encoder, name = PromptTokens(cfg.vlseg.clipseg_path), "clipseg"
        elif cfg.vlseg.model == "cris":
            encoder, name = PromptTokens(cfg.vlseg.clip_path), "cris"
        else:
            encoder = load_text_encoder(cfg.vlseg.text_encoder)
            name = f"film-{_encoder_name(cfg.vlseg.text_encoder)}"
        task_obj = vlseg.VisionLanguageSegTask(prompt_level, encoder, cfg.augment, variant_policy)
        return task_obj, name
    raise ValueError(
        f"task {task.value!r} is not available yet; implemented: {[t.value for t in IMPLEMENTED]}"
    )


def build_model(task: Task, cfg: DownstreamConfig, size: int) -> torch.nn.Module:
    """A freshly initialised model for ``size`` x ``size`` images."""
    if task is Task.SEG:
        return segmentation.build_model(cfg.seg)
    if task is Task.CLS:
        return classification.build_model(cfg.cls, size)
    if task is Task.VLSEG:
        if cfg.vlseg.model == "clipseg":
            return clipseg.ClipSegNet(cfg.vlseg.clipseg_path, cfg.vlseg.freeze_backbone)
        if cfg.vlseg.model == "cris":
            return cris.CrisNet(
                cfg.vlseg.clip_path, cfg.vlseg.cris_dim, freeze_backbone=cfg.vlseg.freeze_backbone
            )
        return vlseg.build_model(cfg.vlseg, load_text_encoder(cfg.vlseg.text_encoder).dim)
    raise ValueError(f"task {task.value!r} is not available yet")


def _encoder_name(source: str) -> str:
    return source if source == "minilm" else source.rstrip("/").rsplit("/", 1)[-1]
