"""Seeded batches for every downstream task: the same seed gives the same order and the same
augmentation draws, on any machine."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, default_collate

from downstream.augment import BatchAugment


def seeded_loader(
    items: list[dict],
    augment: BatchAugment | None,
    batch_size: int,
    train: bool,
    seed: int,
    device: torch.device | None = None,
) -> DataLoader:
    """Shuffled batches when ``train`` (ordered otherwise) of ``items``, each collated batch
    moved to ``device`` (if given) and then passed through ``augment``
    (``downstream.augment``) if given, with draws of its own seeded stream so that the order
    and the augmentation do not depend on each other.

    Augmenting after the move runs the warp on the device; the draws stay on the CPU
    generator, so a GPU run sees the same augmentation parameters as a CPU run."""

    def collate(samples: list[dict]) -> dict:
        batch = default_collate(samples)
        if device is not None:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        return batch if augment is None else augment(batch, draws)

    draws = torch.Generator().manual_seed(seed + 1)

    return DataLoader(
        items,
        batch_size=batch_size,
        shuffle=train,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=collate,
    )
