"""Seeded batches for every downstream task: the same seed gives the same order and the same
augmentation draws, on any machine."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, default_collate

from downstream.augment import BatchAugment


def seeded_loader(
    items: list[dict], augment: BatchAugment | None, batch_size: int, train: bool, seed: int
) -> DataLoader:
    """Shuffled batches when ``train`` (ordered otherwise) of ``items``, each collated batch
    passed through ``augment`` (``downstream.augment``) if given, with draws of its own
    seeded stream so that the order and the augmentation do not depend on each other."""
    collate = default_collate
    if augment is not None:
        draws = torch.Generator().manual_seed(seed + 1)

        def collate(samples: list[dict]) -> dict:
            return augment(default_collate(samples), draws)

    return DataLoader(
        items,
        batch_size=batch_size,
        shuffle=train,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=collate,
    )
