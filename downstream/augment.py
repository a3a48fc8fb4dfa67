"""Random augmentation of a whole batch at once: affine warp and intensity jitter.

MONAI's dictionary transforms (``RandAffined``, ``RandScaleIntensityd``,
``RandAdjustContrastd``) work on one sample at a time; on a 2-core CPU they took 9.0 s of a
16.5 s vlseg cell (docs/PERFORMANCE.md), and on a GPU machine they would starve the device.
These draw the same distributions per sample but apply them to the collated batch with one
``affine_grid`` / ``grid_sample`` call and a few tensor operations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class BatchAugment:
    """Per-sample random affine (rotation, translation, isotropic-per-axis scale) of the
    ``warp`` keys (``nearest`` ones with nearest-neighbour sampling: label maps), then
    intensity scaling and gamma contrast of ``"image"``, each with its own probability.

    Parameters follow MONAI's: ``rotate`` (radians, ±), ``translate`` (fraction of the side,
    ±), ``scale`` (±, per axis), ``intensity`` (factor ±: ``v * (1 + f)``), ``gamma`` (range
    of MONAI's ``AdjustContrast`` exponent on the min-max normalised image).
    """

    warp: tuple[str, ...] = ("image",)
    nearest: tuple[str, ...] = ()
    p_affine: float = 0.8
    rotate: float = math.radians(10)
    translate: float = 0.1
    scale: float = 0.1
    p_intensity: float = 0.0
    intensity: float = 0.3
    p_gamma: float = 0.5
    gamma: tuple[float, float] = (0.7, 1.5)

    def __call__(self, batch: dict, gen: torch.Generator) -> dict:
        """``batch[k]``: ``(B, C, H, W)`` float tensors; returns a new dict, same shapes."""
        out = dict(batch)
        image = batch["image"]
        n = image.shape[0]
        picked = _chance(n, self.p_affine, gen)
        if picked.any():
            theta = self._theta(int(picked.sum()), gen)
            for key in self.warp:
                mode = "nearest" if key in self.nearest else "bilinear"
                out[key] = _warp(out[key], picked, theta, mode)
        image = out["image"]
        if self.p_intensity > 0:
            factor = 1 + _uniform(n, -self.intensity, self.intensity, gen)
            factor = torch.where(_chance(n, self.p_intensity, gen), factor, torch.ones(n))
            image = image * factor.view(-1, 1, 1, 1).to(image)
        if self.p_gamma > 0:
            gamma = _uniform(n, *self.gamma, gen)
            image = _contrast(image, gamma, _chance(n, self.p_gamma, gen))
        out["image"] = image
        return out

    def _theta(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """``(n, 2, 3)`` output-to-input maps in ``affine_grid``'s normalised coordinates."""
        angle = _uniform(n, -self.rotate, self.rotate, gen)
        scale = 1 + _uniform(2 * n, -self.scale, self.scale, gen).view(n, 2)
        shift = _uniform(2 * n, -self.translate, self.translate, gen).view(n, 2)
        return affine_theta(angle, scale, shift)


def affine_theta(angle: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``(n, 2, 3)`` ``affine_grid`` maps (output to input) of the forward maps
    ``x' = S R x + t``: rotation by ``angle`` ``(n,)`` radians, scale ``(n, 2)`` (x, y), shift
    ``(n, 2)`` (x, y) in fractions of the side, about the image centre. On a square image
    (every image here is ``data.size`` square) the warp is MONAI's ``Affine(rotate_params=
    angle, scale_params=1 / scale, translate_params=-t * side / scale)`` ((H, W) order,
    pixels; checked in ``tests/test_augment.py``): MONAI scales and shifts the sampling grid,
    this the image, so a drawn scale ``1 + u`` is MONAI's ``1 / (1 + u)`` and a shift ``t``
    MONAI's ``-t / (1 + u)``: the same ranges to first order, symmetric about no change."""
    shift = shift * 2  # affine_grid's coordinates span [-1, 1]
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Forward map x' = S R x + t; affine_grid wants its inverse (output -> input).
    forward = torch.stack(
        [
            torch.stack([scale[:, 0] * cos, -scale[:, 0] * sin], 1),
            torch.stack([scale[:, 1] * sin, scale[:, 1] * cos], 1),
        ],
        1,
    )
    inverse = torch.linalg.inv(forward)
    offset = -(inverse @ shift.unsqueeze(-1))
    return torch.cat([inverse, offset], dim=2)


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def _chance(n: int, p: float, gen: torch.Generator) -> torch.Tensor:
    """``(n,)`` bool: which samples a transform of probability ``p`` acts on."""
    return torch.rand(n, generator=gen) < p


def _warp(x: torch.Tensor, picked: torch.Tensor, theta: torch.Tensor, mode: str) -> torch.Tensor:
    """Warp the picked samples of ``x`` ``(B, C, H, W)``; zeros outside, the rest untouched."""
    picked = picked.to(x.device)
    grid = F.affine_grid(theta.to(x), list(x[picked].shape), align_corners=False)
    warped = F.grid_sample(x[picked], grid, mode=mode, padding_mode="zeros", align_corners=False)
    out = x.clone()
    out[picked] = warped
    return out


def _contrast(image: torch.Tensor, gamma: torch.Tensor, picked: torch.Tensor) -> torch.Tensor:
    """MONAI's ``AdjustContrast`` per sample: ``((v - min) / range) ** gamma * range + min``."""
    flat = image.flatten(1)
    low = flat.min(1).values.view(-1, 1, 1, 1)
    span = (flat.max(1).values.view(-1, 1, 1, 1) - low).clamp(min=0)
    adjusted = ((image - low) / (span + 1e-7)).clamp(min=0) ** gamma.view(-1, 1, 1, 1).to(image)
    adjusted = adjusted * span + low
    return torch.where(picked.view(-1, 1, 1, 1).to(image.device), adjusted, image)
