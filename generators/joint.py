"""Image and label map as one diffusion sample: the joint encoding of mask-free generators.

Unconditional and text generators emit the label map jointly with the image so that their
synthetic images can train segmentation: channel 0 is the image and channels 1..4 are the
one-hot label map, all scaled to ``[-1, 1]``; decoding takes the argmax of the label
channels.
"""

from __future__ import annotations

import numpy as np
import torch

N_CLASSES = 4  # background, LV cavity, myocardium, left atrium


def encode(images: np.ndarray, masks: np.ndarray | None) -> torch.Tensor:
    """``(N, H, W)`` images in [0, 1] and labels -> ``(N, C, H, W)`` float in [-1, 1].

    ``C`` is 1 without masks and ``1 + N_CLASSES`` with them.
    """
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None] * 2 - 1
    if masks is None:
        return x
    onehot = torch.nn.functional.one_hot(torch.from_numpy(masks.astype(np.int64)), N_CLASSES)
    return torch.cat([x, onehot.permute(0, 3, 1, 2).float() * 2 - 1], dim=1)


def decode(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
    """``(N, C, H, W)`` in [-1, 1] -> images ``(N, H, W)`` float32 in [0, 1], labels or None."""
    x = x.detach().float().cpu()
    images = ((x[:, 0].clamp(-1, 1) + 1) / 2).numpy().astype(np.float32)
    if x.shape[1] == 1:
        return images, None
    return images, x[:, 1:].argmax(dim=1).numpy().astype(np.uint8)


def loss_weights(channels: int, label_share: float) -> torch.Tensor | None:
    """``(channels,)`` weights of the denoising loss that give the label channels
    ``label_share`` of it and the image the rest, with mean 1 (the loss keeps its scale).

    None for an image-only sample. A share of ``N_CLASSES / (1 + N_CLASSES)`` (0.8) is the
    plain mean over channels.
    """
    if channels == 1:
        return None
    if channels != 1 + N_CLASSES:
        raise ValueError(f"a joint sample has 1 or {1 + N_CLASSES} channels, not {channels}")
    weights = torch.full((channels,), label_share * channels / N_CLASSES)
    weights[0] = (1 - label_share) * channels
    return weights
