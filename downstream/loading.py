"""Seeded batches for every downstream task: the same seed gives the same order and the same
augmentation draws, on any machine."""

from __future__ import annotations

import torch
from monai.data import DataLoader, Dataset
from monai.transforms import Compose


def seeded_loader(
    items: list[dict], transform: Compose | None, batch_size: int, train: bool, seed: int
) -> DataLoader:
    """Shuffled batches when ``train`` (ordered otherwise) of ``items``, each passed through
    ``transform`` (MONAI dictionary transforms) if given."""
    if transform is not None:
        transform.set_random_state(seed=seed % 2**32)
    return DataLoader(
        Dataset(items, transform=transform),
        batch_size=batch_size,
        shuffle=train,
        generator=torch.Generator().manual_seed(seed),
    )
