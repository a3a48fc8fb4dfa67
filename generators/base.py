"""The interface every generation mode implements, and the synthetic set it returns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from benchmark.config import GeneratorConfig
from benchmark.data.config import DataConfig
from benchmark.data.records import META_COLUMNS, EchoData

# Image-level labels a synthetic image can carry (classification targets among them).
IMAGE_LABELS = ("view", "phase", "sex", "age", "quality", "ef")


def check_label(mode: str, label: str | None, carried: tuple[str, ...], hint: str = "") -> None:
    """Raise ``ValueError`` if ``label`` is asked for but not among the ``carried`` labels
    of ``mode``'s images; ``hint`` says how to get it."""
    if label is not None and label not in carried:
        raise ValueError(
            f"grid has cls cells of mode {mode!r}, but its images carry no {label!r} label "
            f"(they carry: {', '.join(carried) or 'none'}){hint}"
        )


@dataclass
class GenerationContext:
    """What a generator may look at: only the real *training* patients of its cell."""

    real_train: EchoData
    data: DataConfig
    prompt_level: int | None  # the prompt kind's level (0-7) for prompted modes


class Generator(Protocol):
    """A generation mode. ``train`` writes a model folder; ``sample`` reads it."""

    trains: bool  # False for simulator-based controls (nothing to train)
    # True where ``sample`` reads ``ctx.real_train``: its set then depends on the real
    # fraction's patient subset (grid.subset_seed) even when no trained model carries it.
    samples_real: bool

    def check(self, data: DataConfig, cfg: GeneratorConfig, label: str | None) -> None:
        """Raise ``ValueError``, before any work, if this mode cannot run on ``data`` with
        ``cfg``, or if ``label`` (a classification target) is given and its synthetic
        images would not carry it."""
        ...

    def train(
        self, ctx: GenerationContext, cfg: GeneratorConfig, out: Path, progress: bool
    ) -> dict:
        """Train on ``ctx.real_train``, save into ``out``; return a JSON-able summary."""
        ...

    def sample(
        self,
        model_dir: Path | None,
        ctx: GenerationContext,
        cfg: GeneratorConfig,
        n: int,
        seed: int,
        progress: bool,
    ) -> EchoData:
        """``n`` synthetic images with label maps and metadata (source='synthetic')."""
        ...


def synthetic_meta(n: int, label_source: str, **columns: object) -> pd.DataFrame:
    """Metadata rows for ``n`` synthetic images; unknown attributes are left empty."""
    meta = pd.DataFrame({c: [None] * n for c in META_COLUMNS})
    meta["patient"] = [f"synthetic{i:06d}" for i in range(n)]
    meta["split"] = "train"
    meta["source"] = "synthetic"
    meta["label_source"] = label_source
    meta["ef"] = np.nan
    for name, value in columns.items():
        meta[name] = value
    return meta
