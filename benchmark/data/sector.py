"""The ultrasound field of view (a fan) of an image or a cine, estimated from its pixels.

A fan narrower than 180 degrees is convex, so the convex hull of the insonified pixels lies
inside it; dark tissue at the fan's edges can only make the estimate slightly smaller, never
larger. That is the safe side for keeping label maps inside the field of view.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull, QhullError


def convex_fill(mask: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool convex hull (pixel centres) of a bool mask; empty stays empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return np.zeros(mask.shape, dtype=bool)
    # Each row's first and last pixel span the same hull as all pixels, at a fraction of the cost.
    first = np.argmax(mask[rows], axis=1)
    last = mask.shape[1] - 1 - np.argmax(mask[rows, ::-1], axis=1)
    pts = np.concatenate([np.stack([rows, first], 1), np.stack([rows, last], 1)]).astype(float)
    try:
        hull = ConvexHull(pts)
    except QhullError:  # all points on a line: the row spans are the answer
        out = np.zeros(mask.shape, dtype=bool)
        for r, a, b in zip(rows, first, last):
            out[r, a : b + 1] = True
        return out
    grid = np.stack(np.mgrid[: mask.shape[0], : mask.shape[1]], -1).reshape(-1, 2).astype(float)
    inside = (grid @ hull.equations[:, :2].T + hull.equations[:, 2] <= 1e-9).all(axis=1)
    return inside.reshape(mask.shape)


def image_sector(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool fan of one echo image (hull of its non-zero pixels); all True if blank."""
    if not (image > 0).any():
        return np.ones(image.shape, dtype=bool)
    return convex_fill(image > 0)


def cine_sector(frames: np.ndarray, threshold: float = 2.0) -> np.ndarray:
    """``(H, W)`` bool: the ultrasound fan of a cine ``(T, H, W)`` (0-255 greys).

    The hull of the largest connected region brighter than ``threshold`` in some frame;
    burnt-in text and markers sit apart from the fan and are left out.
    """
    bright = ndi.binary_opening(frames.max(axis=0) > threshold, iterations=1)
    labels, n = ndi.label(bright)
    if n == 0:
        return np.zeros(frames.shape[1:], dtype=bool)
    sizes = ndi.sum(bright, labels, np.arange(1, n + 1))
    return convex_fill(labels == 1 + int(np.argmax(sizes)))


def sector_depth(sector: np.ndarray) -> float:
    """Fan depth in pixels: from the top-most pixel (the apex) to the farthest pixel."""
    rows, cols = np.nonzero(sector)
    top = rows.min()
    apex_col = cols[rows == top].mean()
    return float(np.hypot(rows - top, cols - apex_col).max())
