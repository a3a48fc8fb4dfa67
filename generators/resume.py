"""Resumable generator training: periodic checkpoints of ``diffusion.train_denoiser``.

A generator of the paper preset trains for 100,000 steps; a lost machine must not cost
them all. Within :func:`resumable` (the workspace opens it around a generator's training,
with a folder beside the stage that survives a killed process), every
``generator.checkpoint_every`` steps each ``train_denoiser`` call saves the model,
optimizer, EMA and loss-scaler states, its losses and its step; a later call with the same
stage key loads them and goes on. The batch stream and the noise are replayed from their
seeds up to that step (no model is run), so a resumed CPU training is bitwise the one that
was never stopped. A training made of several ``train_denoiser`` calls (the ControlNet's
base and control phases) gets one checkpoint per call, in call order; a finished phase
keeps its last state, so a resume redoes none of it.

Checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain values only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmark import faults

STATE_FILE = "state.pt"


@dataclass
class _Checkpointing:
    folder: Path
    every: int
    calls: int = 0  # train_denoiser calls so far: the next one's phase


_CURRENT: ContextVar[_Checkpointing | None] = ContextVar("generator_checkpointing", default=None)


@contextlib.contextmanager
def resumable(folder: str | Path, every: int) -> Iterator[None]:
    """Checkpoint the ``train_denoiser`` calls made inside, every ``every`` steps, under
    ``folder`` (``every`` 0: no checkpoints, nothing is read or written)."""
    token = _CURRENT.set(_Checkpointing(Path(folder), every) if every > 0 else None)
    try:
        yield
    finally:
        _CURRENT.reset(token)


@dataclass(frozen=True)
class Checkpoint:
    """The checkpoint of one ``train_denoiser`` call: ``path`` and the step interval."""

    path: Path
    every: int

    def due(self, step: int) -> bool:
        """Whether to save after 0-based ``step``."""
        return (step + 1) % self.every == 0

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when there is none yet."""
        if not self.path.is_file():
            return None
        return torch.load(self.path, map_location="cpu", weights_only=True)

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` atomically: a killed write leaves the previous checkpoint."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        torch.save(state, tmp)
        os.replace(tmp, self.path)
        faults.point("generator.checkpointed")


def next_checkpoint() -> Checkpoint | None:
    """The checkpoint of the ``train_denoiser`` call now starting; None outside
    :func:`resumable` (or with ``every`` 0)."""
    current = _CURRENT.get()
    if current is None:
        return None
    current.calls += 1
    return Checkpoint(current.folder / f"phase{current.calls}" / STATE_FILE, current.every)
