"""Picture files a person looks at: sample grids of images with their label maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# Label colours (RGB): LV cavity red, myocardium green, left atrium blue.
_COLOURS = np.array([[0, 0, 0], [230, 60, 60], [60, 200, 90], [70, 110, 240]], dtype=np.float32)


def overlay(image: np.ndarray, mask: np.ndarray | None, alpha: float = 0.35) -> np.ndarray:
    """``(H, W)`` image in [0, 1] and labels -> ``(H, W, 3)`` uint8 with coloured labels."""
    rgb = np.repeat(np.clip(image, 0, 1)[..., None] * 255, 3, axis=-1)
    if mask is not None:
        colour = _COLOURS[mask]
        labelled = (mask > 0)[..., None]
        rgb = np.where(labelled, (1 - alpha) * rgb + alpha * colour, rgb)
    return rgb.astype(np.uint8)


def save_grid(
    path: Path,
    images: np.ndarray,
    masks: np.ndarray | None,
    columns: int = 8,
    max_images: int = 32,
) -> Path:
    """Tile up to ``max_images`` of ``(N, H, W)`` images (each shown plain and with its labels
    side by side when masks are given) into one PNG."""
    n = min(len(images), max_images)
    if n == 0:
        raise ValueError(f"{path}: no images to draw")
    tiles = []
    for i in range(n):
        plain = overlay(images[i], None)
        tiles.append(
            plain if masks is None else np.concatenate([plain, overlay(images[i], masks[i])], 1)
        )
    h, w, _ = tiles[0].shape
    rows = -(-n // columns)
    canvas = np.zeros((rows * (h + 2), min(n, columns) * (w + 2), 3), np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        canvas[r * (h + 2) : r * (h + 2) + h, c * (w + 2) : c * (w + 2) + w] = tile
    Image.fromarray(canvas).save(path)
    return path
