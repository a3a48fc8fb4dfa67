"""Bring a loaded 2-D image and label map to the EchoData conventions.

Images become float32 in [0, 1] at ``size`` x ``size`` (anti-aliased bilinear); label maps
become uint8 at the same size (nearest neighbour, so no new label values appear).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from benchmark.data.errors import DataError


def to_unit_range(image: np.ndarray, path: str | Path) -> np.ndarray:
    """``(H, W)`` pixel values as float32 in [0, 1].

    8-bit images are divided by 255 (exact for CAMUS and PNG files). Other integer types are
    divided by 255 when no pixel exceeds 255 (8-bit greys stored in a wider type), else by
    the type's maximum. Floats already in [0, 1] are kept, other floats divided by their max.
    The last two are per image: a dataset of 16-bit or float images should be scaled
    consistently before it is read (docs/DATA.md).
    """
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255
    if not np.isfinite(image).all():
        raise DataError(path, "image contains NaN or infinite values")
    img = image.astype(np.float32)
    if img.min() < 0:
        raise DataError(path, f"negative pixel values (min {img.min():g})")
    if np.issubdtype(image.dtype, np.integer):
        top = float(np.iinfo(image.dtype).max) if img.max() > 255 else 255.0
        return img / top
    return img / img.max() if img.max() > 1 else img


def to_labels(label: np.ndarray, path: str | Path) -> np.ndarray:
    """``(H, W)`` label map as uint8, checking every value is an integer in 0..3."""
    values = np.unique(label)
    bad = [v for v in values.tolist() if v not in (0, 1, 2, 3)]
    if bad:
        # repr for non-integers: 0.9999999 printed as "1" would hide the problem.
        shown = ", ".join(f"{v:g}" if float(v).is_integer() else repr(v) for v in bad[:5])
        raise DataError(path, f"label values outside 0-3: {shown}")
    return label.astype(np.uint8)


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """``(H, W)`` float image -> ``(size, size)`` float32; unchanged if already that size.

    A Gaussian pre-filter (sigma = (factor - 1) / 2 pixels) stops speckle aliasing when
    shrinking; sampling is bilinear at pixel centres.
    """
    h, w = image.shape
    if (h, w) == (size, size):
        return image.astype(np.float32)
    fy, fx = h / size, w / size
    sigma = (max(0.0, (fy - 1) / 2), max(0.0, (fx - 1) / 2))
    img = (
        ndi.gaussian_filter(image.astype(np.float32), sigma, mode="nearest")
        if any(sigma)
        else image
    )
    rows = (np.arange(size) + 0.5) * fy - 0.5
    cols = (np.arange(size) + 0.5) * fx - 0.5
    grid = np.meshgrid(rows, cols, indexing="ij")
    out = ndi.map_coordinates(img.astype(np.float32), grid, order=1, mode="nearest")
    return np.clip(out, 0, 1).astype(np.float32)


def resized_spacing(
    spacing: tuple[float, float] | None, shape: tuple[int, ...], size: int
) -> tuple[float, float]:
    """Pixel spacing ``(row, col)`` in mm after resizing ``shape`` to ``size`` x ``size``
    (each axis scaled by its own factor); ``(nan, nan)`` when the file had none."""
    if spacing is None:
        return (float("nan"), float("nan"))
    return (spacing[0] * shape[0] / size, spacing[1] * shape[1] / size)


def resize_labels(label: np.ndarray, size: int) -> np.ndarray:
    """``(H, W)`` label map -> ``(size, size)`` by nearest neighbour at pixel centres."""
    h, w = label.shape
    rows = np.minimum(((np.arange(size) + 0.5) * h / size).astype(int), h - 1)
    cols = np.minimum(((np.arange(size) + 0.5) * w / size).astype(int), w - 1)
    return label[np.ix_(rows, cols)]
