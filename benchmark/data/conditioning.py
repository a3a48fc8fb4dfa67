"""Conditioning label maps for mask-guided generation: perturbed copies of training masks.

SB conditioned its semantic generator on 5 randomly perturbed copies of each real training label
map: a random affine (rotation +-5 deg, translation <= 5 %, scale 0.8-1.05, shear +-5 deg) then an
elastic deformation; the perturbed map is the synthetic image's label. Masks from validation or
test patients are refused, so nothing about them can leak into training data.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from benchmark.data.records import EchoData
from benchmark.data.sector import image_sector

ROTATION_DEG = 5.0
TRANSLATE = 0.05  # fraction of the image side
SCALE = (0.8, 1.05)
SHEAR_DEG = 5.0
# Elastic field: white noise smoothed by a Gaussian of ELASTIC_SIGMA x side, scaled to a
# standard deviation of ELASTIC_STD x side per axis (about 2 px at 256 px): smooth boundary
# changes at every image size.
ELASTIC_STD = 0.008
ELASTIC_SIGMA = 0.047


class LeakageError(ValueError):
    """Conditioning masks were requested from validation or test images."""


def check_training_only(data: EchoData) -> None:
    """Raise :class:`LeakageError` unless every row of ``data`` is in the training split."""
    bad = data.meta[data.meta["split"] != "train"]
    if len(bad):
        counts = ", ".join(f"{n} {s}" for s, n in bad["split"].value_counts().items())
        patients = ", ".join(sorted(bad["patient"].astype(str).unique())[:5])
        raise LeakageError(
            f"conditioning masks must come from the training split only; got {counts} "
            f"image(s) (patients {patients}...). Pass data.split('train')."
        )


def _source_coords(size: int, rng: np.random.Generator) -> np.ndarray:
    """``(2, size, size)`` source (row, col) for every output pixel: elastic then affine."""
    angle = np.deg2rad(rng.uniform(-ROTATION_DEG, ROTATION_DEG))
    shear = np.deg2rad(rng.uniform(-SHEAR_DEG, SHEAR_DEG))
    scale = rng.uniform(*SCALE)
    shift = rng.uniform(-TRANSLATE, TRANSLATE, 2) * size
    # Forward map on (x, y) about the image centre: rotation, x-shear, isotropic scale.
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    forward = scale * rot @ np.array([[1.0, np.tan(shear)], [0.0, 1.0]])
    inverse = np.linalg.inv(forward)
    sigma = max(1.0, ELASTIC_SIGMA * size)
    # A 2-D Gaussian of width sigma shrinks unit white noise to std 1 / (2 sqrt(pi) sigma).
    gain = ELASTIC_STD * size * 2 * np.sqrt(np.pi) * sigma
    disp = np.stack(
        [ndi.gaussian_filter(rng.standard_normal((size, size)), sigma) * gain for _ in range(2)]
    )
    centre = (size - 1) / 2
    rows, cols = np.mgrid[:size, :size].astype(float)
    x = cols + disp[1] - centre - shift[0]
    y = rows + disp[0] - centre - shift[1]
    src_x = inverse[0, 0] * x + inverse[0, 1] * y + centre
    src_y = inverse[1, 0] * x + inverse[1, 1] * y + centre
    return np.stack([src_y, src_x])


def perturb_masks(data: EchoData, copies: int = 5, seed: int = 0) -> EchoData:
    """``copies`` perturbed label maps per image of training-split ``data``, source-major.

    Returns an :class:`EchoData` with zero images ``(N * copies, H, W)``, masks of the same
    shape in ``{0..3}`` (nearest-neighbour resampling, cut to the source image's sector) and
    the source rows' metadata with ``label_source="conditioning"`` plus ``parent`` (source row)
    and ``copy``. Deterministic per ``(seed, source row, copy)``.
    """
    if data.masks is None:
        raise ValueError("conditioning needs label maps")
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    check_training_only(data)
    n, h, w = data.masks.shape
    if h != w:
        raise ValueError(f"conditioning expects square masks, got {h}x{w}")
    out = np.zeros((n * copies, h, w), dtype=np.uint8)
    for i in range(n):
        sector = image_sector(data.images[i])
        for c in range(copies):
            rng = np.random.default_rng([seed, i, c])
            coords = _source_coords(h, rng)
            warped = ndi.map_coordinates(data.masks[i], coords, order=0, mode="constant", cval=0)
            out[i * copies + c] = np.where(sector, warped, 0)
    meta = data.meta.loc[np.repeat(np.arange(n), copies)].reset_index(drop=True)
    meta["parent"] = np.repeat(np.arange(n), copies)
    meta["copy"] = np.tile(np.arange(copies), n)
    meta["label_source"] = "conditioning"
    return EchoData(images=np.zeros(out.shape, dtype=np.float32), masks=out, meta=meta)
