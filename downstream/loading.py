"""Seeded batches for every downstream task: the same seed gives the same order and the same
augmentation draws, on any machine."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, default_collate

from benchmark.runtime import child_seed
from downstream.augment import BatchAugment

# The two streams a loader's seed spawns (``child_seed`` keys). Neither is the seed itself,
# which seeds the model's initialisation (``seed_everything``), nor ``seed + 1``, another
# seed's run: the seeds' runs draw independent numbers.
ORDER_STREAM = 0
AUGMENT_STREAM = 1


def seeded_loader(
    items: list[dict],
    augment: BatchAugment | None,
    batch_size: int,
    train: bool,
    seed: int,
    device: torch.device | None = None,
) -> DataLoader:
    """Shuffled batches when ``train`` (ordered otherwise) of ``items``, on ``device`` (if
    given), each passed through ``augment`` (``downstream.augment``) if given, with draws of
    its own seeded stream so that the order and the augmentation do not depend on each other
    (``ORDER_STREAM``, ``AUGMENT_STREAM``).

    The items are collated once into stacked tensors, moved to ``device`` once (the small
    datasets live on the GPU: no host-to-device copy per step), and a batch is an index into
    them: the same batches, in the same order, as collating each batch's items. Augmenting
    on the device runs the warp there; the draws stay on the CPU generator, so a GPU run sees
    the same augmentation parameters as a CPU run."""
    stacked = default_collate(items) if items else {}
    if device is not None:
        stacked = {k: v.to(device) for k, v in stacked.items()}

    def collate(index: list[int]) -> dict:
        where = torch.as_tensor(index)
        batch = {k: v[where.to(v.device)] for k, v in stacked.items()}
        return batch if augment is None else augment(batch, draws)

    draws = torch.Generator().manual_seed(child_seed(seed, AUGMENT_STREAM))

    return DataLoader(
        range(len(items)),
        batch_size=batch_size,
        shuffle=train,
        generator=torch.Generator().manual_seed(child_seed(seed, ORDER_STREAM)),
        collate_fn=collate,
    )
