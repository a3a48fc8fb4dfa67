"""Configuration of the real data source."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class DataConfig:
    """Where real images come from and how they are normalised.

    ``source`` picks the loader: ``phantom`` (built-in simulator, no download), ``camus``
    (either public CAMUS release under ``root``) or ``folder`` (images + label maps + a
    metadata CSV under ``root``).
    """

    source: Literal["phantom", "camus", "folder"] = "phantom"
    root: str | None = None  # required for camus and folder
    size: int = 64  # images are resized to size x size (images smooth, masks nearest)
    phantom_patients: int = 40  # phantom only: patients simulated (4 images each)
    phantom_seed: int = 0  # phantom only: the simulator's seed
    prompt_variant: Literal["fixed", "random"] = "fixed"  # SB drew the template variant at random

    def __post_init__(self) -> None:
        if self.source not in ("phantom", "camus", "folder"):
            raise ValueError(f"data.source must be phantom, camus or folder, got {self.source!r}")
        if self.prompt_variant not in ("fixed", "random"):
            raise ValueError(
                f"data.prompt_variant must be fixed or random, got {self.prompt_variant!r}"
            )
        if self.size < 16 or self.size % 8:
            raise ValueError(f"data.size must be a multiple of 8 and >= 16, got {self.size}")
        if self.phantom_seed < 0:
            raise ValueError(f"data.phantom_seed must be >= 0, got {self.phantom_seed}")
        if self.phantom_patients < 3:
            raise ValueError(f"data.phantom_patients must be >= 3, got {self.phantom_patients}")
        if self.source in ("camus", "folder") and not self.root:
            raise ValueError(f"data.root is required when data.source is {self.source!r}")
