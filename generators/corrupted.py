"""The corrupted control: real training images paired with label maps that are not theirs.

Every image gets the label map of a different training image (a seeded derangement), so the
labels are anatomically plausible but wrong. Adding such data should *lower* the downstream
score: if a benchmark cannot see that harm, it cannot be trusted to see help either.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.config import GeneratorConfig
from benchmark.data.config import DataConfig
from benchmark.data.records import EchoData
from generators.base import IMAGE_LABELS, GenerationContext, check_label


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A permutation of ``range(n)`` with no fixed point (``n >= 2``)."""
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 items, got {n}")
    # A random cyclic shift of a random order: uniform enough and never a fixed point.
    order = rng.permutation(n)
    perm = np.empty(n, dtype=np.int64)
    perm[order] = order[(np.arange(n) + rng.integers(1, n)) % n]
    return perm


class CorruptedGenerator:
    trains = False
    samples_real = True  # the real training images, relabelled

    def check(self, data: DataConfig, cfg: GeneratorConfig, label: str | None) -> None:
        check_label("corrupted", label, IMAGE_LABELS)  # real images, real metadata

    def train(
        self, ctx: GenerationContext, cfg: GeneratorConfig, out: Path, progress: bool
    ) -> dict:
        return {}

    def sample(
        self,
        model_dir: Path | None,
        ctx: GenerationContext,
        cfg: GeneratorConfig,
        n: int,
        seed: int,
        progress: bool,
    ) -> EchoData:
        real = ctx.real_train
        if real.masks is None:
            raise ValueError("mode 'corrupted' needs labelled training images")
        if len(real) < 2:
            raise ValueError("mode 'corrupted' needs at least 2 training images to mismatch")
        rng = np.random.default_rng(seed)
        # Repeat the training set as often as needed; each copy gets its own wrong labels:
        # image i takes the label map of image wrong[i] != i.
        copies = -(-n // len(real))
        picks = np.concatenate([rng.permutation(len(real)) for _ in range(copies)])[:n]
        wrong = np.stack([derangement(len(real), rng) for _ in range(copies)])
        images = real.images[picks]
        masks = real.masks[wrong[np.arange(n) // len(real), picks]]
        meta = real.meta.iloc[picks].reset_index(drop=True)
        meta["source"] = "synthetic"
        meta["label_source"] = "mismatched"
        return EchoData(images=images, masks=masks, meta=meta)
